"""Every page renders in every run state (issue 14, item 9).

The dashboard answered 500 whenever a run without metrics existed (pending,
running, and after any failed run, for good). Here every page of the web UI,
the admin pages of runs and projects and the runs/results API are requested
in each run state (none, pending, running, failed, cancelled, published, and
each active or finished-without-results state after a published run, discarded included), by the
people who may see them; each must answer its normal status and show the state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from crowdlab.labelling.models import Annotation
from crowdlab.projects.models import Membership, Project
from crowdlab.results.models import InferenceRun, RunStatus
from crowdlab.results.services import run_cancel, run_claim, run_create, run_fail, run_progress
from tests.platform.factories import UserFactory
from tests.platform.front.crowds import run_now_synchronously

pytestmark = pytest.mark.django_db

STATES = [
    "none",
    "pending",
    "running",
    "failed",
    "cancelled",
    "published",
    "published+pending",
    "published+running",
    "published+failed",
    "published+cancelled",
    "published+discarded",
]


def _label(project: Project, annotator: Any) -> None:
    """Two annotators label the fixture project's five items (some disagreement)."""
    second = UserFactory(username="second_annotator")
    Membership.objects.create(project=project, user=second)
    items = list(project.items.order_by("id"))
    for item, label in zip(items, ["cat", "dog", "bird", "cat", "dog"], strict=True):
        Annotation.objects.create(project=project, item=item, annotator=annotator, label=label)
    for item, label in zip(items, ["cat", "dog", "cat", "cat", "bird"], strict=True):
        Annotation.objects.create(project=project, item=item, annotator=second, label=label)


def _make_state(state: str, project: Project, requester: Any) -> dict[str, InferenceRun]:
    runs: dict[str, InferenceRun] = {}
    if state.startswith("published"):
        # CoNAL (the default model: its common confusion is on the dashboard), kept short.
        runs["published"] = run_now_synchronously(project, params={"epochs": 5, "num_threads": 1})
    last = state.split("+")[-1]
    if last in ("none", "published"):
        return runs
    run = run_create(project=project)
    assert run is not None
    if last in ("running", "failed"):
        assert run_claim(run_id=run.pk, worker="test-node/1")
        assert run_progress(run_id=run.pk, worker="test-node/1", epoch=3, total=10)
    if last == "failed":
        assert run_fail(
            run_id=run.pk,
            worker="test-node/1",
            error="all 10 annotations use the single class 'cat'",
            retry_after_annotation_id=Annotation.objects.filter(project=project).latest("id").pk,
        )
    if last == "cancelled":
        run_cancel(run=run, cancelled_by=requester)
    if last == "discarded":
        # What run_publish does to a run when a newer one published first.
        assert run_claim(run_id=run.pk, worker="test-node/1")
        InferenceRun.objects.filter(pk=run.pk).update(
            status=RunStatus.DISCARDED, error="A newer run published first; these results were discarded."
        )
    runs[last] = InferenceRun.objects.defer("checkpoint").get(pk=run.pk)
    return runs


@pytest.mark.parametrize("state", STATES)
def test_every_page_renders_in_every_run_state(
    state: str,
    project: Project,
    requester: Any,
    annotator: Any,
    admin_user: Any,
    web_client_for: Callable[..., Client],
) -> None:
    _label(project, annotator)
    runs = _make_state(state, project, requester)
    last = state.split("+")[-1]
    active = runs.get("pending") or runs.get("running")
    published = runs.get("published")
    p = project.pk
    owner, admin, member = web_client_for(requester), web_client_for(admin_user), web_client_for(annotator)

    # (name, client, url, expected status); "label next" leases, so it is a POST.
    pages: list[tuple[str, Client, str, int]] = [
        ("home (owner)", owner, reverse("home"), 200),
        ("home (annotator)", member, reverse("home"), 200),
        ("project", owner, reverse("front:project", args=[p]), 200),
        ("project (admin)", admin, reverse("front:project", args=[p]), 200),
        ("edit", owner, reverse("front:project-edit", args=[p]), 200),
        ("upload", owner, reverse("front:project-upload", args=[p]), 200),
        ("results", owner, reverse("front:results", args=[p]), 200),
        ("results filtered", owner, reverse("front:results", args=[p]) + "?max_confidence=0.9&disagreement=on", 200),
        ("results page 2", owner, reverse("front:results", args=[p]) + "?page=2", 200),
        ("dashboard", owner, reverse("front:dashboard", args=[p]), 200),
        ("dashboard (admin)", admin, reverse("front:dashboard", args=[p]), 200),
        ("dashboard sorted", owner, reverse("front:dashboard", args=[p]) + "?sort=learned_accuracy", 200),
        ("dashboard annotator", owner, reverse("front:dashboard-annotator", args=[p, annotator.pk]), 200),
        ("label", member, reverse("front:label", args=[p]), 200),
        ("label next", member, reverse("front:label-next", args=[p]), 200),
        ("export csv", owner, reverse("front:export", args=[p, "csv"]), 200),
        ("export json", owner, reverse("front:export", args=[p, "json"]), 200),
        ("export jsonl generated", owner, reverse("front:export", args=[p, "jsonl"]) + "?generated=1", 200),
        ("admin runs", admin, "/admin/results/inferencerun/", 200),
        ("admin projects", admin, "/admin/projects/project/", 200),
        ("api runs", owner, f"/api/projects/{p}/runs/", 200),
        ("api annotator stats", owner, f"/api/projects/{p}/annotator-stats/", 200),
        ("api export", owner, f"/api/projects/{p}/export/?as=json", 200),
    ]
    results_status = 200 if published else 404  # "no published run yet" is a 404 by design
    for name in ("labels", "annotators", "generated"):
        pages.append((f"api results {name}", owner, f"/api/projects/{p}/results/{name}/", results_status))
    for run in runs.values():
        pages += [
            (f"run status {run.pk}", owner, reverse("front:run-status", args=[p, run.pk]), 200),
            (f"api run {run.pk}", owner, f"/api/projects/{p}/runs/{run.pk}/", 200),
            (f"admin run {run.pk}", admin, f"/admin/results/inferencerun/{run.pk}/change/", 200),
        ]

    failures: list[str] = []
    bodies: dict[str, str] = {}
    for name, client, url, wanted in pages:
        response = client.post(url) if name == "label next" else client.get(url)
        if response.status_code != wanted:
            failures.append(f"{name} {url}: {response.status_code}, wanted {wanted}")
            continue
        if hasattr(response, "streaming_content"):
            bodies[name] = b"".join(response.streaming_content).decode()
        else:
            bodies[name] = response.content.decode()
    assert not failures, f"state {state}:\n" + "\n".join(failures)

    # Each page shows the state it is in.
    project_page = bodies["project"]
    dashboard = bodies["dashboard"]
    for run in runs.values():
        assert f"<td>{run.pk}</td>" in dashboard and f"<td>{run.status}</td>" in dashboard
    if active is not None:
        assert f'id="run-id">{active.pk}<' in project_page
        assert reverse("front:run-cancel", args=[p, active.pk]) in project_page
        assert 'id="run-now" disabled' in project_page
    else:
        assert 'id="run-cancel"' not in project_page and 'id="run-now" disabled' not in project_page
    if last in ("failed", "cancelled"):
        held = runs[last]
        assert 'id="run-held"' in project_page and f'data-run="{held.pk}"' in project_page
        assert (held.error in project_page) or (held.error.replace("'", "&#x27;") in project_page)
    else:
        assert 'id="run-held"' not in project_page
    if published is not None:
        assert f"Run {published.pk} (" in bodies["results"] and 'id="results-table"' in bodies["results"]
        assert f"From run {published.pk} " in dashboard
    else:
        assert "No published run yet" in bodies["results"] and "No published run yet" in dashboard
    # Downloads cover every item in every state (majority vote stands in before a run).
    assert len(bodies["export csv"].strip().splitlines()) == 1 + 5
    for run in runs.values():
        assert f'"status": "{run.status}"' in bodies[f"run status {run.pk}"].replace('":"', '": "')
