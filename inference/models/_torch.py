"""Pieces the torch models (CoNAL, CrowdInG) share: the fit context, inputs and checkpoint state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
import torch

from inference.data import CrowdData


@contextmanager
def torch_fit_context(*, num_threads: int, seed: int) -> Iterator[None]:
    """Run a fit on ``num_threads`` threads with torch seeded by ``seed``.

    ``fork_rng``: seeding must not leak into the caller's global torch RNG, and
    the caller's thread count is restored afterwards.
    """
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(num_threads))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            yield
    finally:
        torch.set_num_threads(old_threads)


class FeatureScaled(Protocol):
    """A model that keeps the feature scaler it was fitted with (CoNAL, CrowdInG)."""

    feature_mean_: np.ndarray | None
    feature_scale_: np.ndarray | None


def fit_inputs(
    model: FeatureScaled, data: CrowdData, prev: FeatureScaled | None, dev: torch.device
) -> tuple[torch.Tensor | None, int, torch.Tensor | None]:
    """Standardised item features (N, D) float32 tensor or None, D, and annotator
    features (R, E) tensor or None.

    Sets ``model.feature_mean_``/``feature_scale_`` (None without features). A
    warm start reuses ``prev``'s scaler when the width matches, so the copied
    classifier weights keep their meaning.
    """
    if data.features is not None:
        feats = np.asarray(data.features, dtype=np.float32)
        if prev is not None and prev.feature_mean_ is not None and prev.feature_mean_.shape[0] == feats.shape[1]:
            mean, scale = prev.feature_mean_, prev.feature_scale_
        else:
            mean = feats.mean(0)
            scale = feats.std(0)
            scale = np.where(scale > 1e-8, scale, 1.0)
        model.feature_mean_ = np.asarray(mean, np.float32)
        model.feature_scale_ = np.asarray(scale, np.float32)
        x_all: torch.Tensor | None = torch.from_numpy((feats - model.feature_mean_) / model.feature_scale_).to(dev)
        n_features = feats.shape[1]
    else:
        model.feature_mean_ = model.feature_scale_ = None
        x_all = None
        n_features = 0
    ann_feats = (
        None
        if data.annotator_features is None
        else torch.from_numpy(np.asarray(data.annotator_features, np.float32)).to(dev)
    )
    return x_all, n_features, ann_feats


def scaled_new_features(model: FeatureScaled, features: np.ndarray) -> torch.Tensor:
    """New items' raw features (n, D), checked and standardised with the scaler
    the model was fitted with: the (n, D) float32 input of its classifier.

    Raises ``ValueError`` for a model fitted without features, a wrong width, or
    NaN/inf values.
    """
    name = type(model).__name__
    if model.feature_mean_ is None or model.feature_scale_ is None:
        raise ValueError(f"this {name} was fitted without features (per-item embeddings); it cannot predict new items")
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != model.feature_mean_.shape[0]:
        raise ValueError(f"features must have shape (n, {model.feature_mean_.shape[0]}), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf values")
    return torch.from_numpy((x - model.feature_mean_) / model.feature_scale_)


def net_checkpoint(net: Any, *, n_items: int) -> dict[str, Any]:
    """The checkpoint state of a fitted network: detached CPU copies of its
    weights and the sizes ``_build_net`` needs to rebuild it."""
    return {
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "n_features": int(net.n_features),
        "n_annotator_features": int(net.n_annotator_features),
        "n_items": int(n_items),
    }


__all__: list[str] = ["fit_inputs", "net_checkpoint", "torch_fit_context"]
