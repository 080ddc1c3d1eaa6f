"""Automatic runs back off after a run that cannot succeed (issue 14, item 12),
and a trigger replaces a run whose worker was killed (item 10).

In-process (``run_execute``, the real PostgreSQL): the timer and the threshold
must not start a failing run every few minutes forever.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from crowdlab.labelling.models import Annotation
from crowdlab.live.services import run_execute
from crowdlab.live.tasks import StaleRunWatchdog
from crowdlab.live.triggers import new_annotations_count, notify_new_annotations, request_run, sweep
from crowdlab.results.models import InferenceRun, RunStatus, RunTrigger
from crowdlab.results.selectors import automatic_runs_held_by
from crowdlab.results.services import run_cancel, run_claim, run_create

from .conftest import make_crowd_project

pytestmark = pytest.mark.django_db(transaction=True)


def _age(project: Any, minutes: int = 6) -> None:
    Annotation.objects.filter(project=project).update(created_at=timezone.now() - timedelta(minutes=minutes))


def _one_class_project(owner: Any, **kwargs: Any) -> tuple[Any, list[Any], list[Any]]:
    project, _truth, annotators, items = make_crowd_project(owner=owner, n_items=10, name="One class", **kwargs)
    Annotation.objects.filter(project=project).update(label="cat")
    return project, annotators, items


def test_a_project_that_cannot_be_trained_stops_retrying_until_new_labels(live_owner: Any) -> None:
    project, _annotators, items = _one_class_project(live_owner, retrain_every_n=10_000)
    project.retrain_every_minutes = 5
    project.save(update_fields=["retrain_every_minutes"])
    _age(project)

    started = sweep()["started"]
    assert len(started) == 1
    assert run_execute(run_id=started[0]) == RunStatus.FAILED
    failed = InferenceRun.objects.get(pk=started[0])
    assert failed.trigger == RunTrigger.TIMER and "single class 'cat'" in failed.error
    newest = Annotation.objects.filter(project=project).latest("id").pk
    assert failed.retry_after_annotation_id == newest

    # The timer no longer starts a run on the same labels, however long we wait.
    Annotation.objects.filter(project=project).update(created_at=timezone.now() - timedelta(days=3))
    for _ in range(3):
        assert sweep()["started"] == []
    assert InferenceRun.objects.filter(project=project).count() == 1
    assert automatic_runs_held_by(project_id=project.pk) == failed

    # The project page says why.
    client = Client()
    client.force_login(live_owner)
    page = client.get(f"/p/{project.pk}/").content.decode()
    assert 'id="run-held"' in page and f"Run {failed.pk} failed" in page
    assert '<span id="run-held-new">0</span> new so far' in page
    assert "single class &#x27;cat&#x27;" in page

    # "Run now" is never held back.
    manual = request_run(project=project, requested_by=live_owner)
    assert manual is not None
    assert run_execute(run_id=manual.pk) == RunStatus.FAILED

    # A new label (another class) that waited T minutes: the next automatic run starts, and succeeds.
    extra = Annotation.objects.create(
        project=project, item=items[1], annotator=_new_member(project, "late_annotator"), label="dog"
    )
    Annotation.objects.filter(pk=extra.pk).update(created_at=timezone.now() - timedelta(minutes=6))
    started = sweep()["started"]
    assert len(started) == 1
    assert run_execute(run_id=started[0]) == RunStatus.PUBLISHED
    assert automatic_runs_held_by(project_id=project.pk) is None
    assert 'id="run-held"' not in client.get(f"/p/{project.pk}/").content.decode()


def _new_member(project: Any, username: str) -> Any:
    from crowdlab.projects.models import Membership
    from tests.platform.factories import UserFactory

    user = UserFactory(username=username)
    Membership.objects.create(project=project, user=user)
    return user


def test_the_threshold_backs_off_too(live_owner: Any) -> None:
    project, _annotators, items = _one_class_project(live_owner, retrain_every_n=3)
    run = notify_new_annotations(project.pk)
    assert run is not None and run.trigger == RunTrigger.THRESHOLD
    assert run_execute(run_id=run.pk) == RunStatus.FAILED
    # 40 labels since the last published snapshot (none): today that re-triggers at once.
    assert new_annotations_count(project.pk)[0] == 0
    assert notify_new_annotations(project.pk) is None
    assert sweep()["started"] == []
    late = [_new_member(project, f"late{i}") for i in range(3)]
    for i, user in enumerate(late[:2]):
        Annotation.objects.create(project=project, item=items[i], annotator=user, label="dog")
        assert notify_new_annotations(project.pk) is None  # fewer than N new
    Annotation.objects.create(project=project, item=items[2], annotator=late[2], label="dog")
    again = notify_new_annotations(project.pk)
    assert again is not None and again.trigger == RunTrigger.THRESHOLD


def test_failures_that_say_nothing_about_the_data_do_not_hold_automatic_runs(live_owner: Any) -> None:
    project, *_ = make_crowd_project(owner=live_owner, n_items=8, retrain_every_n=5, name="Retry crowd")
    # Custom hyper-parameters of a manual run: automatic runs use the project's own settings.
    bad = run_create(project=project, params={"n_iter": 0})
    assert bad is not None and run_execute(run_id=bad.pk) == RunStatus.FAILED
    bad.refresh_from_db()
    assert bad.retry_after_annotation_id is None and "n_iter" in bad.error
    # A killed worker (stale heartbeat): the next trigger starts a fresh run.
    dead = notify_new_annotations(project.pk)
    assert dead is not None and run_claim(run_id=dead.pk, worker="gone@host/1")
    InferenceRun.objects.filter(pk=dead.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=31))
    fresh = notify_new_annotations(project.pk)
    assert fresh is not None and fresh.pk != dead.pk and fresh.trigger == RunTrigger.THRESHOLD
    dead.refresh_from_db()
    assert dead.status == RunStatus.FAILED and "No heartbeat for 30 s" in dead.error
    assert dead.retry_after_annotation_id is None
    assert automatic_runs_held_by(project_id=project.pk) is None


def test_a_cancelled_run_holds_automatic_runs_until_new_labels(live_owner: Any) -> None:
    project, _truth, _annotators, _items = make_crowd_project(owner=live_owner, n_items=8, retrain_every_n=5)
    run = notify_new_annotations(project.pk)
    assert run is not None
    run_cancel(run=run, cancelled_by=live_owner)
    # Restarting the same run a moment later would undo the cancel.
    assert notify_new_annotations(project.pk) is None and sweep()["started"] == []
    assert automatic_runs_held_by(project_id=project.pk).pk == run.pk
    assert request_run(project=project) is not None  # "Run now" is not held back


def test_run_now_replaces_a_run_whose_worker_was_killed(live_owner: Any) -> None:
    project, *_ = make_crowd_project(owner=live_owner, n_items=8, name="Killed crowd")
    run = request_run(project=project)
    assert run is not None and run_claim(run_id=run.pk, worker="old-name@host/77")
    # Still beating: "run now" finds it active.
    assert request_run(project=project) is None
    InferenceRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=31))
    fresh = request_run(project=project)
    assert fresh is not None and fresh.status == RunStatus.PENDING
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


def test_every_worker_fails_stale_runs_whatever_their_node(live_owner: Any) -> None:
    project, *_ = make_crowd_project(owner=live_owner, n_items=4, name="Watchdog crowd")
    stale, fresh = run_create(project=project), None
    assert stale is not None and run_claim(run_id=stale.pk, worker="vanished-host@abc/5")
    InferenceRun.objects.filter(pk=stale.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=31))
    other, *_ = make_crowd_project(owner=live_owner, n_items=4, name="Healthy crowd")
    fresh = run_create(project=other)
    assert fresh is not None and run_claim(run_id=fresh.pk, worker="alive-host@def/6")
    assert StaleRunWatchdog(interval_s=1).check() == [stale.pk]
    fresh.refresh_from_db()
    assert fresh.status == RunStatus.RUNNING


def test_a_warm_result_is_replaced_by_a_cold_refit_once_the_labels_settle(live_owner: Any, settings: Any) -> None:
    settings.INFERENCE_SETTLE_AFTER_S = 60
    project, _truth, _annotators, _items = make_crowd_project(owner=live_owner, n_items=30, retrain_every_n=10_000)
    first = request_run(project=project)
    assert first is not None and run_execute(run_id=first.pk) == RunStatus.PUBLISHED
    warm = request_run(project=project, params={"warm_min_annotations": 0})
    assert warm is not None and run_execute(run_id=warm.pk) == RunStatus.PUBLISHED
    warm.refresh_from_db()
    assert warm.fit_mode == "warm"

    # Too soon: labels may still be coming.
    assert sweep()["started"] == []
    InferenceRun.objects.filter(pk=warm.pk).update(published_at=timezone.now() - timedelta(seconds=61))
    started = sweep()["started"]
    assert len(started) == 1
    settle = InferenceRun.objects.get(pk=started[0])
    assert settle.trigger == RunTrigger.SETTLE and settle.cold_refit is True
    assert run_execute(run_id=settle.pk) == RunStatus.PUBLISHED
    settle.refresh_from_db()
    assert settle.fit_mode == "cold" and settle.fit_reason == "a full cold refit was requested"
    # Settled: the newest run is cold, nothing more starts.
    InferenceRun.objects.filter(pk=settle.pk).update(published_at=timezone.now() - timedelta(hours=1))
    assert sweep()["started"] == []


def test_settling_waits_for_quiet_labels_and_is_not_retried_after_a_failure(live_owner: Any, settings: Any) -> None:
    settings.INFERENCE_SETTLE_AFTER_S = 0
    project, _truth, _annotators, items = make_crowd_project(owner=live_owner, n_items=30, retrain_every_n=10_000)
    first = request_run(project=project)
    assert first is not None and run_execute(run_id=first.pk) == RunStatus.PUBLISHED
    warm = request_run(project=project, params={"warm_min_annotations": 0})
    assert warm is not None and run_execute(run_id=warm.pk) == RunStatus.PUBLISHED

    # A label newer than the warm run's snapshot: not settled (the threshold or the
    # timer will retrain; a settle run now would be stale at once).
    extra = Annotation.objects.create(project=project, item=items[0], annotator=live_owner, label="cat")
    assert sweep()["started"] == []
    extra.delete()

    started = sweep()["started"]
    assert len(started) == 1
    assert run_claim(run_id=started[0], worker="test/1")
    InferenceRun.objects.filter(pk=started[0]).update(status=RunStatus.FAILED, error="boom")
    # The failed settle run is now the newest: the sweep does not start another one.
    assert sweep()["started"] == []
