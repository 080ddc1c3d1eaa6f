"""The shape every crowd model shares (crowd-kit style) and the helpers they reuse.

A model is a ``@dataclass(eq=False)`` subclass of :class:`CrowdModel` whose fields are
its typed hyper-parameters. ``fit`` sets the fitted attributes (trailing underscore).
Checkpoints (``dumps``/``loads``) are what the platform stores in the database and
passes back as ``init=`` for the next warm-started run, so they hold the ids the model
was fitted on: warm start matches items, annotators and classes BY ID.
"""

from __future__ import annotations

import dataclasses
import io
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar, cast

import numpy as np

from inference import frames
from inference.data import CrowdData

__all__ = [
    "CrowdModel",
    "ProgressFn",
    "TqdmProgress",
    "check_warm_policy",
    "match_ids",
    "remap_axis",
    "report_progress",
]

ProgressFn = Callable[[int, int, float], None]
M = TypeVar("M", bound="CrowdModel")

_CHECKPOINT_FORMAT = 1


class CrowdModel:
    """Base class: ``fit``/``fit_predict``/``dumps``/``loads`` and the fitted attributes.

    Subclasses implement :meth:`fit` and, when they hold more than numpy arrays and
    plain values (e.g. a torch module), :meth:`_extra_state`/:meth:`_load_extra_state`.
    """

    #: Registry name ("mv", "ds", "conal", ...), used by checkpoints and the CLI.
    name: ClassVar[str] = "base"
    #: Whether ``fit(init=...)`` actually reuses the previous fit.
    supports_warm_start: ClassVar[bool] = False
    #: Name of the hyper-parameter that ``--epochs`` maps to, if any.
    epochs_param: ClassVar[str | None] = None

    # Fitted attributes (documented here once; every model sets all of them).
    labels_: np.ndarray  # (N,) int64 class index for every item in data.items
    probas_: np.ndarray  # (N, C) float64 posterior, rows sum to 1
    confusions_: np.ndarray  # (R, C, C) float64, row = true class, row-stochastic
    common_confusion_: np.ndarray | None = None  # (C, C) (CoNAL)
    omega_: np.ndarray | None = None  # (A,) per-annotation omega (CoNAL)
    annotator_omega_: np.ndarray | None = None  # (R,) mean omega per annotator (CoNAL)
    classifier_probas_: np.ndarray | None = None  # (N, C) classifier prediction (CoNAL)
    labelled_mask_: np.ndarray | None = None  # (N,) bool, items with >= 1 annotation
    loss_history_: list[float]
    n_epochs_: int
    fit_mode_: str  # "cold" (from scratch) or "warm" (from ``init``)
    fit_reason_: str  # why this mode, in words (the platform shows it in the run history)
    cold_n_annotations_: int  # annotations of the cold fit this fit descends from
    cold_n_items_: int  # items of that cold fit
    fit_seconds_: float
    items_: tuple[str, ...]
    annotators_: tuple[str, ...]
    classes_: tuple[str, ...]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The DataFrame face (crowd-kit style, inference/frames.py) for every model at once:
        # each model's own fit keeps taking a CrowdData, and its wrapper converts a DataFrame
        # on the way in and the labels_/probas_ to pandas on the way out.
        fit = cls.__dict__.get("fit")
        if fit is not None and not getattr(fit, "accepts_frames", False):
            cls.fit = frames.accept_frames(fit)  # type: ignore[method-assign]

    # ------------------------------------------------------------------ API
    def fit(
        self: M,
        data: CrowdData,
        *,
        init: CrowdModel | None = None,
        progress: ProgressFn | None = None,
    ) -> M:
        raise NotImplementedError

    def fit_predict(self, data: CrowdData, **kw: Any) -> np.ndarray:
        """Fit and return ``labels_``."""
        return self.fit(data, **kw).labels_

    def fit_predict_proba(self, data: CrowdData, **kw: Any) -> np.ndarray:
        """Fit and return ``probas_`` (crowd-kit's name; a DataFrame for a DataFrame input)."""
        return self.fit(data, **kw).probas_

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities for new items from their features (models with a classifier)."""
        raise NotImplementedError(f"{type(self).__name__} has no classifier to predict new items")

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "labels_")

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as a plain dict (the dataclass fields)."""
        # Checked through ``object``: CrowdModel itself is no dataclass, so mypy narrows
        # ``is_dataclass(self)`` to "never" and calls the subclasses' branch unreachable.
        model: object = self
        if dataclasses.is_dataclass(model):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(model) if f.init}
        return {}

    # ------------------------------------------------------------------ fit helpers
    def _start_fit(self, data: CrowdData) -> float:
        """Record the ids the fit is based on; return the start time."""
        if not isinstance(data, CrowdData):
            raise ValueError(f"data must be a CrowdData, got {type(data).__name__}")
        self.items_ = data.items
        self.annotators_ = data.annotators
        self.classes_ = data.classes
        self.labelled_mask_ = data.labelled_mask()
        return time.perf_counter()

    def _plan_start(self, init: CrowdModel | None, data: CrowdData, *, width: int | None = None) -> CrowdModel | None:
        """Decide between a warm refit from ``init`` and a cold fit; returns the model to
        start from (None = cold) and records ``fit_mode_``, ``fit_reason_`` and
        ``cold_n_annotations_``.

        A warm refit only fine-tunes what ``init`` learned, and what it learned on a much
        smaller crowd does not wash out: chaining warm refits from a project's first 200
        labels published labels 14-18 points below a cold fit on the same 2,400 labels,
        whatever the number of warm epochs (BENCHMARKS.md, "Live refit chain"). So a warm
        refit is only allowed while the labels differ from those of the chain's last COLD
        fit by at most ``warm_max_growth`` (a share of that fit's annotations, counted in
        either direction; the item count likewise, since the platform standardises the
        features over all items), with the same classes and item feature width; otherwise
        the fit is cold. Below ``warm_min_annotations`` every fit is cold: there a cold fit
        costs seconds, and two cold fits on labels 1 % apart already differ by 1-2 points
        on LabelMe, so a warm refit saves little and cannot promise a cold fit's result.
        ``width`` is this fit's input width (None: the model has none).
        """
        prev = self._check_init(init)
        n = int(data.n_annotations)
        limit = float(getattr(self, "warm_max_growth", 0.0))
        smallest = int(getattr(self, "warm_min_annotations", 0))
        reason = ""
        if init is None:
            reason = "no previous fit to start from"
        elif not self.supports_warm_start:
            reason = f"{type(self).__name__} always fits from scratch"
        elif n < smallest:
            reason = f"{n} annotations: below {smallest}, every refit is cold"
        elif prev is not None:
            base = getattr(prev, "cold_n_annotations_", None)
            base_items = int(getattr(prev, "cold_n_items_", None) or len(prev.items_))
            item_change = abs(data.n_items - base_items) / max(base_items, 1)
            old_width = getattr(prev, "feature_mean_", None)
            old_width = None if old_width is None else int(np.asarray(old_width).shape[0])
            if base is None or int(base) <= 0:
                reason = "the previous fit does not record the cold fit it descends from"
            elif tuple(prev.classes_) != tuple(data.classes):
                reason = "the project's classes changed"
            elif old_width != width:
                reason = f"the item features changed width ({old_width} -> {width})"
            elif item_change > limit:
                reason = (
                    f"the items changed by {item_change:.1%} since the last cold fit ({base_items} -> {data.n_items}); "
                    f"warm refits are allowed up to {limit:.1%}"
                )
            else:
                change = abs(n - int(base)) / int(base)
                if change > limit:
                    reason = (
                        f"the labels changed by {change:.1%} since the last cold fit ({int(base)} -> {n}); "
                        f"warm refits are allowed up to {limit:.1%}"
                    )
                else:
                    self.fit_mode_ = "warm"
                    self.fit_reason_ = (
                        f"the labels changed by {change:.1%} since the last cold fit ({int(base)} -> {n}), "
                        f"within the {limit:.1%} a warm refit allows"
                    )
                    self.cold_n_annotations_ = int(base)
                    self.cold_n_items_ = base_items
                    return prev
        self.fit_mode_ = "cold"
        self.fit_reason_ = reason
        self.cold_n_annotations_ = n
        self.cold_n_items_ = int(data.n_items)
        return None

    def _check_init(self, init: CrowdModel | None) -> CrowdModel | None:
        """Validate a warm-start model: same class and fitted. ``None`` passes through."""
        if init is None:
            return None
        if type(init) is not type(self):
            raise ValueError(f"init must be a fitted {type(self).__name__}, got {type(init).__name__}")
        if not init.is_fitted:
            raise ValueError(f"init {type(init).__name__} has not been fitted")
        return init

    # ------------------------------------------------------------------ checkpoints
    #: Fitted attributes that go into a checkpoint beyond the common ones above.
    _extra_fitted: ClassVar[tuple[str, ...]] = ()
    _common_fitted: ClassVar[tuple[str, ...]] = (
        "labels_",
        "probas_",
        "confusions_",
        "common_confusion_",
        "omega_",
        "annotator_omega_",
        "classifier_probas_",
        "labelled_mask_",
        "loss_history_",
        "n_epochs_",
        "fit_mode_",
        "fit_reason_",
        "cold_n_annotations_",
        "cold_n_items_",
        "fit_seconds_",
        "items_",
        "annotators_",
        "classes_",
    )

    def _extra_state(self) -> dict[str, Any]:
        """Extra state (e.g. a torch ``state_dict``) saved with the checkpoint."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`_extra_state`; called after the fitted attributes are restored."""

    def dumps(self) -> bytes:
        """Serialise hyper-parameters, ids and fitted state with ``torch.save``."""
        import torch  # lazily: MV/DS users (and the CLI's error paths) need no torch import

        if not self.is_fitted:
            raise ValueError(f"{type(self).__name__} must be fitted before dumps()")
        arrays: dict[str, Any] = {}
        plain: dict[str, Any] = {}
        for attr in (*self._common_fitted, *self._extra_fitted):
            value = getattr(self, attr, None)
            if frames.is_pandas(value):  # a fit on a DataFrame (frames.py): stored as numpy
                value = np.array(value)  # a copy: pandas 3 hands out read-only views
            if isinstance(value, np.ndarray):
                # Tensors keep the blob loadable with weights_only=True (no pickle of numpy).
                arrays[attr] = torch.from_numpy(np.ascontiguousarray(value))
            else:
                plain[attr] = _to_plain(value)
        payload = {
            "format": _CHECKPOINT_FORMAT,
            "model": self.name,
            "class": type(self).__name__,
            "params": {k: _to_plain(v) for k, v in self.get_params().items()},
            "arrays": arrays,
            "plain": plain,
            "extra": self._extra_state(),
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        return buf.getvalue()

    @classmethod
    def loads(cls: type[M], blob: bytes) -> M:
        """Rebuild a fitted model from :meth:`dumps` output (safe ``weights_only`` load)."""
        import torch

        try:
            payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several unrelated types for bad blobs
            raise ValueError(f"not a crowd model checkpoint: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError("not a crowd model checkpoint (unknown format)")
        target: type[CrowdModel] = cls
        if cls is CrowdModel:
            # Loading through the base class dispatches on the stored model name.
            from inference.models import MODELS

            if payload["model"] not in MODELS:
                raise ValueError(f"checkpoint model {payload['model']!r} is not registered")
            target = MODELS[payload["model"]]
        elif payload["model"] != cls.name:
            raise ValueError(f"checkpoint holds a {payload['model']!r} model, not {cls.name!r}")
        model = target(**payload["params"])
        for attr, tensor in payload["arrays"].items():
            setattr(model, attr, tensor.numpy().copy())
        for attr, value in payload["plain"].items():
            as_stored = tuple(value) if attr in ("items_", "annotators_", "classes_") and value is not None else value
            setattr(model, attr, as_stored)
        model._load_extra_state(payload.get("extra", {}))
        # An M: either target is cls, or cls is CrowdModel itself (the dispatch above).
        return cast(M, model)


def _to_plain(value: Any) -> Any:
    """Convert numpy scalars/tuples to types ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------- warm start
def check_warm_policy(model: Any) -> None:
    """The warm-refit hyper-parameters every warm-startable model has (see ``_plan_start``):
    ``warm_max_growth`` a share >= 0 (0: every refit is cold), ``warm_min_annotations``
    a count >= 0."""
    if not float(model.warm_max_growth) >= 0.0:
        raise ValueError(f"warm_max_growth must be >= 0, got {model.warm_max_growth}")
    if int(model.warm_min_annotations) < 0:
        raise ValueError(f"warm_min_annotations must be >= 0, got {model.warm_min_annotations}")


def match_ids(old_ids: Sequence[str], new_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ids present in both lists: ``(new_pos, old_pos)`` int64 arrays.

    ``new[new_pos[k]] == old[old_pos[k]]``; ids only in ``new_ids`` start fresh.
    """
    old_lookup = {v: i for i, v in enumerate(old_ids)}
    new_pos: list[int] = []
    old_pos: list[int] = []
    for i, v in enumerate(new_ids):
        j = old_lookup.get(v)
        if j is not None:
            new_pos.append(i)
            old_pos.append(j)
    return np.asarray(new_pos, dtype=np.int64), np.asarray(old_pos, dtype=np.int64)


def remap_axis(
    array: np.ndarray,
    axis: int,
    old_ids: Sequence[str],
    new_ids: Sequence[str],
    fill: np.ndarray | float,
) -> np.ndarray:
    """Re-index ``array`` along ``axis`` from ``old_ids`` to ``new_ids``.

    Entries for ids unknown to the old fit take ``fill`` (a scalar, or an array already
    shaped like the result from which the unknown positions are taken).
    """
    array = np.asarray(array)
    shape = list(array.shape)
    shape[axis] = len(new_ids)
    if isinstance(fill, np.ndarray):
        out = np.array(fill, dtype=array.dtype, copy=True)
        if list(out.shape) != shape:
            raise ValueError(f"fill has shape {out.shape}, expected {tuple(shape)}")
    else:
        out = np.full(shape, fill, dtype=array.dtype)
    new_pos, old_pos = match_ids(old_ids, new_ids)
    if len(new_pos):
        dst: list[slice | np.ndarray] = [slice(None)] * array.ndim
        src: list[slice | np.ndarray] = [slice(None)] * array.ndim
        dst[axis] = new_pos
        src[axis] = old_pos
        out[tuple(dst)] = array[tuple(src)]
    return out


# ---------------------------------------------------------------------- progress
def report_progress(progress: ProgressFn | None, epoch: int, total: int, loss: float) -> None:
    """Call a user progress callback if one was given (keeps model code one line)."""
    if progress is not None:
        progress(int(epoch), int(total), float(loss))


class TqdmProgress:
    """A ``progress`` callback that draws a tqdm bar, only when stderr is a terminal.

    Use as a context manager so the bar is closed even if the fit raises.
    """

    def __init__(self, desc: str = "fit", *, enabled: bool | None = None) -> None:
        self.desc = desc
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar: Any = None

    def __call__(self, epoch: int, total: int, loss: float) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.desc, unit="epoch", leave=False, file=sys.stderr)
        if self._bar.total != total:
            self._bar.total = total
        self._bar.n = epoch
        self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
