"""Scores for aggregated labels and recovered noise models (benchmark, CLI ``--gold``, tests)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "accuracy",
    "accuracy_against_gold",
    "brier_score",
    "confusion_mae",
    "expected_calibration_error",
    "mean_confusion_mae",
    "per_class_accuracy",
    "reliability_bins",
]


def accuracy(pred: Sequence[int] | np.ndarray, truth: Sequence[int] | np.ndarray) -> float:
    """Share of positions where ``pred == truth`` (aligned arrays of the same length)."""
    p, t = np.asarray(pred), np.asarray(truth)
    if p.shape != t.shape:
        raise ValueError(f"pred and truth must have the same shape, got {p.shape} and {t.shape}")
    if p.size == 0:
        raise ValueError("cannot score an empty prediction")
    return float(np.mean(p == t))


def accuracy_against_gold(
    items: Sequence[str],
    labels: Sequence[str],
    gold: Mapping[str, str],
) -> tuple[float, int]:
    """Accuracy of ``labels`` (class names, aligned with ``items``) on the items that have gold.

    Returns ``(accuracy, n_scored)``. Items without gold are skipped; no overlap is an error.
    """
    if len(items) != len(labels):
        raise ValueError(f"items and labels differ in length: {len(items)} vs {len(labels)}")
    hits = [str(lab) == gold[str(it)] for it, lab in zip(items, labels, strict=True) if str(it) in gold]
    if not hits:
        raise ValueError("no item has a gold label")
    return float(np.mean(hits)), len(hits)


def per_class_accuracy(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) recall per true class; NaN for classes absent from ``truth``."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    total = np.bincount(truth, minlength=n_classes).astype(np.float64)
    hit = np.bincount(truth[pred == truth], minlength=n_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, hit / total, np.nan)


def confusion_mae(estimated: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error between two confusion matrices (or stacks of them), same shape."""
    e, t = np.asarray(estimated, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if e.shape != t.shape:
        raise ValueError(f"confusion shapes differ: {e.shape} vs {t.shape}")
    return float(np.mean(np.abs(e - t)))


def mean_confusion_mae(estimated: np.ndarray, true: np.ndarray, weights: np.ndarray | None = None) -> float:
    """MAE per annotator, (R, C, C) stacks, averaged with optional per-annotator ``weights``
    (e.g. annotation counts, so that annotators seen twice do not dominate)."""
    e, t = np.asarray(estimated, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if e.shape != t.shape or e.ndim != 3:
        raise ValueError(f"expected two (R, C, C) stacks of the same shape, got {e.shape} and {t.shape}")
    per = np.abs(e - t).mean(axis=(1, 2))
    if weights is None:
        return float(per.mean())
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != per.shape or w.sum() <= 0:
        raise ValueError("weights must be (R,) non-negative with a positive sum")
    return float((per * w).sum() / w.sum())


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE over ``n_bins`` equal-width confidence bins (Guo et al., 2017).

    ``confidence`` (n,) is the probability given to the predicted class and ``correct``
    (n,) whether that prediction was right: sum over bins of (bin share) x |accuracy -
    mean confidence|. Confidence 0 falls in the first bin, 1 in the last.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.shape != ok.shape or conf.ndim != 1:
        raise ValueError(f"confidence and correct must be aligned 1-D arrays, got {conf.shape} and {ok.shape}")
    if conf.size == 0:
        raise ValueError("cannot score an empty prediction")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    gap = np.abs(np.bincount(bins, weights=ok, minlength=n_bins) - np.bincount(bins, weights=conf, minlength=n_bins))
    return float(gap.sum() / conf.size) if count.sum() else 0.0


def brier_score(probas: np.ndarray, truth: np.ndarray) -> float:
    """Multi-class Brier score (Brier, 1950): mean over items of the squared distance between
    the (n, C) probability rows and the one-hot truth; 0 is perfect, 2 the worst possible.

    Unlike ECE it needs no binning and rewards sharp right answers, so the two together say
    whether confidence is both honest (ECE) and useful (Brier)."""
    p = np.asarray(probas, dtype=np.float64)
    t = np.asarray(truth)
    if p.ndim != 2 or t.shape != (p.shape[0],):
        raise ValueError(f"probas must be (n, C) and truth (n,), got {p.shape} and {t.shape}")
    if p.shape[0] == 0:
        raise ValueError("cannot score an empty prediction")
    if t.min() < 0 or t.max() >= p.shape[1]:
        raise ValueError(f"truth holds class indices outside [0, {p.shape[1]})")
    onehot = np.zeros_like(p)
    onehot[np.arange(len(t)), t] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points of a reliability diagram: per equal-width bin (the binning of
    :func:`expected_calibration_error`), the mean confidence, the accuracy and the count;
    NaN confidence and accuracy for empty bins."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.shape != ok.shape or conf.ndim != 1 or n_bins < 1:
        raise ValueError(f"confidence and correct must be aligned 1-D arrays, got {conf.shape} and {ok.shape}")
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=conf, minlength=n_bins) / count
        acc = np.bincount(bins, weights=ok, minlength=n_bins) / count
    return mean_conf, acc, count
