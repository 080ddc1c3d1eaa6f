"""Bad input and behaviour of the core endpoints (beyond the permission matrix)."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.authtoken.models import Token

from crowdlab.labelling.models import Annotation, AnnotationRevision
from crowdlab.projects.models import Item, Project
from crowdlab.results.models import AnnotatorConfusion, InferenceRun, RunStatus
from tests.platform.factories import DEFAULT_PASSWORD, AnnotationFactory, UserFactory

pytestmark = pytest.mark.django_db

P = "/api/projects"


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"classes": [{"name": "x"}]}, "classes", "at least 2"),
        ({"classes": [{"name": "a", "key": "q"}, {"name": "b", "key": "q"}]}, "classes", "used twice"),
        ({"classes": [{"name": "a", "key": "s"}, {"name": "b"}]}, "classes", "reserved"),
        ({"classes": "cat,dog"}, "classes", ""),
        ({"model": "svm"}, "model", "mv, ds, conal, crowding"),
        ({"k": 0}, "k", "≥ 1"),
        ({"k": "many"}, "k", ""),
        ({"name": ""}, "name", ""),
    ],
)
def test_project_create_bad_input(
    client_for: Any, requester: Any, body: dict[str, Any], field: str, fragment: str
) -> None:
    payload = {"name": "P", "classes": [{"name": "a", "key": "1"}, {"name": "b", "key": "2"}], **body}
    response = client_for(requester).post(f"{P}/", payload, format="json")
    assert response.status_code == 400, response.data
    assert field in response.data
    assert fragment in str(response.data[field])


def test_project_duplicate_name(client_for: Any, project: Project, requester: Any) -> None:
    response = client_for(requester).post(f"{P}/", {"name": "Animals", "classes": project.classes}, format="json")
    assert response.status_code == 400 and "name" in response.data


def test_project_create_sets_owner_and_defaults(client_for: Any, requester: Any) -> None:
    body = {"name": "Fresh", "classes": [{"name": "a", "key": "1"}, {"name": "b"}], "owner": "someone"}
    response = client_for(requester).post(f"{P}/", body, format="json")
    assert response.status_code == 201, response.data
    assert response.data["owner"] == "requester" and response.data["k"] == 3 and response.data["model"] == "conal"
    assert response.data["classes"] == [{"name": "a", "key": "1"}, {"name": "b", "key": None}]


def _task(client: Any, project: Project) -> dict[str, Any]:
    response = client.post(f"{P}/{project.pk}/next-task/")
    assert response.status_code == 200, response.content
    return response.data


def test_submit_bad_inputs_and_idempotency(client_for: Any, project: Project, annotator: Any) -> None:
    client = client_for(annotator)
    url = f"{P}/{project.pk}/annotations/"
    task = _task(client, project)
    external_id = task["item"]["external_id"]

    response = client.post(url, {"item": external_id, "label": "horse"}, format="json")
    assert response.status_code == 400 and "label" in response.data
    assert "cat, dog, bird" in str(response.data["label"])

    response = client.post(url, {"item": "no-such-item", "label": "cat"}, format="json")
    assert response.status_code == 404

    other = project.items.exclude(external_id=external_id).first()
    response = client.post(url, {"item": other.external_id, "label": "cat"}, format="json")
    assert response.status_code == 403

    response = client.post(url, {"item": external_id, "label": "cat", "time_spent_ms": -5}, format="json")
    assert response.status_code == 400 and "time_spent_ms" in response.data

    response = client.post(url, {"label": "cat"}, format="json")
    assert response.status_code == 400 and "item" in response.data

    created = client.post(url, {"item": external_id, "label": "cat", "time_spent_ms": 900}, format="json")
    assert created.status_code == 201 and created.data["label"] == "cat"
    again = client.post(url, {"item": external_id, "label": "cat"}, format="json")
    assert again.status_code == 200 and again.data["id"] == created.data["id"]
    assert Annotation.objects.filter(item__external_id=external_id, project=project).count() == 1
    assert Item.objects.get(project=project, external_id=external_id).n_annotations == 1

    conflict = client.post(url, {"item": external_id, "label": "dog"}, format="json")
    assert conflict.status_code == 409
    assert conflict.data["annotation_id"] == created.data["id"] and "PATCH" in conflict.data["detail"]

    bad_patch = client.patch(f"{url}{created.data['id']}/", {"label": "horse"}, format="json")
    assert bad_patch.status_code == 400 and "label" in bad_patch.data
    patched = client.patch(f"{url}{created.data['id']}/", {"label": "dog"}, format="json")
    assert patched.status_code == 200 and patched.data["label"] == "dog"
    assert [(r["old_label"], r["new_label"]) for r in patched.data["revisions"]] == [("cat", "dog")]
    assert AnnotationRevision.objects.filter(annotation_id=created.data["id"]).count() == 1


def test_next_task_never_leaks(client_for: Any, project: Project, annotator: Any) -> None:
    others = [UserFactory(username=f"peer{i}") for i in range(2)]
    items = list(project.items.order_by("id"))
    for peer in others:
        AnnotationFactory(item=items[0], annotator=peer, label="bird")
    task = _task(client_for(annotator), project)
    assert task["item"]["external_id"] == items[0].external_id  # closest to completion
    text = str(task)
    assert "bird" not in text and "gold" not in text and "n_annotations" not in text


def test_next_task_204_when_done_or_paused(client_for: Any, project: Project, annotator: Any, requester: Any) -> None:
    client = client_for(annotator)
    for _ in range(project.items.count()):
        task = _task(client, project)
        response = client.post(
            f"{P}/{project.pk}/annotations/", {"item": task["item"]["external_id"], "label": "cat"}, format="json"
        )
        assert response.status_code == 201
    assert client.post(f"{P}/{project.pk}/next-task/").status_code == 204
    late = UserFactory(username="late")
    project.memberships.create(user=late)
    other = client_for(late)
    response = client_for(requester).patch(f"{P}/{project.pk}/", {"is_active": False}, format="json")
    assert response.status_code == 200
    assert other.post(f"{P}/{project.pk}/next-task/").status_code == 204


def test_skip_then_other_item(client_for: Any, project: Project, annotator: Any) -> None:
    client = client_for(annotator)
    task = _task(client, project)
    response = client.post(f"{P}/{project.pk}/assignments/{task['assignment_id']}/skip/")
    assert response.status_code == 200
    again = client.post(f"{P}/{project.pk}/assignments/{task['assignment_id']}/skip/")
    assert again.status_code == 400 and "assignment" in again.data
    assert _task(client, project)["item"]["external_id"] != task["item"]["external_id"]


def test_annotation_filters(client_for: Any, project: Project, requester: Any, annotator: Any) -> None:
    items = list(project.items.order_by("id"))
    AnnotationFactory(item=items[0], annotator=annotator, label="cat")
    AnnotationFactory(item=items[1], annotator=annotator, label="dog")
    AnnotationFactory(item=items[1], label="dog")
    client = client_for(requester)
    url = f"{P}/{project.pk}/annotations/"
    assert client.get(url, {"annotator": "annotator"}).data["count"] == 2
    assert client.get(url, {"label": "dog"}).data["count"] == 2
    assert client.get(url, {"item": items[1].external_id}).data["count"] == 2
    assert client.get(url, {"source": "bogus"}).status_code == 400
    items_url = f"{P}/{project.pk}/items/"
    assert client.get(items_url, {"has_gold": "true"}).data["count"] == 2
    assert client.get(items_url, {"min_annotations": 2}).data["count"] == 1


def test_annotator_stats_majority_then_run(client_for: Any, project: Project, requester: Any, annotator: Any) -> None:
    items = list(project.items.order_by("id"))
    peers = [UserFactory(username=f"peer{i}") for i in range(2)]
    # Item 0: cat, cat, dog(annotator) → annotator disagrees; item 1: dog ×3 → agrees.
    AnnotationFactory(item=items[0], annotator=peers[0], label="cat")
    AnnotationFactory(item=items[0], annotator=peers[1], label="cat")
    AnnotationFactory(item=items[0], annotator=annotator, label="dog")
    for user in (*peers, annotator):
        AnnotationFactory(item=items[1], annotator=user, label="dog")
    AnnotationFactory(item=items[2], annotator=annotator, label="bird")  # alone: no majority to compare
    url = f"{P}/{project.pk}/annotator-stats/"
    rows = {row["username"]: row for row in client_for(requester).get(url).data}
    assert rows["annotator"]["n_annotations"] == 3
    assert rows["annotator"]["n_compared"] == 2 and rows["annotator"]["agreement"] == pytest.approx(0.5)
    assert rows["annotator"]["aggregate_source"] == "majority_vote" and rows["annotator"]["learned_accuracy"] is None
    assert rows["peer0"]["agreement"] == pytest.approx(1.0)

    run = InferenceRun.objects.create(project=project, model="ds", status=RunStatus.PUBLISHED)
    from crowdlab.results.models import AggregatedLabel

    for item, label in ((items[0], "dog"), (items[1], "dog"), (items[2], "cat")):
        AggregatedLabel.objects.create(run=run, item=item, label=label, confidence=0.9, probabilities=[0.1, 0.8, 0.1])
    AnnotatorConfusion.objects.create(run=run, annotator=annotator, matrix=[[1, 0, 0]] * 3, learned_accuracy=0.75)
    InferenceRun.objects.create(project=project, model="ds", status=RunStatus.RUNNING)  # newer, unpublished: ignored
    rows = {row["username"]: row for row in client_for(requester).get(url).data}
    assert rows["annotator"]["aggregate_source"] == "run" and rows["annotator"]["run_id"] == run.pk
    assert rows["annotator"]["n_compared"] == 3 and rows["annotator"]["agreement"] == pytest.approx(2 / 3)
    assert rows["annotator"]["learned_accuracy"] == pytest.approx(0.75)
    assert rows["peer0"]["learned_accuracy"] is None


def test_token_auth(client_for: Any, project: Project, annotator: Any) -> None:
    anonymous = client_for(None)
    bad = anonymous.post("/api/auth/token/", {"username": "annotator", "password": "wrong"}, format="json")
    assert bad.status_code == 400
    good = anonymous.post("/api/auth/token/", {"username": "annotator", "password": DEFAULT_PASSWORD}, format="json")
    assert good.status_code == 200
    assert Token.objects.get(user=annotator).key == good.data["token"]
    anonymous.credentials(HTTP_AUTHORIZATION=f"Token {good.data['token']}")
    assert anonymous.post(f"{P}/{project.pk}/next-task/").status_code == 200


def test_schema_and_docs(client_for: Any, annotator: Any) -> None:
    schema = client_for(annotator).get("/api/schema/", {"format": "json"})
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (
        "/api/projects/",
        "/api/projects/{project_pk}/next-task/",
        "/api/projects/{project_pk}/annotations/",
        "/api/projects/{project_pk}/annotator-stats/",
        "/api/auth/token/",
    ):
        assert path in paths
    assert client_for(annotator).get("/api/docs/").status_code == 200


def test_list_bounds_and_odd_datetimes(client_for: Any, project: Project, requester: Any, annotator: Any) -> None:
    AnnotationFactory(item=project.items.first(), annotator=annotator, label="cat")
    client = client_for(requester)
    url = f"{P}/{project.pk}/annotations/"
    huge = client.get(url, {"limit": "99999999999999999999"})
    assert huge.status_code == 200 and huge.data["count"] == 1
    odd = client.get(url, {"created_after": "0582-10-31T00:18:10-21:38"})
    assert odd.status_code in (200, 400)
    assert client.get(url, {"created_after": "2000-01-01T00:00:00+14:00"}).data["count"] == 1
