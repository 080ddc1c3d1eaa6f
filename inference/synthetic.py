"""Synthetic crowds with known truth, following the CoNAL experiments (section 2.1.5).

Everything the learner must recover is generated and returned: true labels, the
common confusion matrix pi^g, every annotator's individual confusion pi^r and the
per-annotation probability omega that the common matrix produced the label.

Generation (all vectorised, so 1,000,000 annotations take a few seconds):

* features: one Gaussian cluster per class (class means drawn once, unit noise);
* common confusion: "asymmetric" maps every class to one other uniformly chosen class,
  "symmetric" pairs classes at random and flips each pair into each other; the strength
  (sum of a row's off-diagonal mass) is spread evenly over the chosen entries;
* individual confusions: asymmetric, one per annotator, strength ``individual_strength``;
* omega = sigmoid(scale * <norm(u_r), norm(v_i)> + b) with hidden annotator vectors u_r and
  hidden instance vectors v_i = W_v x_i (never disclosed); b is tuned by bisection so that
  the mean of omega over annotations equals ``common_share`` (0 means no common noise);
* annotator activity is skewed (lognormal or Zipf weights), about ``labels_per_item``
  distinct annotators per item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from inference.data import CrowdData

__all__ = ["SyntheticCrowd", "asymmetric_confusion", "common_confusion_matrix", "make_synthetic_crowd"]

ConfusionType = Literal["asymmetric", "symmetric"]
ActivityType = Literal["lognormal", "zipf", "uniform"]


@dataclass(frozen=True)
class SyntheticCrowd:
    """A generated crowd and the hidden truth behind it."""

    data: CrowdData  # train items with features and crowd labels
    true_labels: np.ndarray  # (N,) int64 class index of every train item
    true_confusions: np.ndarray  # (R, C, C) individual confusions, row = true class
    true_common_confusion: np.ndarray  # (C, C) common confusion pi^g
    true_omega: np.ndarray  # (A,) probability that annotation a used pi^g
    true_source: np.ndarray  # (A,) bool, the sampled s (True = common matrix used)
    test_features: np.ndarray  # (N_test, D) float32
    test_labels: np.ndarray  # (N_test,) int64
    params: dict[str, object] = field(default_factory=dict)


def _check_strength(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def asymmetric_confusion(n_classes: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Every class c keeps 1 - strength and sends ``strength`` to one other random class."""
    _check_strength("strength", strength)
    # target = c + k with k uniform in 1..C-1 picks a uniformly chosen *other* class.
    target = (np.arange(n_classes) + rng.integers(1, n_classes, size=n_classes)) % n_classes
    m = np.eye(n_classes) * (1.0 - strength)
    m[np.arange(n_classes), target] += strength
    return m


def _asymmetric_batch(n_mats: int, n_classes: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """(n_mats, C, C) independent asymmetric confusions in one shot (no Python loop)."""
    target = (np.arange(n_classes)[None, :] + rng.integers(1, n_classes, size=(n_mats, n_classes))) % n_classes
    m = np.broadcast_to(np.eye(n_classes) * (1.0 - strength), (n_mats, n_classes, n_classes)).copy()
    r = np.repeat(np.arange(n_mats), n_classes)
    c = np.tile(np.arange(n_classes), n_mats)
    m[r, c, target.reshape(-1)] += strength
    return m


def common_confusion_matrix(
    n_classes: int, strength: float, kind: ConfusionType, rng: np.random.Generator
) -> np.ndarray:
    """The common confusion pi^g of section 2.1.5 (asymmetric or symmetric pair flips)."""
    _check_strength("common_strength", strength)
    if kind == "asymmetric":
        return asymmetric_confusion(n_classes, strength, rng)
    if kind == "symmetric":
        perm = rng.permutation(n_classes)
        m = np.eye(n_classes)
        # Pairs flip into each other; with an odd class count the left-over class stays clean.
        for a, b in zip(perm[0::2], perm[1::2], strict=False):
            m[a, a] = m[b, b] = 1.0 - strength
            m[a, b] = m[b, a] = strength
        return m
    raise ValueError(f"common_type must be one of 'asymmetric', 'symmetric'; got {kind!r}")


def _activity_weights(n: int, kind: ActivityType, skew: float, rng: np.random.Generator) -> np.ndarray:
    w: np.ndarray
    if kind == "lognormal":
        w = rng.lognormal(mean=0.0, sigma=skew, size=n)
    elif kind == "zipf":
        # Zipf-like ranks, shuffled so annotator index carries no information.
        w = 1.0 / np.arange(1, n + 1) ** skew
        w = w[rng.permutation(n)]
    elif kind == "uniform":
        w = np.ones(n)
    else:
        raise ValueError(f"activity must be one of 'lognormal', 'zipf', 'uniform'; got {kind!r}")
    out: np.ndarray = w / w.sum()  # numpy's stubs type this expression as Any
    return out


def _assign_annotators(n_items: int, k: int, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n_items, k) distinct annotators per item drawn ∝ weights (approximately without replacement).

    Sampling with replacement and redrawing only the colliding slots keeps this vectorised;
    weights are capped first so that the redraw loop always terminates quickly.
    """
    n_ann = len(weights)
    if k > n_ann:
        raise ValueError(f"labels_per_item ({k}) exceeds n_annotators ({n_ann})")
    # A single annotator cannot label more than every item once: cap its share.
    cap = 1.0 / k
    w = np.minimum(weights, cap * 0.5)
    w = w / w.sum()
    cdf = np.cumsum(w)
    cdf[-1] = 1.0
    out = np.searchsorted(cdf, rng.random((n_items, k)), side="right")
    for _ in range(1000):
        s = np.sort(out, axis=1)
        dup_rows = np.nonzero((s[:, 1:] == s[:, :-1]).any(axis=1))[0]
        if dup_rows.size == 0:
            return out
        # Redraw the later slot(s) of each duplicated value in those rows only.
        sub = out[dup_rows]
        for j in range(1, k):
            clash = (sub[:, j : j + 1] == sub[:, :j]).any(axis=1)
            sub[clash, j] = np.searchsorted(cdf, rng.random(int(clash.sum())), side="right")
        out[dup_rows] = sub
    raise RuntimeError("could not draw distinct annotators; lower the activity skew")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))  # numpy's stubs type this expression as Any
    return out


def _tune_bias(logits: np.ndarray, target: float) -> float:
    """Bisection on b so that mean(sigmoid(logits + b)) == target."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _sigmoid(logits + mid).mean() < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def make_synthetic_crowd(
    *,
    n_items: int = 8000,
    n_test: int = 2000,
    n_annotators: int = 30,
    n_classes: int = 6,
    n_features: int = 32,
    labels_per_item: float = 3,
    class_sep: float = 0.55,
    common_type: ConfusionType = "asymmetric",
    common_strength: float = 0.6,
    individual_strength: float = 0.7,
    common_share: float = 0.5,
    omega_scale: float = 3.0,
    omega_dim: int = 8,
    activity: ActivityType = "lognormal",
    activity_skew: float = 1.0,
    seed: int = 0,
) -> SyntheticCrowd:
    """Generate a crowd per section 2.1.5 with its hidden truth.

    ``class_sep`` is the standard deviation of the class means (per feature, unit noise):
    0.55 with 32 features gives a clean-label classifier accuracy of roughly 95%.
    ``common_share`` is the mean of omega over annotations (0 = no common noise).
    """
    if n_items < 1 or n_annotators < 1 or n_features < 1:
        raise ValueError("n_items, n_annotators and n_features must be >= 1")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    if labels_per_item < 1:
        raise ValueError(f"labels_per_item must be >= 1, got {labels_per_item}")
    if labels_per_item > n_annotators:
        raise ValueError(f"labels_per_item ({labels_per_item}) exceeds n_annotators ({n_annotators})")
    _check_strength("individual_strength", individual_strength)
    if not 0.0 <= common_share < 1.0:
        raise ValueError(f"common_share must be in [0, 1), got {common_share}")
    rng = np.random.default_rng(seed)

    # --- features: Gaussian clusters (train and test drawn from the same distribution)
    means = rng.normal(0.0, class_sep, size=(n_classes, n_features))
    z_all = rng.integers(0, n_classes, size=n_items + n_test)
    x_all = (means[z_all] + rng.standard_normal((n_items + n_test, n_features))).astype(np.float32)
    z, x = z_all[:n_items], x_all[:n_items]

    # --- confusions
    common = common_confusion_matrix(n_classes, common_strength, common_type, rng)
    indiv = _asymmetric_batch(n_annotators, n_classes, individual_strength, rng)

    # --- who labels what
    weights = _activity_weights(n_annotators, activity, activity_skew, rng)
    # A fractional labels_per_item (e.g. 3.33 for 1M labels on 300k items) gives each
    # item floor(k) or ceil(k) labels so the mean matches.
    k_max = int(np.ceil(labels_per_item))
    ann = _assign_annotators(n_items, k_max, weights, rng)
    n_per_item = np.full(n_items, int(np.floor(labels_per_item)))
    n_per_item += rng.random(n_items) < (labels_per_item - np.floor(labels_per_item))
    keep = np.arange(k_max)[None, :] < n_per_item[:, None]
    item_idx = np.broadcast_to(np.arange(n_items, dtype=np.int64)[:, None], ann.shape)[keep]
    annotator_idx = ann[keep].astype(np.int64)

    # --- omega = sigmoid(scale * <norm u_r, norm v_i> + b), hidden u, W_v
    if common_share > 0.0:
        u = rng.standard_normal((n_annotators, omega_dim))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        w_v = rng.standard_normal((n_features, omega_dim))
        v = x @ w_v
        v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-12
        logits = omega_scale * np.einsum("ad,ad->a", u[annotator_idx], v[item_idx])
        omega = _sigmoid(logits + _tune_bias(logits, common_share))
    else:
        omega = np.zeros(len(item_idx))
    source = rng.random(len(item_idx)) < omega

    # --- labels: inverse-CDF sampling from the chosen confusion row
    true_z = z[item_idx]
    rows = np.where(source[:, None], common[true_z], indiv[annotator_idx, true_z])
    cdf = np.cumsum(rows, axis=1)
    label_idx = (rng.random(len(item_idx))[:, None] > cdf).sum(axis=1)
    label_idx = np.minimum(label_idx, n_classes - 1).astype(np.int64)

    width = len(str(max(n_items, n_test, n_annotators)))
    data = CrowdData(
        items=tuple(f"i{i:0{width}d}" for i in range(n_items)),
        annotators=tuple(f"w{r:0{width}d}" for r in range(n_annotators)),
        classes=tuple(f"c{c}" for c in range(n_classes)),
        item_idx=item_idx,
        annotator_idx=annotator_idx,
        label_idx=label_idx,
        features=np.ascontiguousarray(x),
    )
    params: dict[str, object] = dict(
        n_items=n_items,
        n_test=n_test,
        n_annotators=n_annotators,
        n_classes=n_classes,
        n_features=n_features,
        labels_per_item=labels_per_item,
        class_sep=class_sep,
        common_type=common_type,
        common_strength=common_strength,
        individual_strength=individual_strength,
        common_share=common_share,
        omega_scale=omega_scale,
        activity=activity,
        activity_skew=activity_skew,
        seed=seed,
    )
    return SyntheticCrowd(
        data=data,
        true_labels=z.astype(np.int64),
        true_confusions=indiv,
        true_common_confusion=common,
        true_omega=omega,
        true_source=source,
        test_features=np.ascontiguousarray(x_all[n_items:]),
        test_labels=z_all[n_items:].astype(np.int64),
        params=params,
    )
