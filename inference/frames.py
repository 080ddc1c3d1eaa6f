"""The pandas face of the crowd models, crowd-kit style: ``model.fit(df)`` with a DataFrame of
``task, worker, label`` columns, and ``labels_``/``probas_`` back as pandas objects indexed
by task.

Every model's own ``fit`` takes a :class:`~inference.data.CrowdData`; ``CrowdModel`` wraps
each subclass's ``fit`` with :func:`accept_frames` once, so the conversion lives here and no
model needs an edit. A ``CrowdData`` input goes through untouched (numpy outputs, as before).

pandas stays optional for ``inference``: it is a dev dependency and the ``frames`` extra,
not a runtime one, because the platform builds its ``CrowdData`` from database rows and never
needs it, and importing it would cost every Celery worker and CLI call its import time and
memory. A DataFrame can only reach :func:`is_frame` when the caller has imported pandas
already, so it looks in ``sys.modules`` and never imports pandas itself; the functions that
build pandas objects import it lazily.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from inference.data import CrowdData

if TYPE_CHECKING:
    from inference.models.base import CrowdModel

__all__ = ["COLUMNS", "FrameIds", "accept_frames", "crowd_from_frame", "is_frame", "is_pandas", "set_frame_outputs"]

#: The columns a crowd DataFrame must have (crowd-kit's names).
COLUMNS = ("task", "worker", "label")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class FrameIds:
    """The DataFrame's own task and label values, in ``CrowdData.items``/``classes`` order.

    ``CrowdData`` holds ids as text; these give the outputs back the caller's values (an int
    label stays an int, as in crowd-kit)."""

    tasks: list[Any]
    classes: list[Any]


def is_frame(data: object) -> bool:
    """Whether ``data`` is a pandas DataFrame (without importing pandas)."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(data, pd.DataFrame)


def is_pandas(value: object) -> bool:
    """Whether ``value`` is a pandas Series or DataFrame (without importing pandas)."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, (pd.Series, pd.DataFrame))


def _text_ids(column: str, values: Sequence[Any]) -> list[str]:
    """``values`` as the text ids ``CrowdData`` keeps; two values that read the same as text
    (``1`` and ``"1"``) would merge silently, so they are an error."""
    text = [str(v) for v in values]
    if len(set(text)) != len(text):
        seen: dict[str, Any] = {}
        for v, t in zip(values, text, strict=True):
            if t in seen:
                raise ValueError(f"column {column!r} holds {seen[t]!r} and {v!r}, which read the same as text")
            seen[t] = v
    return text


def _sorted_values(values: Sequence[Any]) -> list[Any]:
    """Class values in their natural order (numbers numerically), by text when they mix types."""
    try:
        return sorted(values)
    except TypeError:  # e.g. ints and strings together: no natural order, text order instead
        return sorted(values, key=str)


def crowd_from_frame(df: Any, *, features: Any = None) -> tuple[CrowdData, FrameIds]:
    """A ``CrowdData`` from a ``task, worker, label`` DataFrame; bad input is a ValueError
    naming the column.

    ``features`` is optional: a DataFrame indexed by task (its index fixes the items, so it
    may hold tasks nobody labelled yet) or an array whose rows follow the tasks' order of
    first appearance in ``df``.
    """
    import pandas as pd  # lazily: see the module docstring

    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"the DataFrame lacks the column(s) {', '.join(repr(c) for c in missing)}; "
            f"expected columns {', '.join(COLUMNS)}, got {[str(c) for c in df.columns]}"
        )
    if len(df) == 0:
        raise ValueError("empty crowd: the DataFrame has no rows")
    for c in COLUMNS:
        empty = df[c].isna()
        if empty.any():
            raise ValueError(
                f"column {c!r} has {int(empty.sum())} missing value(s) (first at row {df.index[empty.argmax()]!r})"
            )
    tasks = list(pd.unique(df["task"]))
    classes = _sorted_values(list(pd.unique(df["label"])))
    matrix: np.ndarray | None = None
    if features is None:
        items = tasks
    elif isinstance(features, (pd.DataFrame, pd.Series)):
        index = features.index
        if index.has_duplicates:
            raise ValueError(f"the features' index repeats task {str(index[index.duplicated()][0])!r}")
        unknown = pd.Index(tasks).difference(index)
        if len(unknown):
            raise ValueError(
                f"column 'task' holds {len(unknown)} task(s) missing from the features' index, e.g. {str(unknown[0])!r}"
            )
        items = list(index)
        try:
            matrix = features.to_numpy(dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"features must be numeric: {exc}") from exc
    else:
        items = tasks
        matrix = np.asarray(features)
    # _text_ids rejects values that would merge as text; CrowdData.from_records checks the
    # rest (duplicated task-worker pairs, feature rows and values) and names what is wrong.
    item_ids = _text_ids("task", items)
    class_ids = _text_ids("label", classes)
    _text_ids("worker", list(pd.unique(df["worker"])))
    data = CrowdData.from_records(
        (
            [str(v) for v in df["task"].tolist()],
            [str(v) for v in df["worker"].tolist()],
            [str(v) for v in df["label"].tolist()],
        ),
        classes=class_ids,
        items=item_ids,
        features=matrix,
    )
    return data, FrameIds(tasks=items, classes=classes)


def set_frame_outputs(model: CrowdModel, ids: FrameIds) -> None:
    """Replace a fitted model's ``labels_``/``probas_`` by crowd-kit's pandas shapes: a Series
    named ``agg_label`` and a DataFrame with one column per class, both indexed by task."""
    import pandas as pd  # lazily: see the module docstring

    index = pd.Index(ids.tasks, name="task")
    labels = np.asarray(model.labels_, dtype=np.int64)
    model.labels_ = pd.Series([ids.classes[k] for k in labels], index=index, name="agg_label")
    model.probas_ = pd.DataFrame(
        np.asarray(model.probas_, dtype=np.float64), index=index, columns=pd.Index(ids.classes, name="label")
    )


def accept_frames(fit: F) -> F:
    """Wrap a model's ``fit(data: CrowdData, *, init, progress)`` so that it also takes a
    DataFrame (plus ``features=``) and then answers in pandas."""

    @functools.wraps(fit)
    def wrapper(self: CrowdModel, data: Any, *args: Any, features: Any = None, **kwargs: Any) -> Any:
        if not is_frame(data):
            if not isinstance(data, CrowdData):
                raise ValueError(
                    f"data must be a CrowdData or a pandas DataFrame with columns {', '.join(COLUMNS)}, "
                    f"got {type(data).__name__}"
                )
            if features is not None:
                raise ValueError("features= goes with a DataFrame; a CrowdData carries its own features")
            return fit(self, data, *args, **kwargs)
        crowd, ids = crowd_from_frame(data, features=features)
        fitted = fit(self, crowd, *args, **kwargs)
        set_frame_outputs(fitted, ids)
        return fitted

    wrapper.accepts_frames = True  # type: ignore[attr-defined]  # a marker: wrap once only
    return wrapper  # type: ignore[return-value]  # same call shape, plus the DataFrame form
