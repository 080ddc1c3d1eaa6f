"""Pure helpers of CrowdInG (spec section 2.2): label co-occurrence, entropy, selection.

They take and return numpy arrays only, so each is unit-tested on toy inputs.
"""

from __future__ import annotations

import numpy as np

from inference.data import CrowdData

__all__ = [
    "entropy",
    "label_cooccurrence",
    "lca_adjacency",
    "normalised_adjacency",
    "sample_candidate_pairs",
    "select_by_entropy",
]


def label_cooccurrence(data: CrowdData) -> np.ndarray:
    """(C, C) counts of two *different* labels given to the same item by different annotators.

    With K the (N, C) per-item label counts, the number of ordered annotation pairs on an item
    with labels (c, c') is K[i, c] K[i, c'] for c != c'; summed over items that is K^T K off
    the diagonal. Agreement (c == c) is left out: LCA is about which labels get *confused*
    together; the identity added by :func:`normalised_adjacency` keeps each class's own
    matrix in the mix. Built from the sparse counts, never items x annotators.
    """
    k = data.counts().astype(np.float64)
    a = k.T @ k
    np.fill_diagonal(a, 0.0)
    return a


def normalised_adjacency(cooccurrence: np.ndarray) -> np.ndarray:
    """D^-1/2 (A + I) D^-1/2 with A the row-normalised, symmetrised co-occurrence.

    Raw counts grow with the crowd, which would drown the identity (each class's own
    weight) on a big crowd and leave it dominant on a small one; turning each row into the
    conditional frequency P(c' | c) (as in ML-GCN, the LCA reference) makes the mix
    independent of the crowd size. Symmetrising keeps the normalised matrix symmetric, as
    the GCN formula assumes. A class that never co-occurs keeps only its identity entry.
    """
    a = np.asarray(cooccurrence, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"cooccurrence must be a square (C, C) matrix, got shape {a.shape}")
    if (a < 0).any() or not np.isfinite(a).all():
        raise ValueError("cooccurrence must be finite and non-negative")
    rows = a.sum(1, keepdims=True)
    cond = np.divide(a, rows, out=np.zeros_like(a), where=rows > 0)
    sym = 0.5 * (cond + cond.T)
    a_hat = sym + np.eye(len(a))
    d = a_hat.sum(1)
    inv_sqrt = 1.0 / np.sqrt(d)
    out: np.ndarray = inv_sqrt[:, None] * a_hat * inv_sqrt[None, :]  # numpy's stubs type this expression as Any
    return out


def lca_adjacency(data: CrowdData) -> np.ndarray:
    """The LCA decoder's normalised label adjacency for a crowd: (C, C), symmetric."""
    return normalised_adjacency(label_cooccurrence(data))


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy (nats) along ``axis``; 0 log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    out: np.ndarray = -terms.sum(axis=axis)  # numpy's stubs type this expression as Any
    return out


def select_by_entropy(
    annotator_idx: np.ndarray,
    entropies: np.ndarray,
    counts: np.ndarray,
    rng: np.random.Generator,
    *,
    eps: float = 1e-6,
) -> np.ndarray:
    """Entropy-based selection of generated annotations (section 2.2.5).

    ``annotator_idx[j]`` is the annotator of candidate j and ``entropies[j]`` the entropy of
    the generator's distribution for it. For every annotator r, ``counts[r]`` candidates of r
    are drawn without replacement with probability proportional to 1 / entropy (confident
    generations are the hard ones for the discriminator); an annotator with fewer candidates
    than ``counts[r]`` gets all of them. Returns the chosen candidate positions, sorted.

    Weighted sampling without replacement is done in one vectorised pass with the
    Efraimidis–Spirakis keys u^(1/w) (here log u * H, as w = 1/H): the top ``counts[r]``
    keys of each annotator form the sample.
    """
    ann = np.asarray(annotator_idx, dtype=np.int64)
    ent = np.asarray(entropies, dtype=np.float64)
    cnt = np.asarray(counts, dtype=np.int64)
    if ann.shape != ent.shape or ann.ndim != 1:
        raise ValueError(f"annotator_idx and entropies must be aligned 1-D arrays, got {ann.shape} and {ent.shape}")
    if len(ann) == 0:
        return np.empty(0, dtype=np.int64)
    if ann.min() < 0 or ann.max() >= len(cnt):
        raise ValueError(f"annotator_idx must index counts (0..{len(cnt) - 1})")
    if (cnt < 0).any():
        raise ValueError("counts must be non-negative")
    if not np.isfinite(ent).all() or (ent < 0).any():
        raise ValueError("entropies must be finite and non-negative")
    keys = np.log(rng.random(len(ann)) + 1e-300) * (ent + eps)  # in (-inf, 0]; larger = chosen
    order = np.lexsort((-keys, ann))  # by annotator, then best key first
    sorted_ann = ann[order]
    first = np.searchsorted(sorted_ann, sorted_ann, side="left")
    rank = np.arange(len(order)) - first
    keep = rank < cnt[sorted_ann]
    return np.sort(order[keep])


def sample_candidate_pairs(
    n_items: int,
    n_annotators: int,
    observed_item: np.ndarray,
    observed_annotator: np.ndarray,
    n_pairs: int,
    rng: np.random.Generator,
    items: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Unobserved (item, annotator) pairs: all of them when they number at most ``n_pairs``,
    else about ``n_pairs`` drawn uniformly (observed pairs are dropped after drawing).

    Enumerating all N x R pairs is what the paper does; on a platform crowd (100k items x
    200 annotators) that is 20M generator rows per epoch, so a uniform sample of a few times
    the number of real annotations stands in for it (an unbiased estimate of the same mean).
    ``items`` restricts the pairs to those items (default: every item).
    """
    pool = np.arange(n_items, dtype=np.int64) if items is None else np.asarray(items, dtype=np.int64)
    key_obs = np.unique(np.asarray(observed_item, np.int64) * n_annotators + np.asarray(observed_annotator, np.int64))
    total = len(pool) * n_annotators
    if total <= n_pairs:
        it = np.repeat(pool, n_annotators)
        an = np.tile(np.arange(n_annotators, dtype=np.int64), len(pool))
    else:
        it = pool[rng.integers(0, len(pool), size=n_pairs)]
        an = rng.integers(0, n_annotators, size=n_pairs).astype(np.int64)
        key = np.unique(it * n_annotators + an)  # drop repeats (and sort: deterministic)
        it, an = key // n_annotators, key % n_annotators
    key = it * n_annotators + an
    fresh = ~np.isin(key, key_obs, assume_unique=False)
    return it[fresh], an[fresh]
