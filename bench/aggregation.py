"""Aggregation benchmark (issues 7, 16): our MV/DS/CoNAL/CrowdInG next to crowd-kit, EBCC and
DS -> classifier, with accuracy, calibration (ECE, Brier) and fit time for every method.

    python -m bench.aggregation [--labelme DIR] [--music DIR] [--sentiment DIR]
                                [--synthetic] [--scale] [--seeds N] [--out FRAGMENT.md]

Every crowd runs all methods in the same process (torch limited to one thread, since
the benchmark machine's 2 cores are shared). With ``--out``, a reliability diagram per crowd
(one curve per method, 15 equal-width bins, the ECE's) goes next to it as
``reliability-<crowd>.png``. The scale part runs each method in its own
subprocess so that its peak RSS (resource.getrusage) is its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench._common import Crowd, TwoStageClassifier, accuracy, load_folder, measure
from bench.ebcc import EBCC
from inference.data import CrowdData
from inference.metrics import brier_score, expected_calibration_error, reliability_bins
from inference.models.conal import CoNAL
from inference.models.crowding import CrowdInG
from inference.models.ds import DawidSkene
from inference.models.mv import MajorityVote
from inference.synthetic import make_synthetic_crowd

CONAL_POST = "CoNAL (posterior)"
CONAL_CLF = "CoNAL (classifier)"
CROWDING = "CrowdInG (ours)"
OURS = {"MV (ours)", "DS (ours)", CONAL_POST, CONAL_CLF, CROWDING}
#: crowd-kit's aggregators in the bench; MMSR gives labels and no probabilities.
CROWDKIT = ("MV", "DS", "GLAD", "MMSR", "MACE", "OneCoinDawidSkene")
ECE_BINS = 15
GOLD_CLF = "gold → classifier (ceiling, not a peer)"
SYNTHETIC_TYPES = ("asymmetric", "symmetric")
# (common strength, common share) settings of section 2.1.5: the original share sweep at
# strength 0.6 (the generator's default), the paper's share sweep (strength 0.4, "when
# studying the influence of the proportion of common noise") and its strength sweep
# (0.4-0.8 at share 0.5).
SYNTHETIC_SETTINGS = ((0.6, 0.0), (0.6, 0.3), (0.6, 0.5), (0.6, 0.7), (0.4, 0.3), (0.4, 0.5), (0.4, 0.7), (0.8, 0.5))
#: The generator's default setting: the one synthetic crowd ``--no-features`` copies.
DEFAULT_SYNTHETIC = ("asymmetric", 0.6, 0.5)

Row = dict[str, Any]


# ---------------------------------------------------------------------- methods
def _frame(data: CrowdData) -> Any:
    import pandas as pd

    return pd.DataFrame({"task": data.item_idx, "worker": data.annotator_idx, "label": data.label_idx})


def _crowdkit(method: str, data: CrowdData, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """crowd-kit's labels (-1 for items it never saw) and its probabilities (uniform rows for
    those items; None when the method has none)."""
    from crowdkit import aggregation as ck

    makers: dict[str, Any] = {
        "MV": ck.MajorityVote,
        "DS": ck.DawidSkene,
        "GLAD": ck.GLAD,
        "MMSR": ck.MMSR,
        "MACE": lambda: ck.MACE(random_state=seed),
        "OneCoinDawidSkene": ck.OneCoinDawidSkene,
    }
    model = makers[method]()
    result = model.fit_predict(_frame(data))  # MMSR sets no labels_ on fit(); fit_predict works for all
    out = np.full(data.n_items, -1, dtype=np.int64)
    out[result.index.to_numpy(dtype=np.int64)] = result.to_numpy(dtype=np.int64)
    frame = getattr(model, "probas_", None)
    if frame is None:
        return out, None
    probas = np.full((data.n_items, data.n_classes), 1.0 / data.n_classes)
    # Columns are the class indices that occur in the crowd; a class nobody used keeps 0.
    probas[frame.index.to_numpy(dtype=np.int64)] = 0.0
    probas[np.ix_(frame.index.to_numpy(dtype=np.int64), frame.columns.to_numpy(dtype=np.int64))] = frame.to_numpy(
        dtype=np.float64
    )
    return out, probas


def _mae_individual(est: np.ndarray, true: np.ndarray, data: CrowdData) -> float:
    seen = np.bincount(data.annotator_idx, minlength=data.n_annotators) > 0
    return float(np.abs(est[seen] - true[seen]).mean())


def run_crowd(crowd: Crowd, seed: int) -> list[Row]:
    """All methods on one crowd; one row per method."""
    data, gold = crowd.data, crowd.gold
    truth = crowd.truth
    rows: list[Row] = []

    def add(method: str, m: Any, labels: np.ndarray | None, probas: np.ndarray | None = None, **extra: Any) -> None:
        rows.append(
            {
                "crowd": crowd.name,
                "seed": seed,
                "method": method,
                "acc": None if labels is None else accuracy(labels, gold),
                "seconds": m.seconds,
                "cpu": m.cpu_seconds,
                "mem_mb": m.peak_rss_delta / 2**20,
                **({} if labels is None or probas is None else calibration(labels, probas, gold)),
                **extra,
            }
        )

    mv = measure(lambda: MajorityVote().fit(data))
    add("MV (ours)", mv, mv.value.labels_, mv.value.probas_)
    ds = measure(lambda: DawidSkene().fit(data))
    extra = {}
    if truth is not None:
        extra["indiv_mae"] = _mae_individual(ds.value.confusions_, truth.true_confusions, data)
    add("DS (ours)", ds, ds.value.labels_, ds.value.probas_, **extra)

    cn = measure(lambda: CoNAL(seed=seed).fit(data))
    model: CoNAL = cn.value
    extra = {}
    if truth is not None:
        extra["common_mae"] = float(np.abs(model.common_confusion_ - truth.true_common_confusion).mean())
        extra["indiv_mae"] = _mae_individual(model.confusions_, truth.true_confusions, data)
        if crowd.name.startswith("synthetic symm"):
            pairs = _paired_class(truth.true_common_confusion)
            extra["acc_pairs_swapped"] = accuracy(pairs[model.posterior_probas_.argmax(1)], gold)
    test_acc = None
    if crowd.test_features is not None and crowd.test_labels is not None:
        test_acc = accuracy(model.predict_proba(crowd.test_features).argmax(1), crowd.test_labels)
    extra["tau"] = model.label_weight_
    add(CONAL_POST, cn, model.posterior_probas_.argmax(1), model.posterior_probas_, test_acc=test_acc, **extra)
    assert model.classifier_probas_ is not None
    add(CONAL_CLF, cn, model.classifier_probas_.argmax(1), model.classifier_probas_, test_acc=test_acc, **extra)

    cg = measure(lambda: CrowdInG(seed=seed).fit(data))
    test_acc = None
    if crowd.test_features is not None and crowd.test_labels is not None:
        test_acc = accuracy(cg.value.predict_proba(crowd.test_features).argmax(1), crowd.test_labels)
    add(CROWDING, cg, cg.value.labels_, cg.value.probas_, test_acc=test_acc)

    for name in CROWDKIT:
        r = measure(lambda: _crowdkit(name, data, seed))  # noqa: B023 - measure() calls it at once, in this iteration
        add(f"crowd-kit {name}", r, *r.value)
    eb = measure(lambda: EBCC(seed=seed).fit(data))
    add("EBCC", eb, eb.value.labels_, eb.value.probas_)

    if data.features is not None:
        labelled = data.labelled_mask()

        def two_stage() -> TwoStageClassifier:
            labels = DawidSkene().fit(data).labels_
            return TwoStageClassifier(seed=seed).fit(data.features[labelled], labels[labelled], data.n_classes)

        ts = measure(two_stage)
        test_acc = None
        if crowd.test_features is not None and crowd.test_labels is not None:
            test_acc = accuracy(ts.value.predict(crowd.test_features), crowd.test_labels)
        clf_probas = ts.value.predict_proba(data.features)
        add("DS → classifier", ts, clf_probas.argmax(1), clf_probas, test_acc=test_acc)
        if test_acc is not None:
            oracle = measure(lambda: gold_ceiling(crowd, seed))
            add(GOLD_CLF, oracle, None, test_acc=oracle.value)
    return rows


def calibration(labels: np.ndarray, probas: np.ndarray, gold: np.ndarray) -> dict[str, Any]:
    """ECE (15 equal-width bins) and Brier score on the items with gold; the confidence is the
    probability given to the method's label. Keeps the (confidence, correct) pairs for the
    reliability diagram under the private key ``_calib``."""
    known = gold >= 0
    conf = probas[np.flatnonzero(known), labels[known]]
    correct = labels[known] == gold[known]
    return {
        "ece": expected_calibration_error(conf, correct, n_bins=ECE_BINS),
        "brier": brier_score(probas[known], gold[known]),
        "_calib": (conf, correct),
    }


def gold_ceiling(crowd: Crowd, seed: int) -> float:
    """Test accuracy of the DS → classifier model trained on the GOLD labels of the crowd's
    labelled items instead: what these features allow with perfect labels, the ceiling of
    every method's test-accuracy column. Not a peer (it uses gold)."""
    data, gold = crowd.data, crowd.gold
    if data.features is None or crowd.test_features is None or crowd.test_labels is None:
        raise ValueError("gold_ceiling needs item features and a test split")
    known = data.labelled_mask() & (gold >= 0)
    clf = TwoStageClassifier(seed=seed).fit(data.features[known], gold[known], data.n_classes)
    return accuracy(clf.predict(crowd.test_features), crowd.test_labels)


# ---------------------------------------------------------------------- crowds
def _paired_class(common: np.ndarray) -> np.ndarray:
    """(C,) the class each class is flipped into by a symmetric (pair-flip) common
    confusion; a class left clean maps to itself."""
    off = common.copy()
    np.fill_diagonal(off, -1.0)
    return np.where(np.diag(common) < 1.0 - 1e-9, off.argmax(1), np.arange(len(common)))


def without_features(crowd: Crowd) -> Crowd:
    """The same crowd with no item features (and so no test split): CoNAL then learns a
    per-item embedding, and the issue asks it to do no worse than Dawid–Skene there."""
    return Crowd(
        f"{crowd.name} (no features)", dataclasses.replace(crowd.data, features=None), crowd.gold, truth=crowd.truth
    )


def synthetic_crowds(seed: int) -> list[Crowd]:
    out = []
    for kind in SYNTHETIC_TYPES:
        for strength, share in SYNTHETIC_SETTINGS:
            s = make_synthetic_crowd(common_type=kind, common_share=share, common_strength=strength, seed=seed)
            out.append(
                Crowd(
                    _synthetic_name(kind, strength, share),
                    s.data,
                    s.true_labels,
                    s.test_features,
                    s.test_labels,
                    truth=s,
                )
            )
    return out


def _synthetic_name(kind: str, strength: float, share: float) -> str:
    return f"synthetic {kind[:4]} strength={strength} share={share}"


# ---------------------------------------------------------------------- scale
SCALE = dict(
    n_items=300_000,
    n_test=1000,
    n_annotators=1000,
    n_classes=10,
    n_features=32,
    labels_per_item=1_000_000 / 300_000,
    activity="zipf",
    activity_skew=1.0,
    seed=0,
)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def scale_worker(method: str) -> dict[str, Any]:
    torch.set_num_threads(1)
    s = make_synthetic_crowd(**SCALE)  # type: ignore[arg-type]
    data = s.data
    base = _maxrss_mb()
    out: dict[str, Any] = {"method": method, "annotations": data.n_annotations, "rss_after_generation_mb": base}
    t0, c0 = time.perf_counter(), time.process_time()
    if method == "conal":
        model = CoNAL(seed=0).fit(data)
        labels = model.labels_
    elif method == "ds":
        labels = DawidSkene().fit(data).labels_
    elif method == "crowdkit-ds":
        labels = _crowdkit("DS", data)[0]
    else:
        raise ValueError(f"method must be one of conal, ds, crowdkit-ds; got {method!r}")
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0
    out["peak_rss_mb"] = _maxrss_mb()
    out["acc"] = accuracy(labels, s.true_labels)
    if method == "conal":
        out["epochs"] = model.n_epochs_
        out["label_weight"] = model.label_weight_
        # Warm start: 1% new annotations (on existing items, from existing annotators plus
        # one new annotator) and a warm refit from the cold model.
        rng = np.random.default_rng(1)
        n_new = data.n_annotations // 100
        items = rng.choice(data.n_items, size=n_new, replace=False)
        ann = np.full(n_new, data.n_annotators, dtype=np.int64)  # the newcomer by default
        existing = rng.random(n_new) < 0.9
        ann[existing] = rng.integers(0, data.n_annotators, size=int(existing.sum()))
        # Drop pairs that already exist (one label per item and annotator).
        pair_old = set((data.item_idx * (data.n_annotators + 1) + data.annotator_idx).tolist())
        keep = np.array([p not in pair_old for p in (items * (data.n_annotators + 1) + ann).tolist()])
        items, ann = items[keep], ann[keep]
        z = s.true_labels[items]
        noisy = rng.random(len(items)) < 0.3
        lab = np.where(noisy, rng.integers(0, data.n_classes, size=len(items)), z)
        grown = CrowdData(
            items=data.items,
            annotators=(*data.annotators, "newcomer"),
            classes=data.classes,
            item_idx=np.concatenate([data.item_idx, items]),
            annotator_idx=np.concatenate([data.annotator_idx, ann]),
            label_idx=np.concatenate([data.label_idx, lab]),
            features=data.features,
        )
        t1, c1 = time.perf_counter(), time.process_time()
        warm = CoNAL(seed=0).fit(grown, init=model)
        out["warm_seconds"] = time.perf_counter() - t1
        out["warm_cpu_seconds"] = time.process_time() - c1
        out["warm_new_annotations"] = len(items)
        out["warm_epochs"] = warm.n_epochs_
        out["warm_acc"] = accuracy(warm.labels_, s.true_labels)
        out["warm_agreement_with_cold"] = float((warm.labels_ == model.labels_).mean())
        out["warm_mode"] = warm.fit_mode_
        out["peak_rss_after_warm_mb"] = _maxrss_mb()
        # The live target: the warm refit against a cold fit on the SAME grown labels.
        cold_grown = CoNAL(seed=0).fit(grown)
        out["grown_cold_acc"] = accuracy(cold_grown.labels_, s.true_labels)
        for key, fitted in (("warm_ece", warm), ("grown_cold_ece", cold_grown)):
            conf = fitted.probas_[np.arange(data.n_items), fitted.labels_]
            out[key] = expected_calibration_error(conf, fitted.labels_ == s.true_labels)
    return out


def run_scale(timeout: int = 900) -> list[dict[str, Any]]:
    results = []
    for method in ("conal", "ds", "crowdkit-ds"):
        cmd = [sys.executable, "-m", "bench.aggregation", "--scale-worker", method]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            results.append({"method": method, "error": f"timed out after {timeout} s"})
            continue
        if proc.returncode != 0:
            results.append({"method": method, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"scale {method}: {results[-1]}", file=sys.stderr, flush=True)
    return results


# ---------------------------------------------------------------------- report
def _fmt(v: Any, pct: bool = True) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def _mean_sd(vals: list[float]) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{100 * vals[0]:.1f}"
    return f"{100 * np.mean(vals):.1f} ± {100 * np.std(vals):.1f}"


def detail_table(rows: list[Row]) -> str:
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r["crowd"], r["method"])].append(r)
    lines = [
        "| crowd | method | aggregated acc % | test acc % | common MAE | individual MAE | fit s (wall) | fit s (CPU) | peak RSS Δ MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (crowd, method), rs in groups.items():
        test = [r.get("test_acc") for r in rs if r.get("test_acc") is not None]
        cm = [r["common_mae"] for r in rs if "common_mae" in r]
        im = [r["indiv_mae"] for r in rs if "indiv_mae" in r]
        lines.append(
            f"| {crowd} | {method} | {_mean_sd(accs) if (accs := [r['acc'] for r in rs if r['acc'] is not None]) else '–'} | {_mean_sd(test) if test else '–'} | "
            f"{f'{np.mean(cm):.3f}' if cm else '–'} | {f'{np.mean(im):.3f}' if im else '–'} | "
            f"{np.mean([r['seconds'] for r in rs]):.2f} | {np.mean([r['cpu'] for r in rs]):.2f} | {np.mean([r['mem_mb'] for r in rs]):.0f} |"
        )
    return "\n".join(lines)


def calibration_table(rows: list[Row]) -> str:
    """One line per crowd and method: accuracy, ECE, Brier and fit seconds (means over seeds)."""
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        if r["acc"] is not None:
            groups[(r["crowd"], r["method"])].append(r)
    lines = [
        f"| crowd | method | accuracy % | ECE ({ECE_BINS} bins) | Brier | fit s (wall) |",
        "|---|---|---|---|---|---|",
    ]
    for (crowd, method), rs in groups.items():
        ece = [r["ece"] for r in rs if "ece" in r]
        brier = [r["brier"] for r in rs if "brier" in r]
        lines.append(
            f"| {crowd} | {method} | {_mean_sd([r['acc'] for r in rs])} | "
            f"{f'{np.mean(ece):.3f}' if ece else '–'} | {f'{np.mean(brier):.3f}' if brier else '–'} | "
            f"{np.mean([r['seconds'] for r in rs]):.2f} |"
        )
    return "\n".join(lines)


def reliability_diagrams(rows: list[Row], folder: Path) -> list[Path]:
    """One PNG per crowd, one curve per method with probabilities: accuracy against mean
    confidence per non-empty bin (seeds pooled), the diagonal being perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on the bench machine
    import matplotlib.pyplot as plt

    by: dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if "_calib" in r:
            by[r["crowd"]][r["method"]].append(r["_calib"])
    written = []
    folder.mkdir(parents=True, exist_ok=True)
    for crowd, methods in by.items():
        fig, ax = plt.subplots(figsize=(8.5, 6))
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
        colours = plt.get_cmap("tab20")
        for k, (method, parts) in enumerate(methods.items()):
            conf = np.concatenate([c for c, _ in parts])
            ok = np.concatenate([o for _, o in parts])
            mean_conf, acc, count = reliability_bins(conf, ok, n_bins=ECE_BINS)
            full = count > 0
            ece = expected_calibration_error(conf, ok, n_bins=ECE_BINS)
            ax.plot(
                mean_conf[full],
                acc[full],
                marker="o",
                markersize=3,
                linewidth=1.2,
                color=colours(k % 20),
                linestyle="-" if method in OURS else ":",
                label=f"{method} (ECE {ece:.3f})",
            )
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="mean confidence in the bin",
            ylabel="accuracy in the bin",
            title=f"Reliability, {crowd} ({ECE_BINS} equal-width bins; solid: ours)",
        )
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        fig.tight_layout()
        path = folder / f"reliability-{re.sub(r'[^a-z0-9]+', '-', crowd.lower()).strip('-')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def tau_line(rows: list[Row]) -> str:
    """CoNAL's label weight tau (chosen without gold) per crowd, one value per seed."""
    by: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["method"] == CONAL_POST and r.get("tau") is not None:
            by[r["crowd"]].append(r["tau"])
    return "CoNAL label weight tau per seed: " + "; ".join(
        f"{c} {', '.join(f'{t:g}' for t in ts)}" for c, ts in by.items()
    )


def synthetic_summary(rows: list[Row]) -> str:
    by: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    mae: dict[str, list[float]] = defaultdict(list)
    swapped: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["crowd"].startswith("synthetic") and not r["crowd"].endswith("(no features)"):
            if "acc_pairs_swapped" in r:
                swapped[r["crowd"]].append(r["acc_pairs_swapped"])
            if r["acc"] is not None:
                by[r["crowd"]][r["method"]].append(r["acc"])
            if r["method"] == CONAL_POST and "common_mae" in r:
                mae[r["crowd"]].append(r["common_mae"])
    if not by:
        return ""
    methods = list(next(iter(by.values())).keys())
    head = (
        "| setting | "
        + " | ".join(methods)
        + " | CoNAL post − best peer | common MAE | CoNAL post with the common pairs swapped |"
    )
    lines = [head, "|" + "---|" * (len(methods) + 4)]
    for crowd, accs in by.items():
        means = {m: float(np.mean(v)) for m, v in accs.items()}
        peer = max(v for m, v in means.items() if m not in OURS or m in ("MV (ours)", "DS (ours)"))
        diff = 100 * (means[CONAL_POST] - peer)
        lines.append(
            f"| {crowd} | "
            + " | ".join(f"{100 * means[m]:.1f}" for m in methods)
            + f" | {diff:+.1f} | {np.mean(mae[crowd]):.3f} | "
            + (f"{100 * np.mean(swapped[crowd]):.1f} |" if swapped.get(crowd) else "– |")
        )
    return "\n".join(lines)


def scale_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| method | annotations | fit s (wall) | fit s (CPU) | peak RSS MB (whole process) | RSS MB after generating the crowd | accuracy % |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['method']} | – | {r['error']} | – | – | – | – |")
            continue
        lines.append(
            f"| {r['method']} | {r['annotations']:,} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['rss_after_generation_mb']:.0f} | {100 * r['acc']:.1f} |"
        )
    for r in results:
        if r.get("warm_seconds") is not None:
            lines.append("")
            lines.append(
                f"Warm start: {r['warm_new_annotations']:,} new annotations (1%), warm refit "
                f"{r['warm_seconds']:.1f} s wall / {r['warm_cpu_seconds']:.1f} s CPU ({r['warm_epochs']} epochs) vs cold "
                f"{r['seconds']:.1f} s wall / {r['cpu_seconds']:.1f} s CPU ({r['epochs']} epochs) = "
                f"{100 * r['warm_seconds'] / r['seconds']:.1f}% of cold (wall), "
                f"{100 * r['warm_cpu_seconds'] / r['cpu_seconds']:.1f}% (CPU); "
                f"accuracy {100 * r['warm_acc']:.1f}% (cold {100 * r['acc']:.1f}%), "
                f"labels agreeing with the cold fit {100 * r['warm_agreement_with_cold']:.1f}%. "
                f"Against a cold fit on the same grown labels ({r['warm_mode']} refit): accuracy "
                f"{100 * r['warm_acc']:.2f}% vs {100 * r['grown_cold_acc']:.2f}%, ECE {r['warm_ece']:.4f} vs "
                f"{r['grown_cold_ece']:.4f}."
            )
    return "\n".join(lines)


REFERENCE = """Seed paper (Table 2.1, test accuracy, CoNAL): LabelMe 87.12 (10,000-image augmented set with
4x4x512 VGG16 maps: different features, not comparable with this copy), Music 84.06 (comparable)."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.aggregation", description=__doc__.split("\n")[0])
    p.add_argument("--labelme", type=Path)
    p.add_argument("--music", type=Path)
    p.add_argument("--sentiment", type=Path)
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--scale", action="store_true")
    p.add_argument(
        "--no-features",
        action="store_true",
        help="also run a copy of each crowd without its item features (per-item embeddings; "
        "with --synthetic, of the default setting: asymmetric, strength 0.6, share 0.5)",
    )
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--out", type=Path)
    p.add_argument("--scale-worker", choices=("conal", "ds", "crowdkit-ds"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.scale_worker:
        print(json.dumps(scale_worker(args.scale_worker)))
        return 0
    torch.set_num_threads(1)
    import crowdkit.aggregation  # noqa: F401  (import cost must not land in the first timing)

    real: list[Crowd] = []
    for name in ("labelme", "music", "sentiment"):
        folder = getattr(args, name)
        if folder is not None:
            real.append(load_folder(name, folder))
    rows: list[Row] = []
    for seed in range(args.seeds):
        crowds: list[Crowd] = list(real) + (synthetic_crowds(seed) if args.synthetic else [])
        if args.no_features:
            crowds += [
                without_features(c)
                for c in crowds
                if not c.name.startswith("synthetic") or c.name == _synthetic_name(*DEFAULT_SYNTHETIC)
            ]
        for crowd in crowds:
            t = time.perf_counter()
            rows.extend(run_crowd(crowd, seed))
            print(f"[seed {seed}] {crowd.name}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)

    parts = [f"Command: `python -m bench.aggregation {' '.join(argv if argv is not None else sys.argv[1:])}`", ""]
    if rows:
        parts += [
            "### Accuracy and calibration per crowd (mean over seeds; ECE and Brier on the items with gold)",
            "",
            calibration_table(rows),
            "",
            "### Per crowd (mean ± sd over seeds)",
            "",
            detail_table(rows),
            "",
            tau_line(rows),
            "",
            REFERENCE,
            "",
        ]
        summ = synthetic_summary(rows)
        if summ:
            parts += ["### Synthetic crowds: aggregated accuracy % (mean over seeds)", "", summ, ""]
    if args.scale:
        parts += [
            "### Scale: 1,000,000 annotations (300k items, 1k annotators, 10 classes, 32-d)",
            "",
            scale_table(run_scale()),
            "",
        ]
    text = "\n".join(parts)
    print(text)
    if args.out:
        args.out.write_text(text)
        if rows:
            for path in reliability_diagrams(rows, args.out.parent):
                print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
