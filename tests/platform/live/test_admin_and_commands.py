"""The "Run inference now" admin action and ``manage.py recover_runs``."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from crowdlab.results.models import InferenceRun, RunStatus, RunTrigger
from crowdlab.results.services import run_claim, run_create


@pytest.mark.django_db
def test_admin_run_now_action_queues_one_run_per_project(project: Any, admin_user: Any) -> None:
    client = Client()
    client.force_login(admin_user)
    url = "/admin/projects/project/"
    payload = {"action": "run_inference_now", "_selected_action": [project.pk]}
    response = client.post(url, payload, follow=True)
    assert response.status_code == 200
    run = InferenceRun.objects.get(project=project)
    assert run.trigger == RunTrigger.MANUAL and run.requested_by == admin_user and run.status == RunStatus.PENDING
    assert run.cold_refit is False
    again = client.post(url, payload, follow=True)
    assert "Already pending or running" in again.content.decode()
    assert InferenceRun.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_admin_cold_refit_action_queues_a_cold_run(project: Any, admin_user: Any, requester: Any) -> None:
    client = Client()
    client.force_login(admin_user)
    payload = {"action": "run_inference_cold", "_selected_action": [project.pk]}
    response = client.post("/admin/projects/project/", payload, follow=True)
    assert response.status_code == 200 and "Queued" in response.content.decode()
    run = InferenceRun.objects.get(project=project)
    assert run.cold_refit is True and run.requested_by == admin_user
    # The outsider of the admin: a requester without staff rights cannot run actions.
    outsider = Client()
    outsider.force_login(requester)
    refused = outsider.post("/admin/projects/project/", payload)
    assert refused.status_code == 302 and "/admin/login/" in refused["Location"]
    assert InferenceRun.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_recover_runs_fails_stale_and_all_running(project: Any) -> None:
    run = run_create(project=project)
    assert run is not None and run_claim(run_id=run.pk, worker="dead/1")
    InferenceRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=2))
    out = StringIO()
    call_command("recover_runs", "--timeout", "60", "--no-resend", stdout=out)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and f"failed runs: [{run.pk}]" in out.getvalue()

    fresh = run_create(project=project)
    assert fresh is not None and run_claim(run_id=fresh.pk, worker="alive/2")
    call_command("recover_runs", "--all-running", "--no-resend", stdout=StringIO())
    fresh.refresh_from_db()
    assert fresh.status == RunStatus.FAILED and "recover_runs --all-running" in fresh.error


@pytest.mark.django_db
def test_sweep_is_scheduled_every_minute_with_celery_beat() -> None:
    import importlib

    from django.apps import apps
    from django_celery_beat.models import PeriodicTask

    migration = importlib.import_module("crowdlab.live.migrations.0001_sweep_schedule")
    migration.create_schedule(apps, None)  # idempotent: also what `migrate` ran
    migration.create_schedule(apps, None)
    task = PeriodicTask.objects.get(name=migration.TASK_NAME)
    assert task.task == "live.tasks.sweep" and task.enabled
    assert (task.interval.every, task.interval.period) == (60, "seconds")
