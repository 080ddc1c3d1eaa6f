from __future__ import annotations

import numpy as np
import pytest

from inference.data import CrowdData


def test_from_records_indexes_ids_once(tiny_records):
    data = CrowdData.from_records(tiny_records)
    assert data.classes == ("cat", "dog")
    assert data.items == ("i1", "i2", "i3", "i4")  # first appearance
    assert data.annotators == ("alice", "bob", "carol", "dave")
    assert data.n_annotations == len(tiny_records)
    assert data.item_idx.dtype == np.int64 and data.label_idx.dtype == np.int64
    for k, (item, ann, label) in enumerate(tiny_records):
        assert data.items[data.item_idx[k]] == item
        assert data.annotators[data.annotator_idx[k]] == ann
        assert data.classes[data.label_idx[k]] == label


def test_column_form_matches_records(tiny_records):
    cols = tuple(list(col) for col in zip(*tiny_records, strict=True))
    a = CrowdData.from_records(tiny_records)
    b = CrowdData.from_records(cols)  # type: ignore[arg-type]
    assert a.items == b.items and a.annotators == b.annotators and a.classes == b.classes
    np.testing.assert_array_equal(a.item_idx, b.item_idx)
    np.testing.assert_array_equal(a.label_idx, b.label_idx)


def test_counts_and_unlabelled_items_and_unused_class(tiny_records):
    data = CrowdData.from_records(
        tiny_records,
        classes=["cat", "dog", "owl"],
        items=["i0", "i1", "i2", "i3", "i4"],
        features=np.arange(10, dtype=np.float32).reshape(5, 2),
    )
    counts = data.counts()
    assert counts.shape == (5, 3)
    np.testing.assert_array_equal(counts[0], [0, 0, 0])  # i0: no labels
    np.testing.assert_array_equal(counts[1], [2, 1, 0])
    assert counts[:, 2].sum() == 0  # nobody said owl
    np.testing.assert_array_equal(data.labelled_mask(), [False, True, True, True, True])
    assert data.features is not None and data.features.dtype == np.float32
    np.testing.assert_array_equal(data.annotations_per_annotator(), [3, 2, 2, 1])


def test_label_not_in_classes_names_label_and_allowed(tiny_records):
    with pytest.raises(ValueError, match=r"label 'cat' is not in classes; allowed: \['dog', 'owl'\]"):
        CrowdData.from_records(tiny_records, classes=["dog", "owl"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features(tiny_records, bad):
    feats = np.ones((4, 3), dtype=np.float32)
    feats[2, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        CrowdData.from_records(tiny_records, features=feats)


def test_non_finite_annotator_features(tiny_records):
    feats = np.ones((4, 2))
    feats[0, 0] = np.nan
    with pytest.raises(ValueError, match="annotator_features contains NaN or inf"):
        CrowdData.from_records(tiny_records, annotator_features=feats)


def test_features_row_count_must_match_items(tiny_records):
    with pytest.raises(ValueError, match="features has 3 rows but there are 4 items"):
        CrowdData.from_records(tiny_records, features=np.zeros((3, 2)))


def test_annotator_features_row_count(tiny_records):
    with pytest.raises(ValueError, match="annotator_features has 2 rows but there are 4 annotators"):
        CrowdData.from_records(tiny_records, annotator_features=np.zeros((2, 2)))


def test_empty_crowd():
    with pytest.raises(ValueError, match="empty crowd"):
        CrowdData.from_records([], classes=["a", "b"])
    with pytest.raises(ValueError, match="empty crowd"):
        CrowdData.from_records(([], [], []), classes=["a", "b"])


def test_fewer_than_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        CrowdData.from_records([("i1", "a", "x"), ("i2", "a", "x")])
    with pytest.raises(ValueError, match="at least 2 classes"):
        CrowdData.from_records([("i1", "a", "x")], classes=["x"])


def test_annotation_item_not_in_items(tiny_records):
    with pytest.raises(ValueError, match="annotation item id 'i4' is not in items"):
        CrowdData.from_records(tiny_records, items=["i1", "i2", "i3"])


def test_duplicated_item_annotator_pair(tiny_records):
    with pytest.raises(ValueError, match="item 'i2' was labelled more than once by annotator 'bob'"):
        CrowdData.from_records([*tiny_records, ("i2", "bob", "cat")])


def test_duplicate_ids_in_given_lists(tiny_records):
    with pytest.raises(ValueError, match="classes contains duplicate id 'cat'"):
        CrowdData.from_records(tiny_records, classes=["cat", "dog", "cat"])
    with pytest.raises(ValueError, match="items contains duplicate id 'i1'"):
        CrowdData.from_records(tiny_records, items=["i1", "i2", "i3", "i4", "i1"])


def test_unequal_columns():
    with pytest.raises(ValueError, match="equal lengths"):
        CrowdData.from_records((["i1", "i2"], ["a"], ["x", "y"]))


def test_ids_are_strings():
    data = CrowdData.from_records([(1, 10, 0), (2, 10, 1)])  # type: ignore[list-item]
    assert data.items == ("1", "2") and data.annotators == ("10",) and data.classes == ("0", "1")


def test_direct_construction_checks_ranges():
    with pytest.raises(ValueError, match="label_idx has values outside"):
        CrowdData(
            items=("i",),
            annotators=("a",),
            classes=("x", "y"),
            item_idx=np.array([0]),
            annotator_idx=np.array([0]),
            label_idx=np.array([2]),
        )
