"""Executing one inference run: claim → snapshot → fit (warm start) → publish.

Nothing is written before the publish transaction except the run row's own
status/progress/heartbeat, so a worker killed at any point leaves the last
published results intact; the stale-heartbeat check (any live worker, the beat
sweep, the next trigger) or the restarted worker then fails the run.

A cancelled run (``results.services.run_cancel``) is no longer ``running``:
the next progress call or heartbeat finds that and the fit stops at the next
epoch; the run stays ``cancelled`` and publishes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from contextlib import nullcontext
from time import monotonic, perf_counter
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from crowdlab.results.models import InferenceRun, RunStatus
from crowdlab.results.selectors import project_max_annotation_id, warm_start_run
from crowdlab.results.services import (
    run_claim,
    run_fail,
    run_heartbeat,
    run_progress,
    run_publish,
    run_release,
    runs_fail_for_worker,
    runs_purge_old,
)
from inference import make_model
from inference.models import MODELS

from . import adapter
from .embedding import embed_missing_items
from .triggers import notify_new_annotations

logger = logging.getLogger(__name__)

# Progress UPDATEs at most this often: an epoch can take milliseconds.
PROGRESS_INTERVAL_S = 0.5

# Models whose fit ignores item features: skip reading/computing them
# (text features cost seconds on 30k items).
FEATURELESS_MODELS = frozenset({"mv", "ds"})


# Live-run defaults per model, under the run's own params. CrowdInG's 20 CRM
# epochs are sized for the offline benchmark; on a synthetic 2,000-item sparse
# crowd (4 classes, 40 annotators, 1-3 labels per item) 8 epochs gave the same
# aggregated accuracy (0.984) in 6.6 s instead of 25.3 s of fit, and warm runs
# use the model's own ``warm_crowding_epochs`` anyway.
LIVE_DEFAULTS: dict[str, dict[str, Any]] = {"crowding": {"crowding_epochs": 8}}


def _model_params(name: str, params: dict[str, Any], *, project_k: int | None = None) -> dict[str, Any]:
    """Defaults the platform imposes (seed, thread cap, the project's k) under the run's own params."""
    cls = MODELS.get(name)
    if cls is None:
        raise ValueError(f"unknown model {name!r}; allowed: {sorted(MODELS)}")
    field_names: set[str] = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    defaults: dict[str, Any] = {"seed": 0}
    if "num_threads" in field_names:
        defaults["num_threads"] = settings.INFERENCE_THREADS
    if "k" in field_names and project_k:
        # CrowdInG generates annotations up to the project's "distinct annotators
        # wanted per item", the same k that decides when an item is done.
        defaults["k"] = int(project_k)
    defaults.update({key: value for key, value in LIVE_DEFAULTS.get(name, {}).items() if key in field_names})
    return {**defaults, **params}


class RunAborted(Exception):
    """The run row is no longer ours (cancelled, or failed as stale); stop training."""


def heartbeat_interval_s() -> float:
    """How often a running run beats: a sixth of the stale timeout, so five
    beats may be late before the run is taken for dead."""
    return max(0.5, settings.INFERENCE_HEARTBEAT_TIMEOUT_S / 6)


class RunHeartbeat:
    """Refreshes a run's ``heartbeat_at`` from a thread of its own while the run executes.

    Why a thread: the progress callback only runs inside the fit, while the
    snapshot read, the feature computation, the final posterior and the publish
    transaction call nothing for seconds (minutes at scale); a stale-heartbeat
    timeout short enough to fail a killed worker's run within a minute must
    not fail a healthy run in those phases. Torch, numpy and psycopg release
    the GIL in their long calls and pure Python hands it over every few
    milliseconds, so the thread keeps beating. It dies with its process, so a
    killed worker's run goes stale.

    The thread uses its own database connection (Django's are per thread) and
    closes it when it stops. ``lost`` is set once the row is no longer ours
    (cancelled, failed as stale): the progress callback then stops the fit.
    During the publish transaction its UPDATE waits for the run row's lock and
    then finds the run published; that is the end anyway.
    """

    def __init__(self, *, run_id: int, worker: str, interval_s: float | None = None) -> None:
        self.run_id = run_id
        self.worker = worker
        self.interval_s = interval_s if interval_s is not None else heartbeat_interval_s()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"run-{run_id}-heartbeat", daemon=True)

    def __enter__(self) -> RunHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 30)

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    ours = run_heartbeat(run_id=self.run_id, worker=self.worker)
                except (OperationalError, InterfaceError) as exc:
                    # The database is restarting: keep trying; the run itself will
                    # hit the same error and retry, or recover and go on.
                    logger.warning("run %s: heartbeat failed (%s); retrying", self.run_id, exc)
                    connection.close()
                    continue
                if not ours:
                    self.lost.set()
                    return
        finally:
            connection.close()


class _Progress:
    """``progress(epoch, total, loss)`` callback writing throttled UPDATEs + heartbeat."""

    def __init__(self, run_id: int, worker: str, heartbeat: RunHeartbeat | None = None) -> None:
        self.run_id = run_id
        self.worker = worker
        self.heartbeat = heartbeat
        self.last = 0.0

    def __call__(self, epoch: int, total: int, loss: float) -> None:
        # Every epoch: the heartbeat thread may already know the run was cancelled.
        if self.heartbeat is not None and self.heartbeat.lost.is_set():
            raise RunAborted(f"run {self.run_id} is no longer running on {self.worker}")
        now = monotonic()
        if now - self.last < PROGRESS_INTERVAL_S and epoch < total:
            return
        self.last = now
        if not run_progress(run_id=self.run_id, worker=self.worker, epoch=epoch, total=total):
            raise RunAborted(f"run {self.run_id} is no longer running on {self.worker}")


def worker_identity(hostname: str | None = None) -> str:
    """``hostname/pid``: the node name lets a restarted worker find its orphans."""
    return f"{hostname or 'local'}/{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail_if_orphaned(run_id: int, hostname: str) -> bool:
    """A redelivered task finds its run 'running' on a dead process of this node: fail it."""
    row = InferenceRun.objects.filter(id=run_id, status=RunStatus.RUNNING).values_list("worker", flat=True).first()
    if not row or not row.startswith(f"{hostname}/"):
        return False
    try:
        pid = int(row.rsplit("/", 1)[1])
    except ValueError:
        return False
    if pid == os.getpid() or _pid_alive(pid):
        return False
    return run_fail(
        run_id=run_id,
        worker=row,
        error=f"The worker process {row} died mid-run (killed); the run was abandoned.",
    )


def _load_init(run: InferenceRun) -> tuple[Any | None, int | None, str]:
    """The previous published checkpoint of the same model and its run id, or
    (None, None, why there is none). The model decides whether to warm-start from it."""
    if run.cold_refit:
        return None, None, "a full cold refit was requested"
    if not MODELS[run.model].supports_warm_start:
        return None, None, ""  # the model says why (it always fits from scratch)
    previous = warm_start_run(project_id=run.project_id, model=run.model)
    if previous is None or previous.checkpoint is None:
        return None, None, f"no earlier published {run.model} run with a checkpoint"
    cls = MODELS[run.model]
    try:
        return cls.loads(bytes(previous.checkpoint)), previous.pk, ""
    except (ValueError, TypeError, KeyError, RuntimeError, EOFError) as exc:
        # A checkpoint from an incompatible model version: train cold instead.
        logger.warning("run %s: checkpoint of run %s unusable (%s); cold start", run.pk, previous.pk, exc)
        return None, None, f"the checkpoint of run {previous.pk} could not be loaded ({exc})"


def run_execute(*, run_id: int, hostname: str = "local", task_id: str = "", reclaim: bool = False) -> str:
    """Execute a pending run; returns its final status (or 'skipped').

    Transient database errors propagate (after giving the run back) so the
    Celery task retries with backoff; any other error fails the run with a
    readable reason and is NOT re-raised, so bad data never crash-loops.
    """
    worker = worker_identity(hostname)
    if not run_claim(run_id=run_id, worker=worker, task_id=task_id, reclaim=reclaim):
        if _fail_if_orphaned(run_id, hostname):
            logger.warning("run %s: failed, its worker died mid-run", run_id)
            return RunStatus.FAILED
        logger.info("run %s: not pending (claimed elsewhere or finished); skipping", run_id)
        return "skipped"

    run = InferenceRun.objects.select_related("project").defer("checkpoint").filter(pk=run_id).first()
    if run is None:  # deleted with its project between the claim and now
        return "skipped"
    # Inside an outer transaction (a test executing a run in its own transaction)
    # another connection cannot see the run row, and nobody watches its heartbeat.
    heartbeat = RunHeartbeat(run_id=run_id, worker=worker) if not connection.in_atomic_block else None
    with heartbeat or nullcontext():
        status = _execute_claimed(run=run, worker=worker, heartbeat=heartbeat)

    if status == RunStatus.PUBLISHED:
        purged = runs_purge_old(project_id=run.project_id)
        logger.info("run %s published (purged %d old runs)", run_id, purged)
        # Annotations that arrived while this run trained may already cross the threshold.
        notify_new_annotations(run.project_id)
    return status


def _execute_claimed(*, run: InferenceRun, worker: str, heartbeat: RunHeartbeat | None) -> str:
    """Snapshot → fit → publish of a run this worker claimed; its final status."""
    run_id = run.pk
    timings: dict[str, float] = {}
    started = perf_counter()
    snapshot: adapter.Snapshot | None = None
    embedded_now = 0
    try:
        if run.model not in FEATURELESS_MODELS:
            # Text items embedded once, before the snapshot: usually the embedding
            # task did it at import and this finds nothing to do (no model load).
            t = perf_counter()
            embedded_now = embed_missing_items(project_id=run.project_id)
            if embedded_now:
                timings["embed"] = round(perf_counter() - t, 4)
        t = perf_counter()
        snapshot = adapter.read_snapshot(project_id=run.project_id, with_features=run.model not in FEATURELESS_MODELS)
        timings["snapshot"] = round(perf_counter() - t, 4)

        t = perf_counter()
        model = make_model(run.model, **_model_params(run.model, dict(run.params or {}), project_k=run.project.k))
        init, init_run_id, no_init_reason = _load_init(run)
        timings["load_checkpoint"] = round(perf_counter() - t, 4)

        t = perf_counter()
        model.fit(snapshot.data, init=init, progress=_Progress(run_id, worker, heartbeat))
        timings["fit"] = round(perf_counter() - t, 4)

        # The model decides warm or cold from the checkpoint it was offered (see
        # CrowdModel._plan_start); a run only records a warm start it really made.
        warm = model.fit_mode_ == "warm"
        t = perf_counter()
        results = adapter.build_results(
            snapshot=snapshot, model=model, timings=timings, warm_start_from_id=init_run_id if warm else None
        )
        results.fit_mode = model.fit_mode_
        results.fit_reason = no_init_reason or model.fit_reason_
        timings["prepare"] = round(perf_counter() - t, 4)
        timings["total_before_publish"] = round(perf_counter() - started, 4)
        results.timings = timings
        results.metrics["warm_start"] = warm
        # Items this run had to embed itself (0 once the embedding task has run):
        # a retrain over stored vectors never embeds again.
        results.metrics["embedded_items"] = embedded_now
        status = run_publish(run_id=run_id, worker=worker, results=results)
    except RunAborted as exc:
        final = InferenceRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
        if final == RunStatus.CANCELLED:
            logger.info("run %s: cancelled; training stopped", run_id)
            return RunStatus.CANCELLED
        logger.warning("%s", exc)
        return "aborted"
    except (OperationalError, InterfaceError):
        # Transient: hand the run back so the retried task can claim it again.
        try:
            run_release(run_id=run_id, worker=worker)
        except (OperationalError, InterfaceError):
            logger.warning("run %s: database unreachable; the heartbeat sweep will fail the run", run_id)
        raise
    except Exception as exc:
        if isinstance(exc, ValueError):
            logger.warning("run %s failed: %s", run_id, exc)  # bad data: the reason is the whole story
        else:
            logger.exception("run %s failed", run_id)
        timings["total"] = round(perf_counter() - started, 4)
        reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
        run_fail(
            run_id=run_id,
            worker=worker,
            error=reason,
            timings=timings,
            retry_after_annotation_id=_retry_after(run, snapshot, exc),
        )
        return RunStatus.FAILED
    if status == RunStatus.PUBLISHED:
        logger.info("run %s published in %.2f s", run_id, perf_counter() - started)
    return status


def _retry_after(run: InferenceRun, snapshot: adapter.Snapshot | None, exc: Exception) -> int | None:
    """The annotation id automatic runs must wait past after this failure, or None.

    A run with the project's own settings (no ``params``: what the threshold and
    the timer start) that failed on the data fails the same way on the same
    annotations, e.g. when every label is one class: without this the timer
    started a failing run every few minutes, forever. A run with custom
    ``params`` says nothing about the automatic runs, so it holds nothing back.
    """
    if run.params:
        return None
    if snapshot is not None:
        return snapshot.snapshot_annotation_id
    known = getattr(exc, "snapshot_annotation_id", None)
    if known is not None:
        return int(known)
    try:
        return project_max_annotation_id(project_id=run.project_id)
    except (OperationalError, InterfaceError):
        return None  # the failure still gets recorded; the back-off is best effort


def fail_runs_of_restarted_worker(*, hostname: str) -> list[int]:
    """Called when a worker node (re)starts: its previous life's runs are dead."""
    return runs_fail_for_worker(
        hostname=hostname,
        reason=f"The worker {hostname} restarted while this run was running (killed mid-run); the run was abandoned.",
    )
