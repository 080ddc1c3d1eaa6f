from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from crowdkit.aggregation import DawidSkene as CrowdKitDawidSkene

from inference.data import CrowdData
from inference.metrics import mean_confusion_mae
from inference.models import DawidSkene, MajorityVote
from inference.models.base import CrowdModel


def test_recovers_known_confusions(synthetic_crowd):
    # ~1000 labels per annotator (~330 per confusion row): sampling error per cell is
    # about 0.02, so a mean absolute error of 0.03 leaves room only for estimation bias.
    crowd = synthetic_crowd(n_items=3000, n_annotators=15, n_classes=3, labels_per_item=5, seed=1)
    ds = DawidSkene().fit(crowd.data)
    per_annotator = np.abs(ds.confusions_ - crowd.confusions).mean(axis=(1, 2))
    assert per_annotator.mean() <= 0.03, per_annotator
    assert per_annotator.max() <= 0.06, per_annotator
    assert mean_confusion_mae(ds.confusions_, crowd.confusions) == pytest.approx(per_annotator.mean())
    np.testing.assert_allclose(ds.confusions_.sum(axis=2), 1.0)
    np.testing.assert_allclose(ds.probas_.sum(axis=1), 1.0)
    true_prior = np.bincount(crowd.truth, minlength=3) / len(crowd.truth)
    np.testing.assert_allclose(ds.prior_, true_prior, atol=0.03)


@pytest.mark.filterwarnings("ignore")  # crowd-kit's pandas deprecation noise, not ours
@pytest.mark.parametrize("seed", [0, 2])
def test_at_least_as_accurate_as_crowdkit_and_mv(synthetic_crowd, seed):
    crowd = synthetic_crowd(n_items=1500, n_annotators=40, n_classes=4, labels_per_item=3, seed=seed)
    data = crowd.data
    ours = np.mean(DawidSkene().fit_predict(data) == crowd.truth)
    mv = np.mean(MajorityVote().fit_predict(data) == crowd.truth)
    frame = pd.DataFrame(
        {
            "task": np.asarray(data.items)[data.item_idx],
            "worker": np.asarray(data.annotators)[data.annotator_idx],
            "label": data.label_idx,
        }
    )
    ck_labels = CrowdKitDawidSkene(n_iter=100).fit_predict(frame)
    pos = {item: i for i, item in enumerate(data.items)}
    theirs = np.mean(ck_labels.to_numpy() == crowd.truth[[pos[t] for t in ck_labels.index]])
    assert ours >= theirs, (ours, theirs)
    assert ours > mv + 0.01, (ours, mv)


def test_seed_determinism(synthetic_crowd):
    data = synthetic_crowd(n_items=400, seed=3).data
    a = DawidSkene(seed=7).fit(data)
    b = DawidSkene(seed=7).fit(data)
    np.testing.assert_array_equal(a.probas_, b.probas_)
    np.testing.assert_array_equal(a.confusions_, b.confusions_)
    assert a.loss_history_ == b.loss_history_


def test_loss_history_and_progress(synthetic_crowd):
    data = synthetic_crowd(n_items=400, seed=4).data
    calls: list[tuple[int, int, float]] = []
    ds = DawidSkene(n_iter=50).fit(data, progress=lambda e, t, loss: calls.append((e, t, loss)))
    assert len(ds.loss_history_) == ds.n_epochs_ == len(calls)
    assert [c[0] for c in calls] == list(range(1, ds.n_epochs_ + 1))
    assert all(c[1] == 50 for c in calls)
    assert ds.loss_history_[-1] < ds.loss_history_[0]
    assert ds.n_epochs_ < 50  # converged before the cap


def test_unlabelled_item_unused_class_and_single_label_annotator(tiny_records):
    data = CrowdData.from_records(tiny_records, classes=["cat", "dog", "owl"], items=["i0", "i1", "i2", "i3", "i4"])
    ds = DawidSkene().fit(data)
    assert ds.labels_.shape == (5,) and ds.probas_.shape == (5, 3)
    assert np.isfinite(ds.probas_).all() and np.isfinite(ds.confusions_).all()
    np.testing.assert_allclose(ds.probas_.sum(axis=1), 1.0)
    np.testing.assert_allclose(ds.confusions_.sum(axis=2), 1.0)
    assert ds.labelled_mask_ is not None and not ds.labelled_mask_[0]
    np.testing.assert_allclose(ds.probas_[0], ds.prior_)  # unlabelled: the class prior
    assert ds.labels_[1:].tolist() != [2, 2, 2, 2]  # nobody said owl; it must not win
    assert data.classes[ds.labels_[2]] == "dog"


def test_bad_hyper_parameters():
    with pytest.raises(ValueError, match="n_iter must be >= 1"):
        DawidSkene(n_iter=0)
    with pytest.raises(ValueError, match="smoothing must be >= 0"):
        DawidSkene(smoothing=-1)


def _subset(data: CrowdData, keep: np.ndarray, *, annotators_from: CrowdData | None = None) -> CrowdData:
    items = np.asarray(data.items)[data.item_idx[keep]]
    anns = np.asarray(data.annotators)[data.annotator_idx[keep]]
    labels = np.asarray(data.classes)[data.label_idx[keep]]
    return CrowdData.from_records((list(items), list(anns), list(labels)), classes=data.classes)


def test_warm_start_matches_cold_fit_with_fewer_iterations(synthetic_crowd):
    full = synthetic_crowd(n_items=2000, n_annotators=30, n_classes=3, labels_per_item=3, seed=5).data
    rng = np.random.default_rng(0)
    # The earlier fit lacks 3% of the annotations and every label of the last annotator.
    old_mask = (rng.random(full.n_annotations) > 0.03) & (full.annotator_idx != full.n_annotators - 1)
    old = DawidSkene(tol=1e-7).fit(_subset(full, old_mask))
    assert full.annotators[-1] not in old.annotators_

    restored = DawidSkene.loads(old.dumps())  # the platform passes a checkpoint back
    warm = DawidSkene(tol=1e-7, warm_min_annotations=0, warm_max_growth=0.1).fit(full, init=restored)
    assert warm.fit_mode_ == "warm"
    cold = DawidSkene(tol=1e-7).fit(full)
    assert warm.items_ == full.items
    assert warm.n_epochs_ < cold.n_epochs_, (warm.n_epochs_, cold.n_epochs_)
    assert np.mean(warm.labels_ == cold.labels_) >= 0.995
    assert np.abs(warm.confusions_ - cold.confusions_).max() < 0.05


def test_warm_start_with_reordered_ids_and_a_new_class(tiny_records):
    old = DawidSkene().fit(CrowdData.from_records(tiny_records))
    new_records = [*tiny_records, ("i5", "erin", "owl"), ("i5", "alice", "owl")]
    data = CrowdData.from_records(list(reversed(new_records)), classes=["owl", "dog", "cat"])
    warm = DawidSkene(warm_min_annotations=0, warm_max_growth=1.0).fit(data, init=old)
    # New classes: the refit is cold, whatever the growth allows.
    assert (warm.fit_mode_, warm.fit_reason_) == ("cold", "the project's classes changed")
    assert warm.classes_ == ("owl", "dog", "cat")
    np.testing.assert_allclose(warm.confusions_.sum(axis=2), 1.0)
    assert data.classes[warm.labels_[data.items.index("i5")]] == "owl"
    assert data.classes[warm.labels_[data.items.index("i2")]] == "dog"


def test_warm_start_rejects_other_models(tiny_records):
    data = CrowdData.from_records(tiny_records)
    with pytest.raises(ValueError, match="init must be a fitted DawidSkene, got MajorityVote"):
        DawidSkene().fit(data, init=MajorityVote().fit(data))
    with pytest.raises(ValueError, match="has not been fitted"):
        DawidSkene().fit(data, init=DawidSkene())


def test_checkpoint_roundtrip_and_base_dispatch(tiny_records):
    data = CrowdData.from_records(tiny_records)
    ds = DawidSkene(smoothing=0.05).fit(data)
    blob = ds.dumps()
    assert isinstance(blob, bytes)
    for loaded in (DawidSkene.loads(blob), CrowdModel.loads(blob)):
        assert isinstance(loaded, DawidSkene) and loaded.smoothing == 0.05
        np.testing.assert_array_equal(loaded.probas_, ds.probas_)
        np.testing.assert_array_equal(loaded.prior_, ds.prior_)
        assert loaded.loss_history_ == ds.loss_history_ and loaded.annotators_ == ds.annotators_
    with pytest.raises(ValueError, match="holds a 'ds' model, not 'mv'"):
        MajorityVote.loads(blob)
    with pytest.raises(ValueError, match="not a crowd model checkpoint"):
        DawidSkene.loads(b"garbage")


def test_warm_start_id_helpers():
    from inference.models.base import match_ids, remap_axis

    new_pos, old_pos = match_ids(("a", "b", "c"), ("c", "x", "a"))
    assert new_pos.tolist() == [0, 2] and old_pos.tolist() == [2, 0]
    old = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    out = remap_axis(old, 0, ("a", "b", "c"), ("c", "x", "a"), fill=-1.0)
    np.testing.assert_array_equal(out, [[3, 3], [-1, -1], [1, 1]])
    fill = np.zeros((3, 2))
    np.testing.assert_array_equal(remap_axis(old, 0, ("a", "b", "c"), ("b", "y", "z"), fill)[0], [2, 2])
    with pytest.raises(ValueError, match="fill has shape"):
        remap_axis(old, 0, ("a", "b", "c"), ("a",), np.zeros((2, 2)))


@pytest.mark.parametrize("n_classes", [4, 8])
def test_one_label_per_item_does_not_collapse_to_a_permutation(synthetic_crowd, n_classes: int) -> None:
    # With one label per item EM has nothing to correct MV with; before the
    # shrinkage target was anchored at the MV start, EM drifted to a permuted
    # labelling (13-28% accuracy here, 13% on LabelMe with 60% of labels removed).
    crowd = synthetic_crowd(n_items=1000, n_annotators=59, n_classes=n_classes, labels_per_item=1, seed=0)
    mv_acc = (MajorityVote().fit(crowd.data).labels_ == crowd.truth).mean()
    ds_acc = (DawidSkene().fit(crowd.data).labels_ == crowd.truth).mean()
    assert ds_acc >= mv_acc - 0.02, (ds_acc, mv_acc)
