"""The aggregation bench's helpers: the symmetric pairing and the gold-trained ceiling."""

from __future__ import annotations

import numpy as np
import pytest

from bench._common import Crowd
from bench.aggregation import _paired_class, gold_ceiling, without_features
from inference.synthetic import common_confusion_matrix, make_synthetic_crowd


def test_paired_class_inverts_a_symmetric_common_confusion() -> None:
    # 7 classes: three flipped pairs and one class left clean.
    m = common_confusion_matrix(7, 0.6, "symmetric", np.random.default_rng(3))
    pairs = _paired_class(m)
    assert (pairs[pairs] == np.arange(7)).all()  # an involution: swapping twice is the identity
    clean = np.flatnonzero(np.isclose(np.diag(m), 1.0))
    assert clean.tolist() == np.flatnonzero(pairs == np.arange(7)).tolist() and len(clean) == 1
    flipped = np.flatnonzero(pairs != np.arange(7))
    assert np.allclose(m[flipped, pairs[flipped]], 0.6)


def test_gold_ceiling_learns_from_gold_not_from_the_crowd() -> None:
    s = make_synthetic_crowd(n_items=300, n_test=200, n_annotators=12, n_classes=3, labels_per_item=3, seed=2)
    crowd = Crowd("tiny", s.data, s.true_labels, s.test_features, s.test_labels, truth=s)
    # Clean labels on separable clusters: near perfect on the test split.
    assert gold_ceiling(crowd, seed=0) > 0.9
    # Shuffled "gold" breaks it, so the figure really comes from the gold column.
    shuffled = Crowd(
        "tiny", s.data, np.random.default_rng(0).permutation(s.true_labels), s.test_features, s.test_labels
    )
    assert gold_ceiling(shuffled, seed=0) < 0.7


def test_gold_ceiling_needs_a_test_split() -> None:
    s = make_synthetic_crowd(n_items=100, n_test=10, n_annotators=5, n_classes=3, seed=2)
    with pytest.raises(ValueError, match="test split"):
        gold_ceiling(Crowd("tiny", s.data, s.true_labels), seed=0)


def test_without_features_keeps_the_crowd_and_drops_only_the_features() -> None:
    s = make_synthetic_crowd(n_items=100, n_test=10, n_annotators=5, n_classes=3, seed=2)
    crowd = Crowd("tiny", s.data, s.true_labels, s.test_features, s.test_labels, truth=s)
    bare = without_features(crowd)
    assert bare.name == "tiny (no features)"
    assert bare.data.features is None and bare.test_features is None
    assert (bare.data.label_idx == s.data.label_idx).all() and bare.data.items == s.data.items
    assert (bare.gold == crowd.gold).all()
