"""Writes of inference runs and their results.

The life of a run: ``run_create`` (pending; the partial unique index allows one
active run per project) → ``run_claim`` (a conditional UPDATE pending→running,
so two workers never execute it twice) → progress/heartbeat UPDATEs →
``run_publish`` (ONE transaction: rows + status flip) or ``run_fail``.
Nothing but the run row itself is written before the publish transaction, so
a worker killed mid-run leaves the published results as they were.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from time import perf_counter
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from crowdlab.db import copy_rows
from crowdlab.projects.models import Project

from .models import (
    AggregatedLabel,
    AnnotatorConfusion,
    CommonConfusion,
    GeneratedAnnotation,
    InferenceRun,
    RunStatus,
    RunTrigger,
)
from .selectors import project_max_annotation_id

logger = logging.getLogger(__name__)

# How many published runs keep their rows (labels, confusions); older ones keep
# only the run row (metrics, timings) so the table does not grow per run.
KEEP_PUBLISHED_RUNS: int = int(getattr(settings, "INFERENCE_KEEP_RUNS", 3))


@dataclass(frozen=True)
class LabelRow:
    item_id: int
    label: str
    confidence: float
    probabilities: Sequence[float]
    source: str
    n_annotations: int


@dataclass(frozen=True)
class ConfusionRow:
    annotator_id: int
    matrix: list[list[float]]
    omega: float | None
    omegas: list[float] | None
    n_annotations: int
    learned_accuracy: float | None


@dataclass(frozen=True)
class GeneratedRow:
    """One CrowdInG-generated annotation: published to its own table, never human work."""

    item_id: int
    annotator_id: int
    label: str
    probability: float


@dataclass
class RunResults:
    """Everything a run publishes, already shaped as rows (built by ``live.adapter``)."""

    snapshot_annotation_id: int
    n_items: int
    n_annotations: int
    n_annotators: int
    labels: list[LabelRow]
    confusions: list[ConfusionRow]
    common_confusion: list[list[float]] | None
    checkpoint: bytes | None
    loss_history: list[float] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warm_start_from_id: int | None = None
    fit_mode: str = ""
    fit_reason: str = ""
    features: str = ""
    generated: list[GeneratedRow] = field(default_factory=list)


# --------------------------------------------------------------------------- create / claim


def run_create(
    *,
    project: Project,
    trigger: str = RunTrigger.MANUAL,
    requested_by: Any | None = None,
    params: dict[str, Any] | None = None,
    cold: bool = False,
) -> InferenceRun | None:
    """Insert a pending run, or return None when the project already has an active one.

    ``cold`` asks for a full cold refit: the run ignores every earlier checkpoint.

    The partial unique index ``run_one_active_per_project`` makes this a
    conditional insert: of two concurrent triggers exactly one succeeds.
    """
    if trigger not in RunTrigger.values:
        raise ValueError(f"trigger: {trigger!r} is not one of {', '.join(RunTrigger.values)}.")
    try:
        with transaction.atomic():
            return InferenceRun.objects.create(
                project=project,
                model=project.model,
                trigger=trigger,
                requested_by=requested_by if getattr(requested_by, "is_authenticated", False) else None,
                params=dict(params or {}),
                cold_refit=bool(cold),
            )
    except IntegrityError as exc:
        if "run_one_active_per_project" not in str(exc):
            raise
        return None


def run_claim(*, run_id: int, worker: str, task_id: str = "", reclaim: bool = False) -> bool:
    """Flip pending → running for this worker; False when someone else has it.

    ``reclaim`` lets a Celery retry of the same task (same ``task_id``) take
    back a run it had claimed before a transient error interrupted it.
    """
    now = timezone.now()
    values = dict(status=RunStatus.RUNNING, worker=worker, started_at=now, heartbeat_at=now, error="")
    if task_id:
        values["task_id"] = task_id
    claimed = InferenceRun.objects.filter(id=run_id, status=RunStatus.PENDING).update(**values)
    if claimed == 0 and reclaim and task_id:
        claimed = InferenceRun.objects.filter(id=run_id, status=RunStatus.RUNNING, task_id=task_id).update(**values)
    return claimed == 1


def run_release(*, run_id: int, worker: str) -> bool:
    """Give a claimed run back (running → pending), e.g. before a retry."""
    return (
        InferenceRun.objects.filter(id=run_id, status=RunStatus.RUNNING, worker=worker).update(
            status=RunStatus.PENDING, worker=""
        )
        == 1
    )


def run_progress(*, run_id: int, worker: str, epoch: int, total: int) -> bool:
    """Short UPDATE of progress + heartbeat; False when the run is no longer ours."""
    return (
        InferenceRun.objects.filter(id=run_id, status=RunStatus.RUNNING, worker=worker).update(
            progress_epoch=max(0, int(epoch)), progress_total=max(0, int(total)), heartbeat_at=timezone.now()
        )
        == 1
    )


def run_heartbeat(*, run_id: int, worker: str) -> bool:
    """Refresh a running run's heartbeat; False when the run is no longer ours
    (cancelled, or failed by the stale-heartbeat check)."""
    return (
        InferenceRun.objects.filter(id=run_id, status=RunStatus.RUNNING, worker=worker).update(
            heartbeat_at=timezone.now()
        )
        == 1
    )


def run_fail(
    *,
    run_id: int,
    error: str,
    worker: str | None = None,
    timings: dict[str, float] | None = None,
    retry_after_annotation_id: int | None = None,
) -> bool:
    """Mark an active run failed with a readable reason (only if still active/ours).

    ``retry_after_annotation_id``: the run failed on its data, so automatic runs
    wait for annotations newer than this id (``live.triggers``).
    """
    qs = InferenceRun.objects.filter(id=run_id, status__in=(RunStatus.PENDING, RunStatus.RUNNING))
    if worker is not None:
        qs = qs.filter(worker=worker)
    values: dict[str, Any] = dict(status=RunStatus.FAILED, error=error[:5000], finished_at=timezone.now())
    if timings is not None:
        values["timings"] = timings
    if retry_after_annotation_id is not None:
        values["retry_after_annotation_id"] = int(retry_after_annotation_id)
    return qs.update(**values) == 1


class RunNotActive(Exception):
    """The run is not pending or running (any more): there is nothing to cancel."""

    def __init__(self, run: InferenceRun) -> None:
        super().__init__(f"Run {run.pk} is {run.status}, not pending or running; there is nothing to cancel.")
        self.run = run


@transaction.atomic
def run_cancel(*, run: InferenceRun, cancelled_by: Any | None = None) -> InferenceRun:
    """Cancel a pending or running run; returns it (reloaded) with status ``cancelled``.

    One conditional UPDATE: a pending run can no longer be claimed (claims need
    ``pending``), and a running run's worker finds the row no longer ``running``
    at its next progress call or heartbeat and stops (``live.services``); its
    publish would find the same and write nothing, so published results stay
    as they were. Automatic runs then wait for annotations newer than those the
    project had at the cancel: restarting the same run a minute later would
    undo the cancel. Raises ``RunNotActive`` when the run already finished.
    """
    who = getattr(cancelled_by, "username", None) if getattr(cancelled_by, "is_authenticated", False) else None
    updated = InferenceRun.objects.filter(pk=run.pk, status__in=(RunStatus.PENDING, RunStatus.RUNNING)).update(
        status=RunStatus.CANCELLED,
        finished_at=timezone.now(),
        error=f"Cancelled by {who}." if who else "Cancelled.",
        retry_after_annotation_id=project_max_annotation_id(project_id=run.project_id),
    )
    fresh = InferenceRun.objects.defer("checkpoint").get(pk=run.pk)
    if updated != 1:
        raise RunNotActive(fresh)
    logger.info("run %s cancelled%s", run.pk, f" by {who}" if who else "")
    return fresh


def runs_fail_stale(*, timeout_s: int | None = None, project_id: int | None = None) -> list[int]:
    """Fail running runs whose heartbeat is older than ``timeout_s`` (default
    ``INFERENCE_HEARTBEAT_TIMEOUT_S``): their worker was killed. Returns their ids.

    A live run beats every sixth of the timeout from a thread of its own,
    whatever phase it is in, so only a dead (or frozen) process goes stale.
    One statement; ``SKIP LOCKED`` because a locked run row is being written
    right now (its publish transaction, or a heartbeat): that worker is alive,
    and a web request that checks at trigger time must not wait for it.
    """
    timeout = int(timeout_s if timeout_s is not None else settings.INFERENCE_HEARTBEAT_TIMEOUT_S)
    cutoff = timezone.now() - timedelta(seconds=timeout)
    error = f"No heartbeat for {timeout} s: the worker died (killed) or froze; the run was abandoned."
    project_filter = "AND project_id = %s" if project_id is not None else ""
    params: list[Any] = [RunStatus.FAILED, error, timezone.now(), RunStatus.RUNNING, cutoff]
    if project_id is not None:
        params.append(project_id)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE results_inferencerun SET status = %s, error = %s, finished_at = %s
                WHERE id IN (SELECT id FROM results_inferencerun
                             WHERE status = %s AND heartbeat_at < %s {project_filter}
                             FOR UPDATE SKIP LOCKED)
                RETURNING id""",
            params,
        )
        return sorted(row[0] for row in cursor.fetchall())


def runs_fail_for_worker(*, hostname: str, reason: str) -> list[int]:
    """Fail the running runs a worker node claimed in its previous life (restart)."""
    qs = InferenceRun.objects.filter(status=RunStatus.RUNNING, worker__startswith=f"{hostname}/")
    ids = list(qs.values_list("id", flat=True))
    qs.filter(id__in=ids).update(status=RunStatus.FAILED, error=reason, finished_at=timezone.now())
    return ids


# --------------------------------------------------------------------------- publish


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def run_publish(*, run_id: int, worker: str, results: RunResults) -> str:
    """Publish a run's results in ONE transaction; returns the run's final status.

    The project row is locked (FOR NO KEY UPDATE: annotation inserts, which
    only take KEY SHARE on it, are not blocked) to serialise publishers. If a
    newer run already published, this one is discarded; if the run is no
    longer ours (failed by the heartbeat sweep meanwhile), nothing is written.
    """
    started = perf_counter()
    with transaction.atomic():
        run = InferenceRun.objects.select_related("project").defer("checkpoint").get(pk=run_id)
        Project.objects.select_for_update(no_key=True).filter(pk=run.project_id).first()
        run = InferenceRun.objects.select_for_update().defer("checkpoint").get(pk=run_id)
        if run.status != RunStatus.RUNNING or run.worker != worker:
            logger.warning("run %s: not publishing, status is %s (worker %r)", run_id, run.status, run.worker)
            return run.status
        now = timezone.now()
        newer = InferenceRun.objects.filter(
            project_id=run.project_id, status=RunStatus.PUBLISHED, id__gt=run.id
        ).exists()
        if newer:
            InferenceRun.objects.filter(pk=run_id).update(
                status=RunStatus.DISCARDED,
                finished_at=now,
                error="A newer run published first; these results were discarded.",
            )
            return RunStatus.DISCARDED

        copy_rows(
            AggregatedLabel._meta.db_table,
            ("run_id", "item_id", "label", "confidence", "probabilities", "source", "n_annotations"),
            (
                (
                    run_id,
                    row.item_id,
                    row.label,
                    float(row.confidence),
                    _json(list(row.probabilities)),
                    row.source,
                    int(row.n_annotations),
                )
                for row in results.labels
            ),
        )
        copy_rows(
            AnnotatorConfusion._meta.db_table,
            ("run_id", "annotator_id", "matrix", "omega", "omegas", "n_annotations", "learned_accuracy"),
            (
                (
                    run_id,
                    row.annotator_id,
                    _json(row.matrix),
                    row.omega,
                    None if row.omegas is None else _json(row.omegas),
                    int(row.n_annotations),
                    row.learned_accuracy,
                )
                for row in results.confusions
            ),
        )
        # Generated annotations go to their own table in the same transaction, so
        # readers see them with the labels of their run (never in labelling_annotation).
        if results.generated:
            copy_rows(
                GeneratedAnnotation._meta.db_table,
                ("run_id", "item_id", "annotator_id", "label", "probability"),
                (
                    (run_id, row.item_id, row.annotator_id, row.label, float(row.probability))
                    for row in results.generated
                ),
            )
        if results.common_confusion is not None:
            CommonConfusion.objects.create(run_id=run_id, matrix=results.common_confusion)
        timings = dict(results.timings)
        timings["publish"] = round(perf_counter() - started, 4)
        now = timezone.now()
        InferenceRun.objects.filter(pk=run_id).update(
            status=RunStatus.PUBLISHED,
            snapshot_annotation_id=results.snapshot_annotation_id,
            n_items=results.n_items,
            n_annotations=results.n_annotations,
            n_annotators=results.n_annotators,
            loss_history=[float(x) for x in results.loss_history],
            final_loss=float(results.loss_history[-1]) if results.loss_history else None,
            metrics=results.metrics,
            timings=timings,
            checkpoint=results.checkpoint,
            warm_start_from_id=results.warm_start_from_id,
            fit_mode=results.fit_mode,
            fit_reason=results.fit_reason[:2000],
            features=results.features[:255],
            progress_epoch=max(run.progress_epoch, run.progress_total),
            heartbeat_at=now,
            finished_at=now,
            published_at=now,
        )
        before_commit = perf_counter()
    # The COMMIT is measured after the fact: Django's foreign keys are
    # DEFERRABLE INITIALLY DEFERRED, so the FK checks of every copied row run
    # here (~0.5–1 s for 30k labels), and readers only see the run after it.
    commit_s = round(perf_counter() - before_commit, 4)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE results_inferencerun SET timings = timings || %s::jsonb WHERE id = %s",
            [_json({"commit": commit_s}), run_id],
        )
    return RunStatus.PUBLISHED


def runs_purge_old(*, project_id: int, keep: int = KEEP_PUBLISHED_RUNS) -> int:
    """Delete the result rows of published runs older than the ``keep`` newest.

    The old run rows stay (history of metrics and timings) but lose their
    checkpoint; the newest published checkpoint is all warm start needs.
    Returns the number of runs purged.
    """
    keep = max(1, keep)
    published = list(
        InferenceRun.objects.filter(project_id=project_id, status=RunStatus.PUBLISHED)
        .order_by("-id")
        .values_list("id", flat=True)
    )
    old = published[keep:]
    if not old:
        return 0
    with transaction.atomic():
        AggregatedLabel.objects.filter(run_id__in=old).delete()
        AnnotatorConfusion.objects.filter(run_id__in=old).delete()
        CommonConfusion.objects.filter(run_id__in=old).delete()
        GeneratedAnnotation.objects.filter(run_id__in=old).delete()
        InferenceRun.objects.filter(id__in=published[1:], checkpoint__isnull=False).update(checkpoint=None)
    return len(old)
