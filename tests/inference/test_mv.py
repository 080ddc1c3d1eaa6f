from __future__ import annotations

import numpy as np
import pytest

from inference.data import CrowdData
from inference.models import MajorityVote, make_model


def test_majority_and_deterministic_ties(tiny_records):
    data = CrowdData.from_records(tiny_records)
    mv = MajorityVote().fit(data)
    names = [data.classes[k] for k in mv.labels_]
    # i3 is a 1-1 tie between cat and dog: ties go to the class more frequent overall
    # (cat: 4 labels, dog: 4 labels -> equal too, so the lowest index, cat).
    assert names == ["cat", "dog", "cat", "cat"]
    np.testing.assert_allclose(mv.probas_[0], [2 / 3, 1 / 3])
    np.testing.assert_allclose(mv.probas_.sum(axis=1), 1.0)
    again = MajorityVote().fit(data)
    np.testing.assert_array_equal(mv.labels_, again.labels_)


def test_tie_goes_to_overall_more_frequent_class():
    data = CrowdData.from_records([("t", "a", "x"), ("t", "b", "y"), ("u", "a", "y"), ("u", "b", "y")])
    mv = MajorityVote().fit(data)
    assert data.classes[mv.labels_[0]] == "y"  # y has 3 labels overall, x has 1


def test_unlabelled_items_get_prior_and_are_flagged(tiny_records):
    data = CrowdData.from_records(tiny_records, classes=["cat", "dog", "owl"], items=["i0", "i1", "i2", "i3", "i4"])
    mv = MajorityVote().fit(data)
    assert mv.labelled_mask_ is not None
    np.testing.assert_array_equal(mv.labelled_mask_, [False, True, True, True, True])
    assert mv.probas_.shape == (5, 3)
    np.testing.assert_allclose(mv.probas_.sum(axis=1), 1.0)
    # The unused class keeps a little prior mass (Laplace), never a zero or NaN row.
    assert (mv.probas_[0] > 0).all()
    assert mv.probas_[0].argmax() == mv.labels_[0]


def test_confusions_row_stochastic_even_for_single_label_annotator(tiny_records):
    data = CrowdData.from_records(tiny_records, classes=["cat", "dog", "owl"])
    mv = MajorityVote().fit(data)
    assert mv.confusions_.shape == (4, 3, 3)
    np.testing.assert_allclose(mv.confusions_.sum(axis=2), 1.0)
    dave = data.annotators.index("dave")
    cat, owl = data.classes.index("cat"), data.classes.index("owl")
    assert mv.confusions_[dave, cat, cat] == 1.0  # agreed with the majority once
    np.testing.assert_allclose(mv.confusions_[dave, owl], 1 / 3)  # never saw an owl: uniform


def test_registry_and_checkpoint_roundtrip(tiny_records):
    data = CrowdData.from_records(tiny_records)
    mv = make_model("mv").fit(data)
    loaded = MajorityVote.loads(mv.dumps())
    np.testing.assert_array_equal(loaded.labels_, mv.labels_)
    np.testing.assert_array_equal(loaded.confusions_, mv.confusions_)
    assert loaded.items_ == data.items and loaded.classes_ == data.classes
    assert loaded.fit_predict(data).tolist() == mv.labels_.tolist()


def test_progress_called(tiny_records):
    calls: list[tuple[int, int, float]] = []
    MajorityVote().fit(CrowdData.from_records(tiny_records), progress=lambda e, t, loss: calls.append((e, t, loss)))
    assert calls == [(1, 1, 0.0)]


def test_registry_lists_without_importing_and_rejects_unknown_names():
    from inference.models import MODELS

    assert {"mv", "ds"} <= set(MODELS.names())
    assert MODELS["mv"] is MajorityVote and MODELS.get("nope") is None
    with pytest.raises(ValueError, match=r"unknown model 'nope'; allowed: \[.*'ds'.*'mv'"):
        make_model("nope")
    with pytest.raises(ValueError, match="bad hyper-parameters for model 'mv'"):
        make_model("mv", epochs=3)
