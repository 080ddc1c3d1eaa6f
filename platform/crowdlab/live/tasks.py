"""Celery tasks: thin adapters over ``live.services`` / ``live.triggers``.

Routed to ``settings.CELERY_INFERENCE_QUEUE`` by ``CELERY_TASK_ROUTES``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import kombu.exceptions
import redis.exceptions
from celery import shared_task
from celery.signals import worker_process_init, worker_ready, worker_shutdown
from django.conf import settings
from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
)

from crowdlab.results.services import runs_fail_stale

from . import triggers
from .embedding import embed_missing_items
from .services import fail_runs_of_restarted_worker, run_execute

logger = logging.getLogger(__name__)

# Only connection-level failures are worth retrying; ValueError (bad data) and
# model errors end the run inside run_execute and never reach Celery.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


@shared_task(
    bind=True,
    name="live.tasks.execute_run",
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.INFERENCE_RUN_TIMEOUT_S,
    time_limit=settings.INFERENCE_RUN_TIMEOUT_S + 60,
)
def execute_run(self: Any, run_id: int) -> str:
    return run_execute(
        run_id=int(run_id),
        hostname=self.request.hostname or "local",
        task_id=self.request.id or "",
        reclaim=bool(self.request.retries),
    )


@shared_task(
    name="live.tasks.embed_items",
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=2,
    max_retries=5,
    acks_late=True,
    soft_time_limit=settings.INFERENCE_RUN_TIMEOUT_S,
    time_limit=settings.INFERENCE_RUN_TIMEOUT_S + 60,
)
def embed_items(project_id: int) -> int:
    """Embed the project's text items that have no stored vector (logs progress per batch)."""
    return embed_missing_items(project_id=int(project_id))


@shared_task(name="live.tasks.sweep", autoretry_for=TRANSIENT_ERRORS, retry_backoff=True, max_retries=3)
def sweep() -> dict[str, list[int]]:
    return triggers.sweep()


@shared_task(name="live.tasks.notify_new_annotations", ignore_result=True)
def notify_new_annotations(project_id: int) -> None:
    """For callers outside the web process (e.g. a bulk import job)."""
    triggers.notify_new_annotations(int(project_id))


@worker_process_init.connect
def _limit_threads(**_kwargs: Any) -> None:
    # Two cores are shared by web, worker and DB: cap torch's intra-op pool.
    # Imported here, not at the top: only pool processes need torch (seconds
    # to import, hundreds of MB), not the main process, beat or the web.
    import torch

    torch.set_num_threads(settings.INFERENCE_THREADS)


class StaleRunWatchdog:
    """Fails runs whose heartbeat went stale, from every worker's main process.

    Why here and not only in the beat sweep: a killed worker's run must be
    failed within a minute whatever name its replacement has (containers come
    back with new host names), and the sweep runs every minute on the same
    queue as the runs. Every live worker checks every third of
    ``INFERENCE_HEARTBEAT_TIMEOUT_S`` from a daemon thread (one conditional
    UPDATE; concurrent checks are harmless). The connection is closed after
    each check so that a pool process forked meanwhile never shares it.
    """

    def __init__(self, interval_s: float | None = None) -> None:
        self.interval_s = interval_s if interval_s is not None else max(1.0, settings.INFERENCE_HEARTBEAT_TIMEOUT_S / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stale-run-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def check(self) -> list[int]:
        try:
            failed = runs_fail_stale()
        except (OperationalError, InterfaceError) as exc:
            logger.warning("stale-run check: database unreachable (%s); next try in %.0f s", exc, self.interval_s)
            return []
        finally:
            connection.close()
        if failed:
            logger.warning("failed runs whose worker stopped beating: %s", failed)
        return failed

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()


_watchdog: StaleRunWatchdog | None = None


@worker_ready.connect
def _start_watchdog(sender: Any = None, **_kwargs: Any) -> None:
    global _watchdog
    if _watchdog is None:
        _watchdog = StaleRunWatchdog()
        _watchdog.start()


@worker_shutdown.connect
def _stop_watchdog(**_kwargs: Any) -> None:
    global _watchdog
    if _watchdog is not None:
        _watchdog.stop()
        _watchdog = None


@worker_ready.connect
def _fail_orphaned_runs(sender: Any = None, **_kwargs: Any) -> None:
    """A (re)started worker node fails the runs its previous life left running."""
    hostname = getattr(sender, "hostname", None)
    if not hostname:
        return
    close_old_connections()
    try:
        failed = fail_runs_of_restarted_worker(hostname=hostname)
    except (OperationalError, InterfaceError) as exc:
        logger.warning("worker %s: could not check for orphaned runs (%s)", hostname, exc)
        return
    finally:
        # Never let prefork children inherit the parent's database socket.
        close_old_connections()
        connection.close()
    if failed:
        logger.warning("worker %s restarted: failed orphaned runs %s", hostname, failed)
