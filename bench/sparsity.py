"""Sparsity sweep (issue 5): MV, DS, CoNAL and CrowdInG as annotations are removed.

    python -m bench.sparsity --labelme DIR --music DIR [--synthetic] [--seeds 3] \
        [--levels 0,0.2,0.4,0.6] [--models mv,ds,conal,crowding] [--json OUT.json]
    python -m bench.sparsity --merge A.json B.json ...   # table of earlier runs

For every crowd, removal level and seed, ``level`` of the annotations are removed at
random while every item keeps at least one (one annotation per item is protected first,
the removed ones are drawn from the rest), then every model is fitted on what is left.
Scores: aggregated-label accuracy on the crowd's items (against ``gold.csv``; the
synthetic crowd's hidden truth) and the classifier's accuracy on the held-out test split
(``test_features.npy`` + ``test_gold.csv``; the synthetic crowd's own test set), mean ± std
over the seeds, plus fit seconds. CrowdInG's row is its default output; the extra rows
"crowding:classifier" and "crowding:generator" score the other aggregations of the same
fit (no extra fit), which is how the default ``aggregate`` was chosen.

Torch runs with ``--threads`` threads (default 1: the machine's 2 cores are shared).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.data import CrowdData
from inference.models import make_model
from inference.synthetic import make_synthetic_crowd

__all__ = ["Crowd", "load_crowd", "main", "remove_annotations", "synthetic_crowd"]


@dataclass(frozen=True)
class Crowd:
    name: str
    data: CrowdData
    truth: np.ndarray  # (N,) class index per item of data.items
    test_features: np.ndarray | None
    test_labels: np.ndarray | None


def load_crowd(name: str, folder: Path) -> Crowd:
    """A dataset folder in the shared layout (annotations.csv, features.npy + items.txt, gold.csv)."""
    with (folder / "annotations.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    items = [ln.strip() for ln in (folder / "items.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    features = np.load(folder / "features.npy").astype(np.float32)
    # Standardise with train statistics; the models standardise again (a no-op then).
    mean, std = features.mean(0), features.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    data = CrowdData.from_records(
        ([r["item"] for r in rows], [r["annotator"] for r in rows], [r["label"] for r in rows]),
        items=items,
        features=(features - mean) / std,
    )
    with (folder / "gold.csv").open(newline="", encoding="utf-8") as fh:
        gold = {r["item"]: r["label"] for r in csv.DictReader(fh)}
    truth = np.array([data.classes.index(gold[i]) for i in data.items], dtype=np.int64)
    test_x = test_y = None
    if (folder / "test_features.npy").is_file() and (folder / "test_gold.csv").is_file():
        test_x = ((np.load(folder / "test_features.npy").astype(np.float32) - mean) / std).astype(np.float32)
        with (folder / "test_gold.csv").open(newline="", encoding="utf-8") as fh:
            test_y = np.array([data.classes.index(r["label"]) for r in csv.DictReader(fh)], dtype=np.int64)
    return Crowd(name, data, truth, test_x, test_y)


def synthetic_crowd(seed: int = 0) -> Crowd:
    """A LabelMe-sized synthetic crowd (section 2.1.5 generator) with its own test set."""
    s = make_synthetic_crowd(
        n_items=1500, n_test=1500, n_annotators=40, n_classes=8, n_features=32, labels_per_item=3, seed=seed
    )
    return Crowd("synthetic", s.data, s.true_labels, s.test_features, s.test_labels)


def remove_annotations(data: CrowdData, level: float, rng: np.random.Generator) -> CrowdData:
    """Drop ``level`` of the annotations at random, keeping at least one per labelled item."""
    if not 0.0 <= level < 1.0:
        raise ValueError(f"level must be in [0, 1), got {level}")
    n = data.n_annotations
    n_remove = round(level * n)
    if n_remove == 0:
        return data
    # Protect one random annotation per item: shuffle, then the first of each item wins.
    perm = rng.permutation(n)
    _, first = np.unique(data.item_idx[perm], return_index=True)
    protected = np.zeros(n, dtype=bool)
    protected[perm[first]] = True
    candidates = np.nonzero(~protected)[0]
    drop = rng.choice(candidates, size=min(n_remove, len(candidates)), replace=False)
    keep = np.ones(n, dtype=bool)
    keep[drop] = False
    return CrowdData(
        items=data.items,
        annotators=data.annotators,
        classes=data.classes,
        item_idx=data.item_idx[keep],
        annotator_idx=data.annotator_idx[keep],
        label_idx=data.label_idx[keep],
        features=data.features,
        annotator_features=data.annotator_features,
    )


def _fit_one(model_name: str, data: CrowdData, crowd: Crowd, seed: int, threads: int) -> dict[str, dict[str, float]]:
    params: dict[str, Any] = {"seed": seed}
    if model_name in ("conal", "crowding"):
        params["num_threads"] = threads
    model = make_model(model_name, **params)
    started = time.perf_counter()
    model.fit(data)
    seconds = time.perf_counter() - started
    out: dict[str, dict[str, float]] = {}
    row: dict[str, float] = {"agg": float(np.mean(model.labels_ == crowd.truth)), "seconds": seconds}
    if model.classifier_probas_ is not None and crowd.test_features is not None:
        row["test"] = float(np.mean(model.predict_proba(crowd.test_features).argmax(1) == crowd.test_labels))
    out[model_name] = row
    if model_name == "crowding":
        clf = model.classifier_probas_
        assert clf is not None
        out["crowding:classifier"] = {"agg": float(np.mean(clf.argmax(1) == crowd.truth))}
        out["crowding:generator"] = {
            "agg": float(np.mean(model.generator_posterior_probas_.argmax(1) == crowd.truth))  # type: ignore[attr-defined]
        }
        out["crowding:posterior"] = {
            "agg": float(np.mean(model.posterior_probas_.argmax(1) == crowd.truth))  # type: ignore[attr-defined]
        }
    return out


def run(
    crowds: Sequence[Crowd], levels: Sequence[float], seeds: int, models: Sequence[str], threads: int
) -> list[dict[str, Any]]:
    """Every (crowd, level, seed, model) result as a flat record."""
    records: list[dict[str, Any]] = []
    for crowd in crowds:
        for level in levels:
            for seed in range(seeds):
                data = remove_annotations(crowd.data, level, np.random.default_rng(1000 + seed))
                for m in models:
                    for name, row in _fit_one(m, data, crowd, seed, threads).items():
                        rec = {
                            "crowd": crowd.name,
                            "level": level,
                            "seed": seed,
                            "model": name,
                            "annotations": data.n_annotations,
                            **row,
                        }
                        records.append(rec)
                        shown = " ".join(f"{k}={v:.4f}" for k, v in row.items())
                        print(
                            f"# {crowd.name} level={level:.1f} seed={seed} {name}: {shown}", file=sys.stderr, flush=True
                        )
    return records


def _fmt(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "–"
    a = np.asarray(values) * scale
    return f"{a.mean():.{digits}f} ± {a.std():.{digits}f}"


def table(records: list[dict[str, Any]], levels: Sequence[float]) -> str:
    """Markdown: one table per crowd, rows = model, columns = level (agg / test / s)."""
    lines: list[str] = []
    for crowd in dict.fromkeys(r["crowd"] for r in records):
        rs = [r for r in records if r["crowd"] == crowd]
        n_ann = {lv: int(np.mean([r["annotations"] for r in rs if r["level"] == lv])) for lv in levels}
        lines.append(f"**{crowd}** (aggregated accuracy % / classifier test accuracy % / fit s; mean ± std over seeds)")
        lines.append("")
        lines.append("| model | " + " | ".join(f"{int(lv * 100)}% removed ({n_ann[lv]} ann.)" for lv in levels) + " |")
        lines.append("|---|" + "---|" * len(levels))
        for model in dict.fromkeys(r["model"] for r in rs):
            cells = []
            for lv in levels:
                sel = [r for r in rs if r["model"] == model and r["level"] == lv]
                parts = [_fmt([r["agg"] for r in sel])]
                if any("test" in r for r in sel):
                    parts.append(_fmt([r["test"] for r in sel if "test" in r]))
                if any("seconds" in r for r in sel):
                    parts.append(f"{np.mean([r['seconds'] for r in sel if 'seconds' in r]):.1f}s")
                cells.append(" / ".join(parts))
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sparsity", description=__doc__.split("\n")[0])
    p.add_argument("--labelme", type=Path, help="LabelMe dataset folder")
    p.add_argument("--music", type=Path, help="Music dataset folder")
    p.add_argument("--synthetic", action="store_true", help="also run the synthetic crowd")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--levels", default="0,0.2,0.4,0.6", help="removed shares, comma-separated")
    p.add_argument("--models", default="mv,ds,conal,crowding")
    p.add_argument("--threads", type=int, default=1, help="torch threads per fit")
    p.add_argument("--json", type=Path, help="write every record here")
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="only print the table of earlier --json files (e.g. one process per crowd, run side by side)",
    )
    args = p.parse_args(argv)
    levels = [float(v) for v in args.levels.split(",") if v.strip()]
    if args.merge:
        merged: list[dict[str, Any]] = []
        for path in args.merge:
            merged += json.loads(path.read_text(encoding="utf-8"))
        print(table(merged, levels))
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    torch.set_num_threads(args.threads)
    crowds: list[Crowd] = []
    if args.synthetic:
        crowds.append(synthetic_crowd())
    if args.labelme is not None:
        crowds.append(load_crowd("labelme", args.labelme))
    if args.music is not None:
        crowds.append(load_crowd("music", args.music))
    if not crowds:
        p.error("give at least one of --labelme, --music, --synthetic")
    records = run(crowds, levels, args.seeds, models, args.threads)
    if args.json is not None:
        args.json.write_text(json.dumps(records, indent=1), encoding="utf-8")
    print(table(records, levels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
