"""Run life-cycle services: one active run, claims, stale runs, publish, retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from crowdlab.live import adapter
from crowdlab.live.triggers import sweep
from crowdlab.results.models import AggregatedLabel, AnnotatorConfusion, InferenceRun, RunStatus, RunTrigger
from crowdlab.results.selectors import latest_published_run
from crowdlab.results.services import (
    run_claim,
    run_create,
    run_fail,
    run_progress,
    run_publish,
    runs_fail_for_worker,
    runs_fail_stale,
    runs_purge_old,
)
from inference import make_model
from tests.platform.live.conftest import make_crowd_project

pytestmark = pytest.mark.django_db(transaction=True)


def _results(project_id: int) -> Any:
    snapshot = adapter.read_snapshot(project_id=project_id)
    model = make_model("mv").fit(snapshot.data)
    return adapter.build_results(snapshot=snapshot, model=model, timings={}, warm_start_from_id=None)


def _publish(project: Any, worker: str = "w/1") -> InferenceRun:
    run = run_create(project=project)
    assert run is not None and run_claim(run_id=run.pk, worker=worker)
    assert run_publish(run_id=run.pk, worker=worker, results=_results(project.pk)) == RunStatus.PUBLISHED
    run.refresh_from_db()
    return run


def test_one_active_run_per_project(requester: Any) -> None:
    project, *_ = make_crowd_project(owner=requester, n_items=5)
    first = run_create(project=project, trigger=RunTrigger.THRESHOLD)
    assert first is not None
    assert run_create(project=project) is None
    assert run_claim(run_id=first.pk, worker="w/1")
    assert run_create(project=project) is None  # running counts as active too
    assert run_fail(run_id=first.pk, error="boom")
    assert run_create(project=project) is not None


def test_bad_trigger_is_a_clear_error(requester: Any) -> None:
    project, *_ = make_crowd_project(owner=requester, n_items=2)
    with pytest.raises(ValueError, match="trigger: 'sometimes' is not one of threshold, timer, manual"):
        run_create(project=project, trigger="sometimes")


def test_claim_is_conditional(requester: Any) -> None:
    project, *_ = make_crowd_project(owner=requester, n_items=5)
    run = run_create(project=project)
    assert run is not None
    assert run_claim(run_id=run.pk, worker="a/1", task_id="t1")
    assert not run_claim(run_id=run.pk, worker="b/2", task_id="t2")
    # Only a retry of the same task may take it back.
    assert not run_claim(run_id=run.pk, worker="b/2", task_id="t2", reclaim=True)
    assert run_claim(run_id=run.pk, worker="a/3", task_id="t1", reclaim=True)
    assert not run_progress(run_id=run.pk, worker="a/1", epoch=1, total=5)  # no longer a/1's
    assert run_progress(run_id=run.pk, worker="a/3", epoch=2, total=5)
    run.refresh_from_db()
    assert (run.progress_epoch, run.progress_total, run.worker) == (2, 5, "a/3")


def test_stale_run_does_not_overwrite_a_newer_published_run(requester: Any) -> None:
    project, *_ = make_crowd_project(owner=requester, n_items=12)
    stale = run_create(project=project)
    assert stale is not None and run_claim(run_id=stale.pk, worker="slow/1")
    stale_results = _results(project.pk)
    # While it trained, a newer run published (e.g. the stale one had been
    # given up on); it is created directly as published to set the scene.
    newer = InferenceRun.objects.create(project=project, model=project.model, status=RunStatus.PUBLISHED)
    assert run_publish(run_id=stale.pk, worker="slow/1", results=stale_results) == RunStatus.DISCARDED
    stale.refresh_from_db()
    assert stale.status == RunStatus.DISCARDED and "newer run" in stale.error
    assert not AggregatedLabel.objects.filter(run=stale).exists()
    assert latest_published_run(project).pk == newer.pk


def test_a_run_failed_by_the_heartbeat_sweep_cannot_publish(requester: Any) -> None:
    project, *_ = make_crowd_project(owner=requester, n_items=8)
    run = run_create(project=project)
    assert run is not None and run_claim(run_id=run.pk, worker="hung/1")
    InferenceRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=120))
    assert runs_fail_stale(timeout_s=60) == [run.pk]
    assert run_publish(run_id=run.pk, worker="hung/1", results=_results(project.pk)) == RunStatus.FAILED
    run.refresh_from_db()
    assert "No heartbeat for 60 s" in run.error
    assert not AggregatedLabel.objects.filter(run=run).exists()


def test_restarted_worker_fails_only_its_own_runs(requester: Any) -> None:
    p1, *_ = make_crowd_project(owner=requester, n_items=3, name="p1")
    p2, *_ = make_crowd_project(owner=requester, n_items=3, name="p2")
    mine, other = run_create(project=p1), run_create(project=p2)
    assert mine and other
    run_claim(run_id=mine.pk, worker="node@a/10")
    run_claim(run_id=other.pk, worker="node@b/11")
    assert runs_fail_for_worker(hostname="node@a", reason="restarted") == [mine.pk]
    other.refresh_from_db()
    assert other.status == RunStatus.RUNNING


def test_publish_writes_all_rows_in_one_go(requester: Any) -> None:
    project, _truth, annotators, _items = make_crowd_project(owner=requester, n_items=25)
    run = _publish(project)
    assert run.status == RunStatus.PUBLISHED and run.published_at is not None
    rows = AggregatedLabel.objects.filter(run=run)
    assert rows.count() == 25
    row = rows.first()
    assert row is not None and abs(sum(row.probabilities) - 1.0) < 1e-4
    assert row.confidence == pytest.approx(max(row.probabilities), abs=1e-6)
    assert AnnotatorConfusion.objects.filter(run=run).count() == len(annotators)
    assert run.snapshot_annotation_id is not None and run.n_annotations == 25 * len(annotators)
    assert "publish" in run.timings


def test_retention_keeps_the_newest_runs_rows(requester: Any) -> None:
    project, *_ = make_crowd_project(owner=requester, n_items=6)
    runs = [_publish(project) for _ in range(4)]
    assert runs_purge_old(project_id=project.pk, keep=2) == 2
    kept = set(AggregatedLabel.objects.filter(run__project=project).values_list("run_id", flat=True))
    assert kept == {runs[2].pk, runs[3].pk}
    with_checkpoint = InferenceRun.objects.filter(project=project, checkpoint__isnull=False)
    assert list(with_checkpoint.values_list("id", flat=True)) == [runs[3].pk]


def test_sweep_starts_a_timer_run_and_fails_stale_ones(requester: Any) -> None:
    project, *_ = make_crowd_project(owner=requester, n_items=6)
    project.retrain_every_minutes = 5
    project.save(update_fields=["retrain_every_minutes"])
    from crowdlab.labelling.models import Annotation

    # New annotations that have waited less than T: nothing yet.
    outcome = sweep()
    assert outcome["started"] == []
    Annotation.objects.filter(project=project).update(created_at=timezone.now() - timedelta(minutes=6))
    outcome = sweep()
    assert len(outcome["started"]) == 1
    run = InferenceRun.objects.get(pk=outcome["started"][0])
    assert run.trigger == RunTrigger.TIMER and run.status == RunStatus.PENDING
    run_claim(run_id=run.pk, worker="gone/1")
    InferenceRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert sweep()["failed"] == [run.pk]
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


def test_the_stale_check_skips_a_run_row_being_written_and_never_waits(requester: Any) -> None:
    """A locked run row is being published (or beating) right now: its worker is
    alive, and a web request checking at trigger time must not wait on it."""
    import threading
    import time

    from django.db import connection, transaction

    project, *_ = make_crowd_project(owner=requester, n_items=4)
    run = run_create(project=project)
    assert run is not None and run_claim(run_id=run.pk, worker="publishing/1")
    InferenceRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=120))
    locked, release = threading.Event(), threading.Event()

    def publisher() -> None:
        try:
            with transaction.atomic():
                InferenceRun.objects.select_for_update().filter(pk=run.pk).first()
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        assert locked.wait(timeout=10)
        started = time.monotonic()
        assert runs_fail_stale(timeout_s=60) == []
        assert runs_fail_stale(timeout_s=60, project_id=project.pk) == []
        assert time.monotonic() - started < 2
    finally:
        release.set()
        thread.join(timeout=30)
    assert runs_fail_stale(timeout_s=60, project_id=project.pk + 1) == []
    assert runs_fail_stale(timeout_s=60, project_id=project.pk) == [run.pk]
