"""The synthetic crowd generator (section 2.1.5): truth, confusions, omega share, activity."""

from __future__ import annotations

import numpy as np
import pytest

from inference.synthetic import common_confusion_matrix, make_synthetic_crowd


def test_shapes_and_truth_are_consistent() -> None:
    s = make_synthetic_crowd(n_items=600, n_test=100, n_annotators=20, n_classes=5, n_features=8, seed=3)
    d = s.data
    assert d.n_items == 600 and d.n_annotators == 20 and d.n_classes == 5
    assert d.features is not None and d.features.shape == (600, 8)
    assert d.n_annotations == 600 * 3
    assert s.true_labels.shape == (600,)
    assert s.true_confusions.shape == (20, 5, 5)
    assert s.true_common_confusion.shape == (5, 5)
    assert s.true_omega.shape == s.true_source.shape == (d.n_annotations,)
    assert s.test_features.shape == (100, 8) and s.test_labels.shape == (100,)
    np.testing.assert_allclose(s.true_confusions.sum(2), 1.0)
    np.testing.assert_allclose(s.true_common_confusion.sum(1), 1.0)
    # Every item is labelled by distinct annotators.
    pairs = d.item_idx * d.n_annotators + d.annotator_idx
    assert len(np.unique(pairs)) == d.n_annotations


def test_mean_omega_hits_the_target_share_and_zero_means_no_common_noise() -> None:
    s = make_synthetic_crowd(n_items=3000, common_share=0.3, seed=1)
    assert s.true_omega.mean() == pytest.approx(0.3, abs=1e-3)
    assert s.true_source.mean() == pytest.approx(0.3, abs=0.03)
    assert s.true_omega.std() > 0.05  # omega varies with annotator and instance
    s0 = make_synthetic_crowd(n_items=500, common_share=0.0, seed=1)
    assert not s0.true_source.any() and (s0.true_omega == 0).all()


def test_labels_follow_the_chosen_confusion_matrix() -> None:
    s = make_synthetic_crowd(n_items=6000, common_share=0.5, common_strength=0.6, individual_strength=0.7, seed=2)
    d = s.data
    z = s.true_labels[d.item_idx]
    # Among common-noise annotations the label keeps the true class with prob 1 - 0.6.
    common = s.true_source
    kept_common = (d.label_idx[common] == z[common]).mean()
    assert kept_common == pytest.approx(0.4, abs=0.03)
    kept_indiv = (d.label_idx[~common] == z[~common]).mean()
    assert kept_indiv == pytest.approx(0.3, abs=0.03)
    # The common flip target is the one the matrix names.
    target = s.true_common_confusion.copy()
    np.fill_diagonal(target, 0)
    flipped = common & (d.label_idx != z)
    assert (d.label_idx[flipped] == target.argmax(1)[z[flipped]]).all()


def test_symmetric_common_confusion_pairs_classes() -> None:
    m = common_confusion_matrix(6, 0.6, "symmetric", np.random.default_rng(0))
    np.testing.assert_allclose(m, m.T)
    np.testing.assert_allclose(np.diag(m), 0.4)
    np.testing.assert_allclose(m.sum(1), 1.0)
    odd = common_confusion_matrix(5, 0.6, "symmetric", np.random.default_rng(0))
    assert (np.diag(odd) == 1.0).sum() == 1  # the unpaired class stays clean


def test_activity_is_skewed_and_fractional_labels_per_item() -> None:
    s = make_synthetic_crowd(
        n_items=5000, n_annotators=200, labels_per_item=3.4, activity="zipf", activity_skew=1.0, seed=0
    )
    per_ann = np.bincount(s.data.annotator_idx, minlength=200)
    assert per_ann.max() > 10 * np.median(per_ann)
    assert s.data.n_annotations / 5000 == pytest.approx(3.4, abs=0.05)


def test_seed_determinism() -> None:
    a = make_synthetic_crowd(n_items=300, seed=7)
    b = make_synthetic_crowd(n_items=300, seed=7)
    c = make_synthetic_crowd(n_items=300, seed=8)
    np.testing.assert_array_equal(a.data.label_idx, b.data.label_idx)
    np.testing.assert_array_equal(a.data.features, b.data.features)
    assert not np.array_equal(a.data.label_idx, c.data.label_idx)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"common_type": "diagonal"}, "common_type must be one of"),
        ({"activity": "pareto"}, "activity must be one of"),
        ({"common_share": 1.2}, "common_share"),
        ({"individual_strength": -0.1}, "individual_strength"),
        ({"n_classes": 1}, "n_classes"),
        ({"labels_per_item": 50, "n_annotators": 10}, "labels_per_item"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_synthetic_crowd(n_items=50, **kwargs)  # type: ignore[arg-type]
