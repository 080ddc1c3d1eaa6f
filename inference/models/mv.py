"""Majority vote: the baseline every other aggregator must beat."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from inference.data import CrowdData
from inference.models.base import CrowdModel, ProgressFn, report_progress

__all__ = ["MajorityVote", "class_prior", "confusions_against", "vote_labels"]


def class_prior(data: CrowdData, smoothing: float = 1.0) -> np.ndarray:
    """(C,) label frequency over all annotations, Laplace-smoothed so no class has zero mass."""
    counts = np.bincount(data.label_idx, minlength=data.n_classes).astype(np.float64) + smoothing
    out: np.ndarray = counts / counts.sum()  # numpy's stubs type this expression as Any
    return out


def vote_labels(counts: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Argmax of vote counts; ties go to the class more frequent overall, then the lowest index.

    Adding a sub-vote bonus ranked by the prior keeps tie-breaking deterministic and
    independent of item order, without ever overturning a real majority.
    """
    rank = np.argsort(np.argsort(-prior, kind="stable"), kind="stable")  # 0 = most frequent
    bonus = (len(prior) - rank) / (len(prior) + 1.0)  # in (0, 1): below one vote
    out: np.ndarray = np.argmax(counts + bonus[None, :] * 0.5, axis=1).astype(
        np.int64
    )  # numpy's stubs type this expression as Any
    return out


def confusions_against(data: CrowdData, truth: np.ndarray, *, smoothing: float = 0.0) -> np.ndarray:
    """(R, C, C) per-annotator confusions counted against ``truth``: hard (N,) labels or (N, C) soft.

    Row = true class. Rows with no mass (an annotator never saw that class) are uniform,
    which keeps every row stochastic without inventing skill.
    """
    r, c = data.n_annotators, data.n_classes
    key = data.annotator_idx * c + data.label_idx  # (annotator, given label)
    if truth.ndim == 1:
        flat = (key * c + truth[data.item_idx]).astype(np.int64)
        acc = np.bincount(flat, minlength=r * c * c).astype(np.float64).reshape(r, c, c)
    else:
        acc = np.zeros((r * c, c), dtype=np.float64)
        np.add.at(acc, key, truth[data.item_idx])
        acc = acc.reshape(r, c, c)
    conf = acc.transpose(0, 2, 1) + smoothing  # -> (annotator, true, given)
    rows = conf.sum(axis=2, keepdims=True)
    return np.where(rows > 0, conf / np.where(rows > 0, rows, 1.0), 1.0 / c)


@dataclass(eq=False)
class MajorityVote(CrowdModel):
    """Per-item majority vote.

    ``probas_`` are the normalised vote counts; unlabelled items get the overall label
    frequency (and its argmax as label), flagged by ``labelled_mask_ == False``.
    ``confusions_`` are counted against the majority labels (``smoothing`` pseudo-counts).
    """

    name: ClassVar[str] = "mv"

    smoothing: float = 0.0
    seed: int = 0  # unused (MV is deterministic); kept so every model takes a seed

    def __post_init__(self) -> None:
        if self.smoothing < 0:
            raise ValueError(f"smoothing must be >= 0, got {self.smoothing}")

    def fit(
        self,
        data: CrowdData,
        *,
        init: CrowdModel | None = None,
        progress: ProgressFn | None = None,
    ) -> MajorityVote:
        t0 = self._start_fit(data)
        self._plan_start(init, data)  # always cold: records why
        self._check_init(init)  # accepted and ignored: MV has nothing to warm-start
        counts = data.counts()
        prior = class_prior(data)
        totals = counts.sum(axis=1, keepdims=True)
        labelled = totals[:, 0] > 0
        self.probas_ = np.where(
            labelled[:, None], counts / np.where(labelled, totals[:, 0], 1.0)[:, None], prior[None, :]
        )
        self.labels_ = vote_labels(counts, prior)
        self.labels_[~labelled] = int(np.argmax(prior))
        self.confusions_ = confusions_against(data, self.labels_, smoothing=self.smoothing)
        self.loss_history_ = []
        self.n_epochs_ = 1
        self.fit_seconds_ = time.perf_counter() - t0
        report_progress(progress, 1, 1, 0.0)
        return self
