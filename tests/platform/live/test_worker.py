"""End to end with a REAL Celery worker process on the real Redis broker.

The worker runs in its own process group on its own queue (see conftest);
tests wait (bounded) for the database to show the outcome.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
import pytest
from django.db import connection

from crowdlab.live.triggers import notify_new_annotations
from crowdlab.results.models import AggregatedLabel, InferenceRun, RunStatus, RunTrigger
from crowdlab.results.selectors import latest_published_run

from .conftest import CLASSES, Worker, make_crowd_project, wait_for, wait_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker, pytest.mark.slow]

NAMES = [c["name"] for c in CLASSES]


def _labels_url(project: Any) -> str:
    return f"/api/projects/{project.pk}/results/labels/?limit=1000"


def _api_labels(client: Any, project: Any) -> dict[str, str]:
    response = client.get(_labels_url(project))
    if response.status_code == 404:
        return {}
    assert response.status_code == 200, response.content
    return {row["item_external_id"]: row["label"] for row in response.json()["results"]}


def test_threshold_trigger_through_the_api_publishes_correct_labels(
    live_worker: Worker, live_owner: Any, client_for: Any
) -> None:
    # One sloppy annotator (right half the time) labelled everything already;
    # two careful ones then label every item through the API.
    n_items = 30
    project, truth, _annotators, items = make_crowd_project(
        owner=live_owner, n_items=n_items, accuracy=(0.5,), retrain_every_n=2 * n_items, name="Trigger crowd"
    )
    owner = client_for(live_owner)
    first = owner.post(f"/api/projects/{project.pk}/runs/", {}, format="json")
    assert first.status_code == 202, first.content
    wait_run(first.json()["id"], (RunStatus.PUBLISHED,), timeout=90)
    before = _api_labels(owner, project)
    assert len(before) == n_items

    from crowdlab.projects.models import Membership
    from tests.platform.factories import UserFactory

    careful = [UserFactory(username=f"careful{r}") for r in range(2)]
    for user in careful:
        Membership.objects.create(project=project, user=user)
    by_external = {it.external_id: i for i, it in enumerate(items)}
    submitted = 0
    for user in careful:
        client = client_for(user)
        while True:
            task = client.post(f"/api/projects/{project.pk}/next-task/")
            if task.status_code == 204:
                break
            assert task.status_code == 200, task.content
            external_id = task.json()["item"]["external_id"]
            label = NAMES[truth[by_external[external_id]]]
            if submitted == 2 * n_items - 1:
                # The threshold is not crossed yet: still only the manual run.
                assert InferenceRun.objects.filter(project=project).count() == 1
            response = client.post(
                f"/api/projects/{project.pk}/annotations/", {"item": external_id, "label": label}, format="json"
            )
            assert response.status_code == 201, response.content
            submitted += 1
    assert submitted == 2 * n_items

    # The last submit crossed N: a threshold run was created and executed.
    run = InferenceRun.objects.filter(project=project, trigger=RunTrigger.THRESHOLD).get()
    wait_run(run.pk, (RunStatus.PUBLISHED,), timeout=90)
    after = wait_for(
        lambda: (lambda got: got if got != before else None)(_api_labels(owner, project)),
        timeout=30,
        what="aggregated labels to change",
    )
    correct = np.mean([after[it.external_id] == NAMES[truth[i]] for i, it in enumerate(items)])
    assert correct >= 0.95
    run.refresh_from_db()
    assert run.n_annotations == 3 * n_items
    # 90 labels: far below the size where a warm refit is allowed, so the run is cold and says why.
    assert run.warm_start_from_id is None and run.fit_mode == "cold"
    assert run.fit_reason == "90 annotations: below 50000, every refit is cold"


def test_worker_killed_mid_run_keeps_published_results_and_restart_recovers(
    live_worker: Worker, live_owner: Any, client_for: Any
) -> None:
    project, _truth, _annotators, _items = make_crowd_project(owner=live_owner, n_items=40, name="Kill crowd")
    owner = client_for(live_owner)
    first = owner.post(f"/api/projects/{project.pk}/runs/", {}, format="json").json()
    wait_run(first["id"], (RunStatus.PUBLISHED,), timeout=90)
    published_before = list(
        AggregatedLabel.objects.filter(run_id=first["id"])
        .order_by("item_id")
        .values_list("item_id", "label", "confidence")
    )

    # A deliberately endless EM (no early stop) so the kill lands mid-training.
    slow = owner.post(f"/api/projects/{project.pk}/runs/", {"params": {"n_iter": 10_000_000, "tol": 0}}, format="json")
    assert slow.status_code == 202, slow.content
    slow_id = slow.json()["id"]

    def training() -> bool:
        run = InferenceRun.objects.defer("checkpoint").get(pk=slow_id)
        return run.status == RunStatus.RUNNING and run.progress_epoch > 0

    wait_for(training, timeout=60, what="the slow run to report progress")
    progress = owner.get(f"/api/projects/{project.pk}/runs/{slow_id}/").json()
    assert progress["status"] == "running" and progress["progress_total"] == 10_000_000
    live_worker.kill()

    time.sleep(1.0)
    # The published results are untouched, and still what readers get.
    assert latest_published_run(project).pk == first["id"]
    assert (
        list(
            AggregatedLabel.objects.filter(run_id=first["id"])
            .order_by("item_id")
            .values_list("item_id", "label", "confidence")
        )
        == published_before
    )
    assert not AggregatedLabel.objects.filter(run_id=slow_id).exists()

    # The restarted worker node fails its orphaned run on startup...
    live_worker.start()
    dead = wait_run(slow_id, (RunStatus.FAILED,), timeout=30)
    assert "restarted" in dead.error
    # ...and completes the next one.
    again = owner.post(f"/api/projects/{project.pk}/runs/", {}, format="json")
    assert again.status_code == 202, again.content
    wait_run(again.json()["id"], (RunStatus.PUBLISHED,), timeout=90)
    assert latest_published_run(project).pk == again.json()["id"]


def test_two_triggers_at_once_produce_one_run(live_worker: Worker, live_owner: Any) -> None:
    project, *_ = make_crowd_project(owner=live_owner, n_items=20, retrain_every_n=10, name="Race crowd")
    barrier = threading.Barrier(4)
    created: list[Any] = []

    def trigger() -> None:
        try:
            barrier.wait(timeout=10)
            created.append(notify_new_annotations(project.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=trigger) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    runs = [run for run in created if run is not None]
    assert len(runs) == 1
    assert InferenceRun.objects.filter(project=project).count() == 1
    wait_run(runs[0].pk, (RunStatus.PUBLISHED,), timeout=90)
    # Nothing new since the snapshot: no further run.
    assert notify_new_annotations(project.pk) is None


def test_bad_data_fails_readably_without_a_crash_loop(live_worker: Worker, live_owner: Any, client_for: Any) -> None:
    project, *_ = make_crowd_project(owner=live_owner, n_items=0, n_unlabelled=4, name="Empty crowd")
    response = client_for(live_owner).post(f"/api/projects/{project.pk}/runs/", {}, format="json")
    assert response.status_code == 202
    run = wait_run(response.json()["id"], (RunStatus.FAILED,), timeout=60)
    assert "no annotations" in run.error
    detail = client_for(live_owner).get(f"/api/projects/{project.pk}/runs/{run.pk}/").json()
    assert detail["status"] == "failed" and "no annotations" in detail["error"]
    time.sleep(2.0)  # no retry: still exactly one failed run, no new attempt
    assert list(InferenceRun.objects.filter(project=project).values_list("status", flat=True)) == ["failed"]


def test_transient_database_error_is_retried_and_the_run_completes(
    live_worker: Worker, live_owner: Any, client_for: Any
) -> None:
    project, *_ = make_crowd_project(owner=live_owner, n_items=30, name="Flaky crowd")
    # Long enough (a few seconds of EM) for the connection to be cut mid-run.
    response = client_for(live_owner).post(
        f"/api/projects/{project.pk}/runs/", {"params": {"n_iter": 30_000, "tol": 0}}, format="json"
    )
    run_id = response.json()["id"]

    def training() -> bool:
        run = InferenceRun.objects.defer("checkpoint").get(pk=run_id)
        return run.status == RunStatus.RUNNING and run.progress_epoch > 0

    wait_for(training, timeout=60, what="the run to train")
    with connection.cursor() as cursor:
        # Cut every other session on the test database: the worker's connection.
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1
    run = wait_run(run_id, (RunStatus.PUBLISHED, RunStatus.FAILED), timeout=120)
    assert run.status == RunStatus.PUBLISHED, run.error
    assert AggregatedLabel.objects.filter(run_id=run_id).count() == 30
    assert "retry" in live_worker.log_path.read_text(errors="replace").lower()


def _labels_of(run_id: int) -> list[tuple[int, str, float]]:
    return list(
        AggregatedLabel.objects.filter(run_id=run_id).order_by("item_id").values_list("item_id", "label", "confidence")
    )


def _start_endless_run(owner: Any, project: Any) -> int:
    """A deliberately endless EM (no early stop); returns its id once it trains."""
    slow = owner.post(f"/api/projects/{project.pk}/runs/", {"params": {"n_iter": 10_000_000, "tol": 0}}, format="json")
    assert slow.status_code == 202, slow.content
    slow_id = slow.json()["id"]

    def training() -> bool:
        run = InferenceRun.objects.defer("checkpoint").get(pk=slow_id)
        return run.status == RunStatus.RUNNING and run.progress_epoch > 0

    wait_for(training, timeout=60, what="the endless run to report progress")
    return slow_id


def test_killed_worker_run_fails_within_a_minute_whatever_the_replacements_name(
    live_worker: Worker, live_owner: Any, client_for: Any
) -> None:
    """Containers come back with new host names: the replacement cannot recognise
    its predecessor's runs by node name, the stale heartbeat tells instead."""
    project, *_ = make_crowd_project(owner=live_owner, n_items=30, name="Replaced crowd")
    owner = client_for(live_owner)
    first = owner.post(f"/api/projects/{project.pk}/runs/", {}, format="json").json()
    wait_run(first["id"], (RunStatus.PUBLISHED,), timeout=90)
    published_before = _labels_of(first["id"])
    slow_id = _start_endless_run(owner, project)

    live_worker.kill()  # SIGKILL, main process and pool child
    killed_at = time.monotonic()
    # Production settings (INFERENCE_HEARTBEAT_TIMEOUT_S unset: 30 s), another node name.
    replacement = Worker(
        live_worker.database_name, name=f"replacement_{os.getpid()}@another-host", heartbeat_timeout_s=None
    )
    try:
        replacement.start()
        remaining = 60 - (time.monotonic() - killed_at)
        dead = wait_run(slow_id, (RunStatus.FAILED,), timeout=remaining)
        assert time.monotonic() - killed_at <= 60
        assert "No heartbeat for 30 s" in dead.error
        # Published results untouched throughout.
        assert latest_published_run(project).pk == first["id"] and _labels_of(first["id"]) == published_before
        assert not AggregatedLabel.objects.filter(run_id=slow_id).exists()
        # The next trigger starts a fresh run, which the replacement executes.
        again = owner.post(f"/api/projects/{project.pk}/runs/", {}, format="json")
        assert again.status_code == 202, again.content
        wait_run(again.json()["id"], (RunStatus.PUBLISHED,), timeout=90)
        assert InferenceRun.objects.get(pk=again.json()["id"]).worker.startswith("replacement_")
    finally:
        replacement.stop()


def test_cancel_a_pending_run_and_a_training_run_with_a_real_worker(
    live_worker: Worker, live_owner: Any, client_for: Any
) -> None:
    project, *_ = make_crowd_project(owner=live_owner, n_items=30, name="Cancel crowd")
    owner = client_for(live_owner)
    runs_url = f"/api/projects/{project.pk}/runs/"

    # Pending, cancelled before any worker claims it: it never starts.
    live_worker.stop()
    queued = owner.post(runs_url, {}, format="json").json()
    cancelled = owner.post(f"{runs_url}{queued['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    live_worker.start()
    wait_for(
        lambda: f"run {queued['id']}: not pending" in live_worker.log_path.read_text(errors="replace"),
        timeout=60,
        what="the worker to receive the cancelled run's message",
    )
    never = InferenceRun.objects.get(pk=queued["id"])
    assert never.status == RunStatus.CANCELLED and never.started_at is None and never.worker == ""

    # Running: the worker stops at its next epoch, the run ends cancelled and
    # the published results stay as they were.
    first = owner.post(runs_url, {}, format="json")
    assert first.status_code == 202, first.content  # a cancelled run is not active
    first_id = first.json()["id"]
    wait_run(first_id, (RunStatus.PUBLISHED,), timeout=90)
    published_before = _labels_of(first_id)
    slow_id = _start_endless_run(owner, project)
    response = owner.post(f"{runs_url}{slow_id}/cancel/")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled" and response.json()["error"] == "Cancelled by live_owner."
    wait_for(
        lambda: f"run {slow_id}: cancelled; training stopped" in live_worker.log_path.read_text(errors="replace"),
        timeout=30,
        what="the worker to stop training",
    )
    run = InferenceRun.objects.get(pk=slow_id)
    assert run.status == RunStatus.CANCELLED and not AggregatedLabel.objects.filter(run_id=slow_id).exists()
    assert latest_published_run(project).pk == first_id and _labels_of(first_id) == published_before
    labels = _api_labels(owner, project)
    assert len(labels) == 30
    # Cancelling again is a conflict; the worker is free for the next run at once.
    assert owner.post(f"{runs_url}{slow_id}/cancel/").status_code == 409
    again = owner.post(runs_url, {}, format="json")
    assert again.status_code == 202, again.content
    wait_run(again.json()["id"], (RunStatus.PUBLISHED,), timeout=90)
