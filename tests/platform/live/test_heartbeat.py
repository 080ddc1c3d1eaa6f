"""A run beats from a thread of its own, so a short stale-heartbeat timeout
never fails a healthy run in a phase that calls no progress callback
(issue 14, item 10), and a cancel reaches a running fit at its next epoch.

In-process on the real PostgreSQL: the run executes in this thread while
another thread plays the stale-run check of the workers, as often as they do.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection

from crowdlab.live import adapter
from crowdlab.live.services import RunHeartbeat, heartbeat_interval_s, run_execute
from crowdlab.results.models import InferenceRun, RunStatus
from crowdlab.results.selectors import latest_published_run
from crowdlab.results.services import run_cancel, run_claim, run_create, runs_fail_stale

from .conftest import make_crowd_project

pytestmark = pytest.mark.django_db(transaction=True)


class _StaleChecker(threading.Thread):
    """Calls ``runs_fail_stale`` every ``every`` seconds until stopped."""

    def __init__(self, every: float) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.failed: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.wait(self.every):
                self.failed += runs_fail_stale()
        finally:
            connection.close()


def test_a_silent_phase_longer_than_the_timeout_does_not_fail_a_healthy_run(
    live_owner: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.INFERENCE_HEARTBEAT_TIMEOUT_S = 3
    assert heartbeat_interval_s() == 0.5
    project, *_ = make_crowd_project(owner=live_owner, n_items=12, name="Silent crowd")
    real_read = adapter.read_snapshot

    def slow_read(**kwargs: Any) -> Any:
        # A snapshot read that calls nothing back for longer than the stale
        # timeout, as reading 1M annotations and computing features does.
        time.sleep(4.5)
        return real_read(**kwargs)

    monkeypatch.setattr(adapter, "read_snapshot", slow_read)
    run = run_create(project=project)
    assert run is not None
    checker = _StaleChecker(every=0.25)
    checker.start()
    try:
        status = run_execute(run_id=run.pk, hostname="healthy@host")
    finally:
        checker.stop.set()
        checker.join(timeout=10)
    assert checker.failed == []
    assert status == RunStatus.PUBLISHED, InferenceRun.objects.get(pk=run.pk).error
    assert latest_published_run(project).pk == run.pk


def test_the_heartbeat_stops_with_the_run_and_notices_a_cancel(live_owner: Any, settings: Any) -> None:
    settings.INFERENCE_HEARTBEAT_TIMEOUT_S = 3
    project, *_ = make_crowd_project(owner=live_owner, n_items=4, name="Beating crowd")
    run = run_create(project=project)
    assert run is not None and run_claim(run_id=run.pk, worker="w@h/1")
    before = InferenceRun.objects.get(pk=run.pk).heartbeat_at
    with RunHeartbeat(run_id=run.pk, worker="w@h/1") as beat:
        time.sleep(1.3)
        beating = InferenceRun.objects.get(pk=run.pk).heartbeat_at
        assert beating > before and not beat.lost.is_set()
        run_cancel(run=InferenceRun.objects.get(pk=run.pk))
        assert beat.lost.wait(timeout=3)
    assert not beat._thread.is_alive()
    assert InferenceRun.objects.get(pk=run.pk).status == RunStatus.CANCELLED


def test_a_running_fit_stops_at_its_next_epoch_when_cancelled(live_owner: Any) -> None:
    project, *_ = make_crowd_project(owner=live_owner, n_items=20, name="Cancel crowd")
    first = run_create(project=project)
    assert first is not None and run_execute(run_id=first.pk) == RunStatus.PUBLISHED
    endless = run_create(project=project, params={"n_iter": 10_000_000, "tol": 0})
    assert endless is not None
    outcome: list[str] = []

    def execute() -> None:
        try:
            outcome.append(run_execute(run_id=endless.pk, hostname="busy@host"))
        finally:
            connection.close()

    worker = threading.Thread(target=execute, daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while InferenceRun.objects.get(pk=endless.pk).progress_epoch == 0:
        assert time.monotonic() < deadline, "the run never trained"
        time.sleep(0.1)
    run_cancel(run=InferenceRun.objects.get(pk=endless.pk))
    cancelled_at = time.monotonic()
    worker.join(timeout=30)
    assert not worker.is_alive() and outcome == [RunStatus.CANCELLED]
    assert time.monotonic() - cancelled_at < 5  # the next progress call, not the end of 10M iterations
    run = InferenceRun.objects.get(pk=endless.pk)
    assert run.status == RunStatus.CANCELLED and not run.labels.exists()
    assert latest_published_run(project).pk == first.pk
