"""The crowd data container shared by every model, the CLI and the platform adapter.

Crowd labels are kept as three aligned integer arrays (one entry per annotation) so
that every model can stay vectorised over annotations; an items x annotators matrix
is never built because real crowds are extremely sparse (about 3 labels per item).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CrowdData"]


def _as_float_matrix(name: str, value: Any, n_rows: int, row_name: str) -> np.ndarray:
    """Validate an optional feature matrix: 2-D, numeric, finite, one row per entity."""
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric matrix: {exc}") from exc
    if arr.ndim == 1:
        # A single feature column is a common shape for hand-built inputs.
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows x columns), got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(
            f"{name} has {arr.shape[0]} rows but there are {n_rows} {row_name}; "
            f"row i of {name} must belong to {row_name}[i]"
        )
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(f"{name} contains NaN or inf values ({bad} rows affected)")
    return np.ascontiguousarray(arr)


def _unique_ids(name: str, values: Sequence[Any]) -> tuple[str, ...]:
    ids = tuple(str(v) for v in values)
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for v in ids:
            if v in seen:
                raise ValueError(f"{name} contains duplicate id {v!r}")
            seen.add(v)
    return ids


@dataclass(frozen=True, eq=False)  # eq on ndarray fields would be ambiguous: identity instead
class CrowdData:
    """Crowd labels indexed to integers once, plus optional features.

    ``items`` lists ALL items (labelled or not); row ``i`` of ``features`` belongs to
    ``items[i]``. ``item_idx``/``annotator_idx``/``label_idx`` hold one entry per
    annotation. Build it with :meth:`from_records`, which validates everything.
    """

    items: tuple[str, ...]
    annotators: tuple[str, ...]
    classes: tuple[str, ...]
    item_idx: np.ndarray
    annotator_idx: np.ndarray
    label_idx: np.ndarray
    features: np.ndarray | None = None
    annotator_features: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Validate direct construction too, so a hand-built CrowdData cannot smuggle
        # out-of-range indices or non-finite features into a model. (frozen: setattr via object)
        for name in ("items", "annotators", "classes"):
            object.__setattr__(self, name, tuple(str(v) for v in getattr(self, name)))
        for name in ("item_idx", "annotator_idx", "label_idx"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        if self.features is not None:
            object.__setattr__(self, "features", _as_float_matrix("features", self.features, len(self.items), "items"))
        if self.annotator_features is not None:
            object.__setattr__(
                self,
                "annotator_features",
                _as_float_matrix("annotator_features", self.annotator_features, len(self.annotators), "annotators"),
            )
        if len(self.classes) < 2:
            raise ValueError(f"at least 2 classes are required, got {len(self.classes)}: {list(self.classes)}")
        n_ann = len(self.item_idx)
        if n_ann == 0:
            raise ValueError("empty crowd: there are no annotations")
        for name, arr, bound in (
            ("item_idx", self.item_idx, len(self.items)),
            ("annotator_idx", self.annotator_idx, len(self.annotators)),
            ("label_idx", self.label_idx, len(self.classes)),
        ):
            if arr.ndim != 1 or len(arr) != n_ann:
                raise ValueError(f"{name} must be 1-D with {n_ann} entries, got shape {arr.shape}")
            if arr.size and (arr.min() < 0 or arr.max() >= bound):
                raise ValueError(f"{name} has values outside [0, {bound})")

    # ------------------------------------------------------------------ building
    @classmethod
    def from_records(
        cls,
        records: Iterable[tuple[str, str, str]] | tuple[Sequence[Any], Sequence[Any], Sequence[Any]],
        *,
        classes: Sequence[str] | None = None,
        items: Sequence[str] | None = None,
        features: np.ndarray | None = None,
        annotators: Sequence[str] | None = None,
        annotator_features: np.ndarray | None = None,
    ) -> CrowdData:
        """Build and validate a crowd from ``(item_id, annotator_id, label_name)`` records.

        ``records`` is either an iterable of triples or a tuple of three equally long
        sequences (items, annotators, labels), the cheap form for large crowds.
        ``items`` fixes the item order (and may contain unlabelled items); ``features``
        rows follow it. ``annotators`` likewise fixes the annotator order for
        ``annotator_features``. ``classes`` defaults to the sorted unique labels.
        """
        item_col, ann_col, lab_col = cls._split_records(records)
        if len(item_col) == 0:
            raise ValueError("empty crowd: there are no annotations")

        # --- classes
        class_ids = tuple(sorted(set(lab_col))) if classes is None else _unique_ids("classes", classes)
        if len(class_ids) < 2:
            raise ValueError(f"at least 2 classes are required, got {len(class_ids)}: {list(class_ids)}")
        label_idx = _index_into(lab_col, class_ids, what="label", allowed_name="classes")

        # --- items (default order: first appearance, so ids are stable across runs)
        item_ids, item_idx = _ids_and_index(item_col, items, name="items", what="annotation item id")
        # --- annotators
        ann_ids, annotator_idx = _ids_and_index(ann_col, annotators, name="annotators", what="annotator id")

        # --- duplicates: one label per (item, annotator); a revision must replace, not add.
        pair = item_idx * np.int64(max(len(ann_ids), 1)) + annotator_idx
        uniq, counts = np.unique(pair, return_counts=True)
        if (counts > 1).any():
            k = int(uniq[np.argmax(counts > 1)])
            raise ValueError(
                f"duplicated annotation: item {item_ids[k // len(ann_ids)]!r} was labelled "
                f"more than once by annotator {ann_ids[k % len(ann_ids)]!r} "
                f"({int((counts > 1).sum())} duplicated pairs in total)"
            )

        # Features are validated (finite, one row per item/annotator) in __post_init__.
        return cls(
            items=item_ids,
            annotators=ann_ids,
            classes=class_ids,
            item_idx=item_idx,
            annotator_idx=annotator_idx,
            label_idx=label_idx,
            features=features,
            annotator_features=annotator_features,
        )

    @staticmethod
    def _split_records(records: Any) -> tuple[list[str], list[str], list[str]]:
        """Three aligned lists of string ids from either accepted records form."""
        # Column form: a tuple of three lists/arrays. A tuple of three *tuples* is read as
        # three (item, annotator, label) records, the only ambiguous case.
        if isinstance(records, tuple) and len(records) == 3 and all(isinstance(c, (list, np.ndarray)) for c in records):
            cols = [_str_list(c) for c in records]
            if not (len(cols[0]) == len(cols[1]) == len(cols[2])):
                raise ValueError(
                    "records given as three sequences must have equal lengths, got "
                    f"{len(cols[0])}, {len(cols[1])}, {len(cols[2])}"
                )
            return cols[0], cols[1], cols[2]
        rows = list(records)
        bad = next((r for r in rows if isinstance(r, str) or len(r) != 3), None)
        if bad is not None:
            raise ValueError(f"each record must be (item_id, annotator_id, label), got {bad!r}")
        if not rows:
            return [], [], []
        a, b, c = zip(*rows, strict=True)
        return _str_list(a), _str_list(b), _str_list(c)

    # ------------------------------------------------------------------ sizes
    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_annotators(self) -> int:
        return len(self.annotators)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_annotations(self) -> int:
        return len(self.item_idx)

    # ------------------------------------------------------------------ views
    def labelled_mask(self) -> np.ndarray:
        """(N,) bool: items with at least one annotation."""
        return np.bincount(self.item_idx, minlength=self.n_items) > 0

    def counts(self) -> np.ndarray:
        """(N, C) float64 per-item label counts, built from the annotation arrays."""
        flat = self.item_idx * self.n_classes + self.label_idx
        return (
            np.bincount(flat, minlength=self.n_items * self.n_classes)
            .reshape(self.n_items, self.n_classes)
            .astype(np.float64)
        )

    def annotations_per_annotator(self) -> np.ndarray:
        """(R,) int64 number of annotations given by each annotator."""
        return np.bincount(self.annotator_idx, minlength=self.n_annotators).astype(np.int64)

    def __repr__(self) -> str:
        return (
            f"CrowdData(items={self.n_items}, annotators={self.n_annotators}, "
            f"classes={self.n_classes}, annotations={self.n_annotations}, "
            f"features={None if self.features is None else self.features.shape}, "
            f"annotator_features={None if self.annotator_features is None else self.annotator_features.shape})"
        )


def _str_list(column: Sequence[Any] | np.ndarray) -> list[str]:
    """Ids as a list of Python strings (ids are always strings, whatever came in)."""
    values = column.tolist() if isinstance(column, np.ndarray) else list(column)
    if all(type(v) is str for v in values):
        return values
    return [str(v) for v in values]


def _index_into(column: list[str], ids: tuple[str, ...], *, what: str, allowed_name: str) -> np.ndarray:
    """(A,) int64 positions of ``column`` values in ``ids``; an unknown value raises.

    A dict lookup per annotation is several times faster than sorting strings
    (np.unique) on million-annotation crowds.
    """
    lookup = {v: i for i, v in enumerate(ids)}
    idx = np.fromiter((lookup.get(v, -1) for v in column), dtype=np.int64, count=len(column))
    if len(idx) and idx.min() < 0:
        bad = column[int(np.argmin(idx))]
        shown = list(ids) if len(ids) <= 20 else [*ids[:20], "..."]
        raise ValueError(f"{what} {bad!r} is not in {allowed_name}; allowed: {shown}")
    return idx


def _ids_and_index(
    column: list[str], given: Sequence[str] | None, *, name: str, what: str
) -> tuple[tuple[str, ...], np.ndarray]:
    """Id tuple and (A,) index for one id column: ``given`` order, or first appearance."""
    if given is not None:
        ids = _unique_ids(name, given)
        return ids, _index_into(column, ids, what=what, allowed_name=name)
    lookup: dict[str, int] = {}
    idx = np.fromiter((lookup.setdefault(v, len(lookup)) for v in column), dtype=np.int64, count=len(column))
    return tuple(lookup), idx
