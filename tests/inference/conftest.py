"""Small crowds for the inference tests (no database: inference/ never touches Django)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from inference.data import CrowdData

# The machine's 2 cores are shared by parallel test runs.
torch.set_num_threads(1)


@dataclass(frozen=True)
class SyntheticCrowd:
    data: CrowdData
    truth: np.ndarray  # (N,) true class index per item of data.items
    confusions: np.ndarray  # (R, C, C) true confusion per annotator of data.annotators


def make_crowd(
    *,
    n_items: int = 1500,
    n_annotators: int = 25,
    n_classes: int = 3,
    labels_per_item: int = 4,
    seed: int = 0,
    unlabelled: int = 0,
) -> SyntheticCrowd:
    """A Dawid–Skene crowd with known truth: each annotator has a diagonal-dominant
    confusion (accuracy 0.55–0.9, off-diagonal mass spread by a Dirichlet) and labels
    ``labels_per_item`` distinct-annotator labels per item. ``unlabelled`` extra items
    get no label at all."""
    rng = np.random.default_rng(seed)
    c = n_classes
    truth = rng.integers(0, c, n_items + unlabelled)
    acc = rng.uniform(0.55, 0.9, n_annotators)
    conf = np.empty((n_annotators, c, c))
    for r in range(n_annotators):
        off = rng.dirichlet(np.ones(c - 1), size=c) * (1 - acc[r])
        for k in range(c):
            conf[r, k] = np.insert(off[k], k, acc[r])
    items, anns, labels = [], [], []
    for i in range(n_items):
        who = rng.choice(n_annotators, size=labels_per_item, replace=False)
        for r in who:
            items.append(f"item{i}")
            anns.append(f"ann{r}")
            labels.append(f"c{rng.choice(c, p=conf[r, truth[i]])}")
    all_items = [f"item{i}" for i in range(n_items + unlabelled)]
    annotators = [f"ann{r}" for r in range(n_annotators)]
    data = CrowdData.from_records(
        (items, anns, labels),
        classes=[f"c{k}" for k in range(c)],
        items=all_items,
        annotators=annotators,
    )
    return SyntheticCrowd(data=data, truth=truth, confusions=conf)


@pytest.fixture
def synthetic_crowd() -> Callable[..., SyntheticCrowd]:
    return make_crowd


@pytest.fixture
def tiny_records() -> list[tuple[str, str, str]]:
    """Four items; "dave" gave a single label; tie on i3 (cat vs dog)."""
    return [
        ("i1", "alice", "cat"),
        ("i1", "bob", "cat"),
        ("i1", "carol", "dog"),
        ("i2", "alice", "dog"),
        ("i2", "bob", "dog"),
        ("i3", "alice", "cat"),
        ("i3", "carol", "dog"),
        ("i4", "dave", "cat"),
    ]
