"""Executing one inference run: claim → snapshot → fit (warm start) → publish.

Nothing is written before the publish transaction except the run row's own
status/progress, so a worker killed at any point leaves the last published
results intact; the heartbeat sweep or the restarted worker then fails the run.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from time import monotonic, perf_counter
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError

from inference import make_model
from inference.models import MODELS
from results.models import InferenceRun, RunStatus
from results.selectors import warm_start_run
from results.services import (
    run_claim,
    run_fail,
    run_progress,
    run_publish,
    run_release,
    runs_fail_for_worker,
    runs_purge_old,
)

from . import adapter

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
    field_names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
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
    """The run row is no longer ours (failed by the sweep); stop training."""


class _Progress:
    """``progress(epoch, total, loss)`` callback writing throttled UPDATEs + heartbeat."""

    def __init__(self, run_id: int, worker: str) -> None:
        self.run_id = run_id
        self.worker = worker
        self.last = 0.0

    def __call__(self, epoch: int, total: int, loss: float) -> None:
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
    timings: dict[str, float] = {}
    started = perf_counter()
    try:
        t = perf_counter()
        snapshot = adapter.read_snapshot(
            project_id=run.project_id, with_features=run.model not in FEATURELESS_MODELS
        )
        timings["snapshot"] = round(perf_counter() - t, 4)

        t = perf_counter()
        model = make_model(
            run.model, **_model_params(run.model, dict(run.params or {}), project_k=run.project.k)
        )
        init, init_run_id, no_init_reason = _load_init(run)
        timings["load_checkpoint"] = round(perf_counter() - t, 4)

        t = perf_counter()
        model.fit(snapshot.data, init=init, progress=_Progress(run_id, worker))
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
        status = run_publish(run_id=run_id, worker=worker, results=results)
    except RunAborted as exc:
        logger.warning("%s", exc)
        return "aborted"
    except (OperationalError, InterfaceError):
        # Transient: hand the run back so the retried task can claim it again.
        try:
            run_release(run_id=run_id, worker=worker)
        except (OperationalError, InterfaceError):
            logger.warning("run %s: database unreachable; the heartbeat sweep will fail the run", run_id)
        raise
    except Exception as exc:  # noqa: BLE001 - any non-transient error ends the run, readably
        if isinstance(exc, ValueError):
            logger.warning("run %s failed: %s", run_id, exc)  # bad data: the reason is the whole story
        else:
            logger.exception("run %s failed", run_id)
        timings["total"] = round(perf_counter() - started, 4)
        reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
        run_fail(run_id=run_id, worker=worker, error=reason, timings=timings)
        return RunStatus.FAILED

    if status == RunStatus.PUBLISHED:
        purged = runs_purge_old(project_id=run.project_id)
        logger.info("run %s published in %.2f s (purged %d old runs)", run_id, perf_counter() - started, purged)
        # Annotations that arrived while this run trained may already cross the threshold.
        from .triggers import notify_new_annotations

        notify_new_annotations(run.project_id)
    return status


def fail_runs_of_restarted_worker(*, hostname: str) -> list[int]:
    """Called when a worker node (re)starts: its previous life's runs are dead."""
    return runs_fail_for_worker(
        hostname=hostname,
        reason=f"The worker {hostname} restarted while this run was running (killed mid-run); the run was abandoned.",
    )
