from __future__ import annotations

import numpy as np
import pytest

from inference.metrics import (
    accuracy,
    accuracy_against_gold,
    brier_score,
    confusion_mae,
    expected_calibration_error,
    mean_confusion_mae,
    per_class_accuracy,
    reliability_bins,
)


def test_accuracy_aligned_arrays():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    with pytest.raises(ValueError, match="same shape"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])


def test_accuracy_against_gold_skips_items_without_gold():
    acc, n = accuracy_against_gold(["a", "b", "c"], ["x", "y", "x"], {"a": "x", "c": "y", "z": "x"})
    assert (acc, n) == (0.5, 2)
    with pytest.raises(ValueError, match="no item has a gold label"):
        accuracy_against_gold(["a"], ["x"], {"b": "x"})
    with pytest.raises(ValueError, match="differ in length"):
        accuracy_against_gold(["a", "b"], ["x"], {"a": "x"})


def test_per_class_accuracy_marks_absent_classes():
    rec = per_class_accuracy(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3)
    np.testing.assert_allclose(rec[:2], [1.0, 2 / 3])
    assert np.isnan(rec[2])


def test_confusion_mae():
    eye = np.eye(2)
    flat = np.full((2, 2), 0.5)
    assert confusion_mae(eye, flat) == 0.5
    stack_e = np.stack([eye, eye])
    stack_t = np.stack([eye, flat])
    assert mean_confusion_mae(stack_e, stack_t) == 0.25
    assert mean_confusion_mae(stack_e, stack_t, weights=np.array([3.0, 1.0])) == 0.125
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_mae(eye, np.eye(3))
    with pytest.raises(ValueError, match="weights"):
        mean_confusion_mae(stack_e, stack_t, weights=np.zeros(2))


def test_brier_score_by_hand():
    probas = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    truth = np.array([0, 1, 0])
    # 0, then (0.5^2 + 0.5^2) = 0.5, then (1 + 1) = 2: mean 2.5 / 3.
    assert brier_score(probas, truth) == pytest.approx(2.5 / 3)
    assert brier_score(probas[:1], truth[:1]) == 0.0
    with pytest.raises(ValueError, match="outside"):
        brier_score(probas, np.array([0, 1, 3]))
    with pytest.raises(ValueError, match=r"\(n, C\)"):
        brier_score(probas[0], truth)


def test_reliability_bins_share_the_ece_binning():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, 500)
    correct = rng.random(500) < conf**2  # over-confident on purpose
    mean_conf, acc, count = reliability_bins(conf, correct, n_bins=15)
    assert count.sum() == 500 and np.isnan(acc[:2]).all()  # nothing below 0.2: empty bins
    full = count > 0
    ece = (count[full] / 500 * np.abs(acc[full] - mean_conf[full])).sum()
    assert ece == pytest.approx(expected_calibration_error(conf, correct, n_bins=15))
    assert (acc[full] <= mean_conf[full] + 0.1).all()
