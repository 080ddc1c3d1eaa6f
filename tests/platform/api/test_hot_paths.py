"""The hot paths of next-task and submit (issue 3's load work): the hand-built
responses render exactly what the serializers render, the token fast path
(``api.hot``) answers exactly like the DRF view and refuses everyone the DRF
view refuses, and the live trigger still starts a run on the N-th submit.

Tests taking ``hot_client_for`` run twice: with DRF's forced authentication
(the DRF view) and with a real ``Authorization: Token`` header (the fast path
first, falling back to the DRF view)."""

from __future__ import annotations

from typing import Any

import pytest

from crowdlab.api.serializers import AnnotationSerializer, TaskSerializer
from crowdlab.labelling.models import Annotation, Assignment, AssignmentStatus
from crowdlab.projects.models import Item, Project
from crowdlab.results.models import InferenceRun


@pytest.fixture(params=["drf", "token"])
def hot_client_for(request: Any, client_for: Any) -> Any:
    """``hot_client_for(user)``: an APIClient for ``user``, force-authenticated
    (param "drf") or sending the user's token (param "token")."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    def make(user: Any) -> APIClient:
        if request.param == "drf":
            return client_for(user)
        client = APIClient()
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    make.mode = request.param  # type: ignore[attr-defined]
    return make


def test_next_task_and_submit_payloads_match_the_serializers(
    hot_client_for: Any, project: Project, annotator: Any
) -> None:
    client = hot_client_for(annotator)
    task = client.post(f"/api/projects/{project.pk}/next-task/")
    assert task.status_code == 200, task.content
    assignment = Assignment.objects.select_related("item").get(pk=task.json()["assignment_id"])
    assert task.json() == TaskSerializer(assignment).data

    external_id = task.json()["item"]["external_id"]
    submit = client.post(
        f"/api/projects/{project.pk}/annotations/",
        {"item": external_id, "label": "dog", "time_spent_ms": 1200},
        format="json",
    )
    assert submit.status_code == 201, submit.content
    annotation = Annotation.objects.select_related("item", "annotator").get(pk=submit.json()["id"])
    assert submit.json() == AnnotationSerializer(annotation).data
    # The single-statement path did all three writes.
    assert Item.objects.get(external_id=external_id, project=project).n_annotations == 1
    assert Assignment.objects.get(pk=assignment.pk).status == AssignmentStatus.DONE

    # Same label again: idempotent 200 with the same row; another label: 409.
    again = client.post(
        f"/api/projects/{project.pk}/annotations/", {"item": external_id, "label": "dog"}, format="json"
    )
    assert again.status_code == 200, again.content
    assert again.json()["id"] == annotation.pk
    changed = client.post(
        f"/api/projects/{project.pk}/annotations/", {"item": external_id, "label": "cat"}, format="json"
    )
    assert changed.status_code == 409, changed.content
    assert Annotation.objects.filter(item__external_id=external_id, project=project).count() == 1


def test_fast_submit_still_validates_the_label(hot_client_for: Any, project: Project, annotator: Any) -> None:
    client = hot_client_for(annotator)
    external_id = client.post(f"/api/projects/{project.pk}/next-task/").json()["item"]["external_id"]
    bad = client.post(f"/api/projects/{project.pk}/annotations/", {"item": external_id, "label": "cow"}, format="json")
    assert bad.status_code == 400
    assert "allowed labels" in str(bad.json()["label"])
    assert not Annotation.objects.filter(project=project).exists()


@pytest.fixture
def private_inference_queue() -> Any:
    """Route the run this test triggers to a queue no worker consumes, and drop it after."""
    from crowdlab.celery import app as celery_app
    from tests.brokers import delete_queues, route_live_tasks_to, session_queue

    def use_routes(routes: Any) -> None:
        # Celery caches the routing table and the router on first send; without
        # the reset an override made later is ignored, and one made first sticks
        # for the whole session (sending the live worker tests' runs nowhere).
        celery_app.conf.task_routes = routes
        celery_app.amqp.flush_routes()
        celery_app.amqp.__dict__.pop("router", None)

    queue = session_queue("perf_hot_paths_test")
    saved = celery_app.conf.task_routes
    route_live_tasks_to(queue)
    yield queue
    use_routes(saved)
    delete_queues([queue])


@pytest.mark.django_db(transaction=True)
def test_trigger_starts_a_run_on_the_nth_submit(
    hot_client_for: Any, project: Project, annotator: Any, private_inference_queue: str
) -> None:
    from crowdlab.projects.models import Membership
    from tests.platform.factories import UserFactory

    n = 4
    Project.objects.filter(pk=project.pk).update(retrain_every_n=n, k=1)
    for index in range(5, 5 + n):
        Item.objects.create(project=project, external_id=f"a{index}", kind="text", text="more")
    crowd = [UserFactory(username=f"debounce{r}") for r in range(n)]
    for submitted, user in enumerate(crowd, start=1):
        Membership.objects.create(project=project, user=user)
        client = hot_client_for(user)
        external_id = client.post(f"/api/projects/{project.pk}/next-task/").json()["item"]["external_id"]
        response = client.post(
            f"/api/projects/{project.pk}/annotations/", {"item": external_id, "label": "cat"}, format="json"
        )
        assert response.status_code == 201, response.content
        expected_runs = 1 if submitted == n else 0
        assert InferenceRun.objects.filter(project=project).count() == expected_runs, submitted


def test_submit_bodies_outside_the_plain_form_still_go_through_the_serializer(
    hot_client_for: Any, project: Project, annotator: Any
) -> None:
    client = hot_client_for(annotator)
    external_id = client.post(f"/api/projects/{project.pk}/next-task/").json()["item"]["external_id"]
    negative = client.post(
        f"/api/projects/{project.pk}/annotations/",
        {"item": external_id, "label": "dog", "time_spent_ms": -1},
        format="json",
    )
    assert negative.status_code == 400 and "time_spent_ms" in negative.json()
    missing = client.post(f"/api/projects/{project.pk}/annotations/", {"label": "dog"}, format="json")
    assert missing.status_code == 400 and "item" in missing.json()
    # The serializer trims whitespace: " dog " is stored as "dog", as before.
    padded = client.post(
        f"/api/projects/{project.pk}/annotations/", {"item": external_id, "label": " dog "}, format="json"
    )
    assert padded.status_code == 201, padded.content
    assert padded.json()["label"] == "dog"


def test_token_auth_on_the_hot_endpoints(project: Project, annotator: Any) -> None:
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    token = Token.objects.create(user=annotator)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    task = client.post(f"/api/projects/{project.pk}/next-task/")
    assert task.status_code == 200, task.content
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert client.post(f"/api/projects/{project.pk}/next-task/").status_code == 401
    annotator.is_active = False
    annotator.save(update_fields=["is_active"])
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    refused = client.post(
        f"/api/projects/{project.pk}/annotations/",
        {"item": task.json()["item"]["external_id"], "label": "dog"},
        format="json",
    )
    assert refused.status_code == 401


def _token_client(user: Any) -> Any:
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def test_token_submit_is_one_statement_and_next_task_saves_the_auth_queries(project: Project, annotator: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = _token_client(annotator)
    with CaptureQueriesContext(connection) as next_queries:
        task = client.post(f"/api/projects/{project.pk}/next-task/")
    assert task.status_code == 200, task.content
    # BEGIN, auth + membership lock + current lease, candidate, lease, COMMIT
    # (the DRF view needs two more: token + user, project + membership).
    assert len(next_queries) == 5, [q["sql"][:80] for q in next_queries.captured_queries]
    with CaptureQueriesContext(connection) as submit_queries:
        submit = client.post(
            f"/api/projects/{project.pk}/annotations/",
            {"item": task.json()["item"]["external_id"], "label": "dog"},
            format="json",
        )
    assert submit.status_code == 201, submit.content
    assert len(submit_queries) == 1, [q["sql"][:80] for q in submit_queries.captured_queries]
    assert submit.json()["annotator"] == annotator.username
    stored = Annotation.objects.get(pk=submit.json()["id"])
    assert (stored.annotator_id, stored.label, stored.source) == (annotator.pk, "dog", "web")


def test_token_fast_path_refuses_everyone_the_drf_view_refuses(
    project: Project, annotator: Any, outsider: Any, requester: Any, other_requester: Any, admin_user: Any
) -> None:
    """Outsiders, the owner and admins (who manage but do not label), unknown
    tokens and inactive users get the DRF view's answer, and nothing is written."""
    task = _token_client(annotator).post(f"/api/projects/{project.pk}/next-task/")
    external_id = task.json()["item"]["external_id"]
    body = {"item": external_id, "label": "dog"}
    expected = {outsider: 404, other_requester: 404, requester: 403, admin_user: 403}
    for user, code in expected.items():
        client = _token_client(user)
        assert client.post(f"/api/projects/{project.pk}/next-task/").status_code == code, user.username
        assert client.post(f"/api/projects/{project.pk}/annotations/", body, format="json").status_code == code
    from rest_framework.test import APIClient

    unknown = APIClient()
    unknown.credentials(HTTP_AUTHORIZATION="Token " + "f" * 40)
    assert unknown.post(f"/api/projects/{project.pk}/next-task/").status_code == 401
    assert unknown.post(f"/api/projects/{project.pk}/annotations/", body, format="json").status_code == 401
    assert not Annotation.objects.filter(project=project).exists()
    assert Assignment.objects.filter(project=project).count() == 1  # only the member's lease


def test_token_submit_without_the_callers_lease_falls_back_to_the_full_rules(
    project: Project, annotator: Any, items: list[Item]
) -> None:
    """An item the caller holds no lease on (another member's, or none) is not
    written by the fast path; the DRF view then answers 403 (no lease) or 404."""
    from crowdlab.projects.models import Membership
    from tests.platform.factories import UserFactory

    other = UserFactory(username="second-member")
    Membership.objects.create(project=project, user=other)
    leased = _token_client(other).post(f"/api/projects/{project.pk}/next-task/").json()["item"]["external_id"]
    response = _token_client(annotator).post(
        f"/api/projects/{project.pk}/annotations/", {"item": leased, "label": "dog"}, format="json"
    )
    assert response.status_code == 403, response.content
    assert "not assigned to you" in response.json()["detail"]
    assert not Annotation.objects.filter(project=project).exists()
    missing = _token_client(annotator).post(
        f"/api/projects/{project.pk}/annotations/", {"item": "no-such-item", "label": "dog"}, format="json"
    )
    assert missing.status_code == 404


def test_token_next_task_on_a_paused_project_is_204(project: Project, annotator: Any) -> None:
    Project.objects.filter(pk=project.pk).update(is_active=False)
    assert _token_client(annotator).post(f"/api/projects/{project.pk}/next-task/").status_code == 204
    assert not Assignment.objects.filter(project=project).exists()


@pytest.mark.django_db(transaction=True)
def test_sweep_starts_a_threshold_run_the_submits_missed(
    project: Project, annotator: Any, items: list[Item], private_inference_queue: str
) -> None:
    """Backstop for the in-statement check: N labels that committed without a
    run (here written directly, as when the last ones race) start one at the
    next sweep, as a threshold run."""
    from crowdlab.labelling.models import AnnotationSource
    from crowdlab.live.triggers import sweep
    from crowdlab.results.models import RunTrigger

    Project.objects.filter(pk=project.pk).update(retrain_every_n=2, retrain_every_minutes=0)
    for item in items[:2]:
        Annotation.objects.create(
            project=project, item=item, annotator=annotator, label="dog", source=AnnotationSource.WEB
        )
    assert not InferenceRun.objects.filter(project=project).exists()
    started = sweep()["started"]
    run = InferenceRun.objects.get(project=project)
    assert started == [run.pk] and run.trigger == RunTrigger.THRESHOLD
    assert sweep()["started"] == []  # one active run per project


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "detail"),  # a RecursionError in json.loads, a 500, before
        (b'{"item": "%s", "label": "cat", "time_spent_ms": "12"}', "time_spent_ms"),  # was coerced to 12
        (b'{"item": 5, "label": "cat"}', "item"),  # was coerced to "5"
        (b'{"item": "%s", "label": "cat", "time_spent_ms": true}', "time_spent_ms"),
    ],
    ids=["deep", "string-number", "number-string", "boolean-number"],
)
def test_bad_submit_bodies_get_the_same_400_in_both_modes(
    hot_client_for: Any, project: Project, annotator: Any, body: bytes, field: str
) -> None:
    client = hot_client_for(annotator)
    task = client.post(f"/api/projects/{project.pk}/next-task/").json()
    payload = body.replace(b"%s", task["item"]["external_id"].encode()) if b"%s" in body else body
    response = client.generic(
        "POST", f"/api/projects/{project.pk}/annotations/", payload, content_type="application/json"
    )
    assert response.status_code == 400, response.content[:200]
    assert field in response.json()
    assert not Annotation.objects.exists()
