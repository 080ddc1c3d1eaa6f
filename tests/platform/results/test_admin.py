"""The admin action that cancels runs (issue 14, item 13)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from crowdlab.results.models import InferenceRun, RunStatus
from crowdlab.results.services import run_claim, run_create

pytestmark = pytest.mark.django_db

URL = "/admin/results/inferencerun/"


def test_admin_cancels_active_runs_and_reports_finished_ones(
    project: Any, admin_user: Any, requester: Any, other_requester: Any
) -> None:
    from tests.platform.factories import ProjectFactory

    running = run_create(project=project)
    assert running is not None and run_claim(run_id=running.pk, worker="w@h/1")
    other = ProjectFactory(owner=other_requester, name="Other")
    pending = run_create(project=other)
    assert pending is not None
    payload = {"action": "cancel_runs", "_selected_action": [running.pk, pending.pk]}

    # The outsider of the admin: a requester without staff rights.
    refused = Client()
    refused.force_login(requester)
    response = refused.post(URL, payload)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert set(InferenceRun.objects.values_list("status", flat=True)) == {RunStatus.RUNNING, RunStatus.PENDING}

    client = Client()
    client.force_login(admin_user)
    page = client.get(URL).content.decode()
    assert 'value="cancel_runs"' in page
    html = client.post(URL, payload, follow=True).content.decode()
    assert f"Cancelled runs {running.pk}, {pending.pk}" in html
    for run in (running, pending):
        run.refresh_from_db()
        assert run.status == RunStatus.CANCELLED and run.error == "Cancelled by admin."
    again = client.post(URL, payload, follow=True).content.decode()
    assert "Not active, nothing to cancel" in again and f"{running.pk} (cancelled)" in again
