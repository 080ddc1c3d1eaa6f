"""The live refit chain, in process: a crowd replayed in batches from an empty project.

Each batch adds the next slice of annotations in arrival order; after each batch the
model is refitted the way the live worker does it (``init=`` the previous run's
checkpoint, through ``dumps``/``loads``), and the result is scored against a COLD fit
of the same model, with the same seed, on exactly the same labels. This is the
model-level twin of ``bench/live.py --chain`` (which goes through the API and a real
worker): fast enough to measure one suspect at a time, which is how the cause of the
live chain's loss was found (BENCHMARKS.md, "Live refit chain").

Arrival order ``items`` is what the platform's next-task gives: items are filled to
their labels one after the other (``ORDER BY n_annotations DESC, id``), here in a
seeded random item order. ``random`` shuffles single annotations instead.

Usage::

    .venv/bin/python -m bench.chain --crowd synthetic --model conal
    .venv/bin/python -m bench.chain --crowd labelme=../shared/datasets/labelme --model conal --batches 12
    .venv/bin/python -m bench.chain --crowd synthetic --model conal --param warm_epochs=20   # a variant
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference import make_model
from inference.data import CrowdData
from inference.features import standardise_numeric
from inference.metrics import expected_calibration_error
from inference.models import MODELS

#: The issue's live crowd: 800 items, 16 features, 6 classes, 40 annotators, k = 3; the
#: strengths give majority vote 0.72 and a cold CoNAL fit 0.97, as in the issue's report.
SYNTHETIC = dict(
    n_items=800,
    n_test=10,
    n_annotators=40,
    n_classes=6,
    n_features=16,
    labels_per_item=3,
    class_sep=0.7,
    individual_strength=0.3,
    common_share=0.3,
)


@dataclass
class ChainCrowd:
    name: str
    data: CrowdData  # every annotation, every item, features standardised as the adapter does
    gold: np.ndarray  # (N,) class index, -1 where unknown


#: ``synthetic:N``: the live benchmark's crowd shape (bench/live.py) with N items.
LARGE = dict(n_test=10, n_annotators=100, n_classes=10, n_features=32, labels_per_item=10 / 3)


def load_chain_crowd(spec: str, seed: int = 0) -> ChainCrowd:
    """``synthetic``, ``synthetic:N_ITEMS`` or ``name=folder`` (a shared dataset folder)."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        from inference.synthetic import make_synthetic_crowd

        if spec == "synthetic":
            crowd = make_synthetic_crowd(**SYNTHETIC, seed=seed)  # type: ignore[arg-type]
        else:
            crowd = make_synthetic_crowd(n_items=int(spec.split(":")[1]), **LARGE, seed=seed)  # type: ignore[arg-type]
        data, gold = crowd.data, np.asarray(crowd.true_labels, dtype=np.int64)
        name = spec
    else:
        from bench._common import load_folder

        name, _, folder = spec.partition("=")
        if not folder:
            raise SystemExit(f"--crowd {spec!r}: expected 'synthetic' or name=folder")
        loaded = load_folder(name, folder)
        data, gold = loaded.data, loaded.gold
    if data.features is not None:
        # The platform's adapter standardises the stored vectors over all items.
        data = _replace(data, features=standardise_numeric(np.asarray(data.features))[0])
    return ChainCrowd(name, data, gold)


def _replace(data: CrowdData, **changes: Any) -> CrowdData:
    fields = dict(
        items=data.items,
        annotators=data.annotators,
        classes=data.classes,
        item_idx=data.item_idx,
        annotator_idx=data.annotator_idx,
        label_idx=data.label_idx,
        features=data.features,
        annotator_features=data.annotator_features,
    )
    fields.update(changes)
    return CrowdData(**fields)


def arrival_order(data: CrowdData, order: str, seed: int) -> np.ndarray:
    """(A,) annotation positions in the order they arrive."""
    rng = np.random.default_rng([seed, 17])
    if order == "random":
        return rng.permutation(data.n_annotations)
    if order != "items":
        raise ValueError(f"order must be 'items' or 'random', got {order!r}")
    rank = rng.permutation(data.n_items)[data.item_idx]  # each item's position in the fill order
    return np.lexsort((np.arange(data.n_annotations), rank))


def prefix(data: CrowdData, order: np.ndarray, n: int) -> CrowdData:
    """The crowd after the first ``n`` arrivals: every item, the annotators seen so far
    (in id order, as the adapter's ``np.unique`` gives them)."""
    keep = np.sort(order[:n])
    ann = data.annotator_idx[keep]
    seen, inverse = np.unique(ann, return_inverse=True)
    return _replace(
        data,
        annotators=tuple(data.annotators[r] for r in seen),
        item_idx=data.item_idx[keep],
        annotator_idx=inverse.reshape(-1),
        label_idx=data.label_idx[keep],
    )


def batch_ends(n_annotations: int, n_batches: int) -> list[int]:
    return [round(n_annotations * (b + 1) / n_batches) for b in range(n_batches)]


def published(model: Any, data: CrowdData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the platform publishes for a fitted model (``live.adapter.build_results``):
    (rows, labels, confidence) with rows the items that get a label row: the model's
    label for labelled items, the classifier's prediction for unlabelled ones (only
    models with a classifier publish those)."""
    labels = np.asarray(model.labels_, dtype=np.int64).copy()
    probas = np.asarray(model.probas_, dtype=np.float64).copy()
    labelled = data.labelled_mask()
    rows = labelled.copy()
    clf = getattr(model, "classifier_probas_", None)
    if clf is not None:
        probas[~labelled] = np.asarray(clf, dtype=np.float64)[~labelled]
        labels[~labelled] = probas[~labelled].argmax(1)
        rows[:] = True
    return rows, labels, probas[np.arange(len(labels)), labels]


def score(model: Any, data: CrowdData, gold: np.ndarray) -> dict[str, float]:
    """What the platform publishes (see ``published``), scored on the items with gold."""
    rows, labels, confidence = published(model, data)
    labelled = data.labelled_mask()
    rows = rows & (gold >= 0)
    correct = labels[rows] == gold[rows]
    lab_rows = labelled & (gold >= 0)
    return {
        "accuracy": float(correct.mean()),
        "ece": expected_calibration_error(confidence[rows], correct),
        "accuracy_labelled": float((labels[lab_rows] == gold[lab_rows]).mean()),
        "mean_confidence": float(confidence[rows].mean()),
        "n_scored": int(rows.sum()),
    }


def fit(model_name: str, data: CrowdData, params: dict[str, Any], init: Any = None) -> tuple[Any, float]:
    model = make_model(model_name, **params)
    t0 = time.process_time()
    model.fit(data, init=init)
    return model, time.process_time() - t0


def run_chain(
    crowd: ChainCrowd,
    model_name: str,
    *,
    n_batches: int,
    order: str,
    seed: int,
    params: dict[str, Any],
    cold_each: bool,
) -> list[dict[str, Any]]:
    """One chain; a record per run with the chain's and (optionally) the cold fit's scores."""
    data = crowd.data
    if model_name in ("mv", "ds"):
        data = _replace(data, features=None)  # the platform reads no features for them
    arrival = arrival_order(data, order, seed)
    params = {"seed": seed, **params}
    records: list[dict[str, Any]] = []
    previous: Any = None
    ends = batch_ends(data.n_annotations, n_batches)
    for b, end in enumerate(ends):
        snap = prefix(data, arrival, end)
        if len(np.unique(snap.label_idx)) < 2:
            records.append({"batch": b + 1, "n_annotations": end, "skipped": "one class so far"})
            continue
        init = None
        if previous is not None and MODELS[model_name].supports_warm_start:
            init = MODELS[model_name].loads(previous.dumps())
        model, secs = fit(model_name, snap, params, init)
        rec: dict[str, Any] = {
            "batch": b + 1,
            "n_annotations": end,
            "seconds": secs,
            "n_epochs": int(model.n_epochs_),
            "mode": getattr(model, "fit_mode_", "warm" if init is not None else "cold"),
            "reason": getattr(model, "fit_reason_", ""),
            **{f"chain_{k}": v for k, v in score(model, snap, crowd.gold).items()},
        }
        if cold_each or b == len(ends) - 1:
            cold, cold_secs = fit(model_name, snap, params)
            rec.update({f"cold_{k}": v for k, v in score(cold, snap, crowd.gold).items()})
            rec["cold_seconds"] = cold_secs
        records.append(rec)
        previous = model
    return records


def growth_sweep(
    crowd: ChainCrowd,
    model_name: str,
    *,
    growths: Sequence[float],
    anchors: Sequence[float],
    order: str,
    seed: int,
    params: dict[str, Any],
) -> list[dict[str, Any]]:
    """How far a warm refit lands from a cold fit, by how much the labels grew since the
    cold fit it starts from: for each anchor share p of the crowd, a cold fit on the first
    p of the arrivals, then for each growth g a warm refit and a cold fit on the first
    p (1 + g). Warm refits are forced (no growth or size limit) to see the raw gap."""
    data = crowd.data
    if model_name in ("mv", "ds"):
        data = _replace(data, features=None)
    arrival = arrival_order(data, order, seed)
    params = {"seed": seed, **params}
    out: list[dict[str, Any]] = []
    for anchor in anchors:
        n0 = round(anchor * data.n_annotations)
        force = {"warm_max_growth": float("inf"), "warm_min_annotations": 0}
        base, _ = fit(model_name, prefix(data, arrival, n0), {**params, **force})
        blob = base.dumps()
        for g in growths:
            n1 = round(n0 * (1 + g))
            if n1 > data.n_annotations:
                continue
            snap = prefix(data, arrival, n1)
            warm, warm_s = fit(model_name, snap, {**params, **force}, MODELS[model_name].loads(blob))
            cold, cold_s = fit(model_name, snap, params)
            w, c = score(warm, snap, crowd.gold), score(cold, snap, crowd.gold)
            out.append(
                {
                    "anchor": anchor,
                    "growth": g,
                    "n0": n0,
                    "n1": n1,
                    "warm_mode": warm.fit_mode_,
                    "d_acc": 100 * (w["accuracy"] - c["accuracy"]),
                    "d_ece": w["ece"] - c["ece"],
                    "warm_accuracy": w["accuracy"],
                    "cold_accuracy": c["accuracy"],
                    "warm_seconds": warm_s,
                    "cold_seconds": cold_s,
                }
            )
    return out


def growth_table(rows: list[dict[str, Any]]) -> str:
    """Per crowd, model and growth: the warm-minus-cold gaps over anchors and seeds."""
    lines = [
        "| crowd | model | growth | fits | Δ acc mean (pts) | Δ acc worst | Δ ECE mean | Δ ECE worst | warm s / cold s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["crowd"], r["model"], r["growth"]) for r in rows}, key=lambda k: (k[0], k[1], k[2]))
    for crowd, model, g in keys:
        sel = [r for r in rows if (r["crowd"], r["model"], r["growth"]) == (crowd, model, g)]
        da = np.array([r["d_acc"] for r in sel])
        de = np.array([r["d_ece"] for r in sel])
        ratio = sum(r["warm_seconds"] for r in sel) / max(sum(r["cold_seconds"] for r in sel), 1e-9)
        lines.append(
            f"| {crowd} | {model} | {g:.1%} | {len(sel)} | {da.mean():+.2f} | {da[np.argmax(np.abs(da))]:+.2f} | "
            f"{de.mean():+.4f} | {de[np.argmax(np.abs(de))]:+.4f} | {ratio:.3f} |"
        )
    return "\n".join(lines)


def table(records: list[dict[str, Any]], title: str) -> str:
    lines = [
        f"{title}",
        "| run | labels | mode | epochs | chain acc | cold acc | Δ acc (pts) | chain ECE | cold ECE | Δ ECE | chain s | cold s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if "skipped" in r:
            lines.append(f"| {r['batch']} | {r['n_annotations']} | skipped: {r['skipped']} |||||||||")
            continue
        has_cold = "cold_accuracy" in r
        d_acc = 100 * (r["chain_accuracy"] - r["cold_accuracy"]) if has_cold else None
        d_ece = r["chain_ece"] - r["cold_ece"] if has_cold else None
        lines.append(
            f"| {r['batch']} | {r['n_annotations']} | {r['mode']} | {r['n_epochs']} | {100 * r['chain_accuracy']:.2f} | "
            + (f"{100 * r['cold_accuracy']:.2f} | {d_acc:+.2f} | " if has_cold else "– | – | ")
            + f"{r['chain_ece']:.4f} | "
            + (f"{r['cold_ece']:.4f} | {d_ece:+.4f} | " if has_cold else "– | – | ")
            + f"{r['seconds']:.2f} | "
            + (f"{r['cold_seconds']:.2f} |" if has_cold else "– |")
        )
    return "\n".join(lines)


def _parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            out[name] = raw
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crowd", action="append", default=[], help="'synthetic' or name=folder (repeatable)")
    parser.add_argument("--model", action="append", default=[], help="mv, ds, conal, crowding (repeatable)")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--order", default="items", choices=["items", "random"])
    parser.add_argument("--seed", type=int, action="append", default=[])
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--cold-each", action="store_true", help="a cold fit after every batch, not only the last")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--growth", default="", help="growth sweep instead of a chain: shares, e.g. 0.01,0.02,0.05")
    parser.add_argument("--anchors", default="0.5,0.7,0.9", help="growth sweep: crowd shares of the cold fits")
    parser.add_argument("--json", type=Path, help="write every record here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    params = {"num_threads": args.threads, **_parse_params(args.param)}
    everything: list[dict[str, Any]] = []
    growths = [float(g) for g in args.growth.split(",") if g]
    for spec in args.crowd or ["synthetic"]:
        for seed in args.seed or [0]:
            crowd = load_chain_crowd(spec, seed=seed)
            for model_name in args.model or ["conal"]:
                fields = set(getattr(MODELS[model_name], "__dataclass_fields__", {}))
                model_params = {k: v for k, v in params.items() if k in fields}
                if growths:
                    rows = growth_sweep(
                        crowd,
                        model_name,
                        growths=growths,
                        anchors=[float(a) for a in args.anchors.split(",")],
                        order=args.order,
                        seed=seed,
                        params=model_params,
                    )
                    everything += [{"crowd": crowd.name, "model": model_name, "seed": seed, **r} for r in rows]
                    print(growth_table(everything), flush=True)
                    continue
                records = run_chain(
                    crowd,
                    model_name,
                    n_batches=args.batches,
                    order=args.order,
                    seed=seed,
                    params=model_params,
                    cold_each=args.cold_each,
                )
                title = f"**{crowd.name}, {model_name}, seed {seed}, {args.batches} batches ({args.order} order)**"
                if model_params:
                    title += f" params {model_params}"
                print(table(records, title), flush=True)
                print(flush=True)
                everything += [{"crowd": crowd.name, "model": model_name, "seed": seed, **r} for r in records]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(everything, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
