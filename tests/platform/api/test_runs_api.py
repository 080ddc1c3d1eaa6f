"""Runs and results API: permission matrix, run now, filters, schema."""

from __future__ import annotations

from typing import Any

import pytest

from crowdlab.labelling.models import Annotation
from crowdlab.live import adapter
from crowdlab.results.models import CommonConfusion, InferenceRun, RunStatus
from crowdlab.results.services import run_claim, run_create, run_publish
from inference import make_model

ROLES_READ = {"anonymous": 401, "annotator": 403, "outsider": 404, "other_requester": 404, "owner": 200, "admin": 200}


@pytest.fixture
def published(project: Any, annotator: Any, requester: Any) -> InferenceRun:
    """A published mv run over the fixture project's items (2 annotators)."""
    from tests.platform.factories import UserFactory

    second = UserFactory(username="second_annotator")
    items = list(project.items.order_by("id"))
    labels = ["cat", "dog", "bird", "cat", "dog"]
    for item, label in zip(items, labels, strict=True):
        Annotation.objects.create(project=project, item=item, annotator=annotator, label=label)
    for item in items[:3]:
        Annotation.objects.create(project=project, item=item, annotator=second, label="cat")
    run = run_create(project=project)
    assert run is not None and run_claim(run_id=run.pk, worker="test/1")
    snapshot = adapter.read_snapshot(project_id=project.pk)
    model = make_model("ds", n_iter=20).fit(snapshot.data)
    results = adapter.build_results(snapshot=snapshot, model=model, timings={"fit": 0.1}, warm_start_from_id=None)
    assert run_publish(run_id=run.pk, worker="test/1", results=results) == RunStatus.PUBLISHED
    run.refresh_from_db()
    return run


def test_runs_list_and_detail_permissions(project: Any, published: InferenceRun, assert_matrix: Any) -> None:
    responses = assert_matrix("get", f"/api/projects/{project.pk}/runs/", ROLES_READ)
    body = responses["owner"].json()
    assert body["count"] == 1
    run = body["results"][0]
    assert run["status"] == "published" and run["has_checkpoint"] is True
    assert "checkpoint" not in run
    assert run["timings"]["fit"] == 0.1 and "publish" in run["timings"]
    assert_matrix("get", f"/api/projects/{project.pk}/runs/{published.pk}/", ROLES_READ)


def test_run_now_permissions_and_single_active_run(project: Any, assert_matrix: Any) -> None:
    url = f"/api/projects/{project.pk}/runs/"
    assert_matrix(
        "post",
        url,
        {"anonymous": 401, "annotator": 403, "outsider": 404, "other_requester": 404},
        data={},
    )
    assert not InferenceRun.objects.filter(project=project).exists()
    responses = assert_matrix("post", url, {"owner": 202, "admin": 409}, data={"params": {"epochs": 5}})
    created = responses["owner"].json()
    assert created["status"] == "pending" and created["trigger"] == "manual" and created["params"] == {"epochs": 5}
    assert created["cold_refit"] is False and created["fit_mode"] == "" and created["fit_reason"] == ""
    assert responses["admin"].json()["run"]["id"] == created["id"]


def test_run_now_offers_a_full_cold_refit(project: Any, client_for: Any, requester: Any) -> None:
    url = f"/api/projects/{project.pk}/runs/"
    bad = client_for(requester).post(url, {"cold": "sometimes"}, format="json")
    assert bad.status_code == 400 and "cold" in bad.json()
    assert not InferenceRun.objects.filter(project=project).exists()
    response = client_for(requester).post(url, {"cold": True}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["cold_refit"] is True
    assert InferenceRun.objects.get(pk=response.json()["id"]).cold_refit is True


def test_runs_report_how_they_were_fitted(
    project: Any, published: InferenceRun, client_for: Any, requester: Any
) -> None:
    InferenceRun.objects.filter(pk=published.pk).update(
        fit_mode="warm", fit_reason="because", warm_start_from=published
    )
    run = client_for(requester).get(f"/api/projects/{project.pk}/runs/{published.pk}/").json()
    assert (run["fit_mode"], run["fit_reason"], run["warm_start_from"]) == ("warm", "because", published.pk)


def test_run_now_rejects_non_object_params(project: Any, client_for: Any, requester: Any) -> None:
    response = client_for(requester).post(f"/api/projects/{project.pk}/runs/", {"params": [1, 2]}, format="json")
    assert response.status_code == 400
    assert "params" in response.json()


def test_latest_labels_permissions_and_filters(
    project: Any, published: InferenceRun, assert_matrix: Any, client_for: Any, requester: Any
) -> None:
    url = f"/api/projects/{project.pk}/results/labels/"
    responses = assert_matrix("get", url, ROLES_READ)
    rows = responses["owner"].json()["results"]
    assert len(rows) == 5  # every labelled item; ds has no classifier for unlabelled ones
    assert {row["run"] for row in rows} == {published.pk}
    assert all(abs(sum(row["probabilities"]) - 1) < 1e-4 for row in rows)
    client = client_for(requester)
    cats = client.get(url, {"label": "cat"}).json()["results"]
    assert cats and all(row["label"] == "cat" for row in cats)
    confident = client.get(url, {"min_confidence": "0.9"}).json()["results"]
    assert all(row["confidence"] >= 0.9 for row in confident)
    assert client.get(url, {"source": "predicted"}).json()["results"] == []
    bad_label = client.get(url, {"label": "horse"})
    assert bad_label.status_code == 400 and "cat" in str(bad_label.json()["label"])
    bad_source = client.get(url, {"source": "oracle"})
    assert bad_source.status_code == 400 and "crowd" in str(bad_source.json()["source"])
    pinned = client.get(url, {"run": published.pk}).json()["results"]
    assert len(pinned) == 5
    assert client.get(url, {"run": published.pk + 1000}).status_code == 404
    assert client.get(url, {"run": "latest"}).status_code == 400
    bad_conf = client.get(url, {"max_confidence": "lots"})
    assert bad_conf.status_code == 400 and "between 0 and 1" in str(bad_conf.json()["max_confidence"])


def test_latest_annotators_permissions(
    project: Any, published: InferenceRun, assert_matrix: Any, annotator: Any
) -> None:
    responses = assert_matrix("get", f"/api/projects/{project.pk}/results/annotators/", ROLES_READ)
    rows = responses["owner"].json()["results"]
    assert len(rows) == 2
    mine = next(row for row in rows if row["annotator"] == annotator.pk)
    assert mine["n_annotations"] == 5 and len(mine["matrix"]) == 3
    assert 0.0 <= mine["learned_accuracy"] <= 1.0


def test_common_confusion(
    project: Any, published: InferenceRun, assert_matrix: Any, client_for: Any, requester: Any
) -> None:
    url = f"/api/projects/{project.pk}/results/common-confusion/"
    missing = client_for(requester).get(url)
    assert missing.status_code == 404 and "only CoNAL" in missing.json()["detail"]
    CommonConfusion.objects.create(run=published, matrix=[[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    responses = assert_matrix("get", url, ROLES_READ)
    body = responses["owner"].json()
    assert body["classes"] == ["cat", "dog", "bird"] and body["run"] == published.pk


def test_results_before_any_run_are_404(project: Any, client_for: Any, requester: Any) -> None:
    response = client_for(requester).get(f"/api/projects/{project.pk}/results/labels/")
    assert response.status_code == 404
    assert "No published inference run" in response.json()["detail"]


def test_schema_documents_the_run_endpoints(client_for: Any, admin_user: Any) -> None:
    response = client_for(admin_user).get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/projects/{project_pk}/runs/",
        "/api/projects/{project_pk}/runs/{run_pk}/",
        "/api/projects/{project_pk}/results/labels/",
        "/api/projects/{project_pk}/results/annotators/",
        "/api/projects/{project_pk}/results/common-confusion/",
    ):
        assert path in paths


def test_run_now_rejects_unknown_or_bad_hyper_parameters(project: Any, client_for: Any, requester: Any) -> None:
    url = f"/api/projects/{project.pk}/runs/"
    client = client_for(requester)
    unknown = client.post(url, {"params": {"no_such_param": 1}}, format="json")
    assert unknown.status_code == 400
    assert "no_such_param" in str(unknown.json()) and "allowed" in str(unknown.json())
    nul = client.post(url, {"params": {"\u0000": "\u0000"}}, format="json")
    assert nul.status_code == 400
    assert not InferenceRun.objects.filter(project=project).exists()


def test_cancel_permissions_conflicts_and_published_results(
    project: Any, published: InferenceRun, assert_matrix: Any, client_for: Any, requester: Any, other_requester: Any
) -> None:
    before = list(published.labels.order_by("item_id").values_list("item_id", "label", "confidence"))
    run = run_create(project=project)
    assert run is not None and run_claim(run_id=run.pk, worker="w@h/1")
    url = f"/api/projects/{project.pk}/runs/{run.pk}/cancel/"
    responses = assert_matrix(
        "post",
        url,
        {"anonymous": 401, "annotator": 403, "outsider": 404, "other_requester": 404, "owner": 200, "admin": 409},
    )
    body = responses["owner"].json()
    assert body["id"] == run.pk and body["status"] == "cancelled" and body["error"] == "Cancelled by requester."
    assert body["finished_at"] is not None and body["retry_after_annotation_id"] is not None
    conflict = responses["admin"].json()
    assert "nothing to cancel" in conflict["detail"] and conflict["run"]["status"] == "cancelled"
    # A published run cannot be cancelled; its results stay.
    finished = client_for(requester).post(f"/api/projects/{project.pk}/runs/{published.pk}/cancel/")
    assert finished.status_code == 409 and finished.json()["run"]["status"] == "published"
    assert list(published.labels.order_by("item_id").values_list("item_id", "label", "confidence")) == before
    # Runs of another project, or no run at all: 404.
    from tests.platform.factories import ProjectFactory

    elsewhere = ProjectFactory(owner=other_requester, name="Elsewhere")
    theirs = run_create(project=elsewhere)
    assert theirs is not None
    assert client_for(requester).post(f"/api/projects/{project.pk}/runs/{theirs.pk}/cancel/").status_code == 404
    assert client_for(requester).post(f"/api/projects/{project.pk}/runs/999999/cancel/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == RunStatus.PENDING
    # GET is not a way to cancel.
    assert client_for(requester).get(url).status_code == 405


def test_a_cancelled_pending_run_never_starts(
    project: Any, published: InferenceRun, client_for: Any, requester: Any
) -> None:
    from crowdlab.live.services import run_execute

    run = run_create(project=project)
    assert run is not None
    response = client_for(requester).post(f"/api/projects/{project.pk}/runs/{run.pk}/cancel/")
    assert response.status_code == 200
    assert run_execute(run_id=run.pk) == "skipped"
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.started_at is None and not run.labels.exists()
    # Not active: "run now" starts a new run at once.
    assert client_for(requester).post(f"/api/projects/{project.pk}/runs/", {}, format="json").status_code == 202


def test_cancel_is_in_the_schema(client_for: Any, requester: Any) -> None:
    schema = client_for(requester).get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/projects/{project_pk}/runs/{run_pk}/cancel/"]["post"]
    assert set(operation["responses"]) >= {"200", "404", "409"} and operation["tags"] == ["inference"]
    assert "requestBody" not in operation
    assert "cancelled" in schema["components"]["schemas"]["StatusEnum"]["enum"]
