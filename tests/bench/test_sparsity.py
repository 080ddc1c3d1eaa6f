"""The sparsity sweep's removal step: the share removed and at least one label per item."""

from __future__ import annotations

import numpy as np
import pytest

from bench.sparsity import remove_annotations
from inference.synthetic import make_synthetic_crowd


@pytest.mark.parametrize("level", [0.0, 0.2, 0.4, 0.6])
def test_removal_keeps_one_label_per_item(level: float) -> None:
    data = make_synthetic_crowd(n_items=400, n_test=10, n_annotators=15, labels_per_item=2.5, seed=1).data
    out = remove_annotations(data, level, np.random.default_rng(0))
    # The removed count is the share asked for, capped by the one label each item keeps.
    removable = data.n_annotations - int(data.labelled_mask().sum())
    assert out.n_annotations == data.n_annotations - min(round(level * data.n_annotations), removable)
    assert (np.bincount(out.item_idx, minlength=out.n_items) >= 1).all()
    # Only removal: every kept annotation is one of the original (item, annotator, label).
    orig = set(zip(data.item_idx.tolist(), data.annotator_idx.tolist(), data.label_idx.tolist(), strict=True))
    assert set(zip(out.item_idx.tolist(), out.annotator_idx.tolist(), out.label_idx.tolist(), strict=True)) <= orig


def test_removal_rejects_a_level_of_one() -> None:
    data = make_synthetic_crowd(n_items=50, n_test=5, n_annotators=5, seed=1).data
    with pytest.raises(ValueError, match=r"level must be in \[0, 1\)"):
        remove_annotations(data, 1.0, np.random.default_rng(0))
