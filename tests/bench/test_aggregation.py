"""The aggregation bench's helpers: the symmetric pairing and the gold-trained ceiling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench._common import Crowd
from bench.aggregation import (
    _crowdkit,
    _paired_class,
    calibration,
    calibration_table,
    gold_ceiling,
    reliability_diagrams,
    without_features,
)
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


def test_calibration_scores_only_the_items_with_gold() -> None:
    labels = np.array([0, 1, 1, 0])
    probas = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.5, 0.5]])
    gold = np.array([0, 1, 0, -1])  # the last item has no gold
    out = calibration(labels, probas, gold)
    conf, correct = out["_calib"]
    assert conf.tolist() == [0.9, 0.8, 0.6] and correct.tolist() == [True, True, False]
    # Bins of width 1/15: three single-item bins, |1-0.9| + |1-0.8| + |0-0.6| over 3.
    assert out["ece"] == pytest.approx((0.1 + 0.2 + 0.6) / 3)
    assert out["brier"] == pytest.approx((2 * 0.1**2 + 2 * 0.2**2 + 2 * 0.6**2) / 3)


def test_crowdkit_peers_give_probabilities_on_our_index() -> None:
    s = make_synthetic_crowd(n_items=150, n_test=10, n_annotators=8, n_classes=3, labels_per_item=3, seed=1)
    for name in ("MACE", "OneCoinDawidSkene"):
        labels, probas = _crowdkit(name, s.data, seed=0)
        assert probas is not None and probas.shape == (150, 3)
        np.testing.assert_allclose(probas.sum(1), 1.0, atol=1e-6)
        labelled = s.data.labelled_mask()
        assert (labels[labelled] == probas[labelled].argmax(1)).mean() > 0.95
    assert _crowdkit("MMSR", s.data)[1] is None  # labels only: its ECE cell stays empty


def test_table_and_one_reliability_png_per_crowd(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for crowd in ("tiny a", "tiny b"):
        for method in ("MV (ours)", "EBCC"):
            probas = rng.dirichlet(np.ones(3), size=60)
            gold = rng.integers(0, 3, 60)
            labels = probas.argmax(1)
            rows.append(
                {"crowd": crowd, "method": method, "acc": float((labels == gold).mean()), "seconds": 0.5}
                | calibration(labels, probas, gold)
            )
    table = calibration_table(rows)
    assert len(table.splitlines()) == 2 + 4 and "| tiny b | EBCC |" in table
    paths = reliability_diagrams(rows, tmp_path)
    assert [p.name for p in paths] == ["reliability-tiny-a.png", "reliability-tiny-b.png"]
    with Image.open(paths[0]) as img:
        assert img.size[0] > 500 and img.size[1] > 400
