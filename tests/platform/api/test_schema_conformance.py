"""The OpenAPI schema matches what the API answers (issue 14, item 8): one test
per violation schemathesis reported, each a real request through the WSGI app
whose status code, content type and body are validated against /api/schema/."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.authtoken.models import Token
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from crowdlab.labelling.services import next_task
from crowdlab.projects.models import Project
from tests.platform.api.test_schemathesis import schema

pytestmark = pytest.mark.usefixtures("keep_connection")

CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


def _headers(user: Any) -> dict[str, str]:
    return {"Authorization": f"Token {Token.objects.get_or_create(user=user)[0].key}"}


def _call(method: str, path: str, user: Any | None = None, **case: Any) -> Any:
    """Send one request for the operation at ``path`` and validate the answer against the schema."""
    operation = schema[path][method]
    built = operation.Case(headers=_headers(user) if user is not None else {}, **case)
    response = built.call()
    built.validate_response(response, checks=CHECKS)
    return response


def test_project_list_matches_its_oneof(project: Project, requester: Any, annotator: Any) -> None:
    # The list answered a page of projects where the schema promised one ProjectView.
    for user, access in ((requester, "manage"), (annotator, "annotate")):
        response = _call("GET", "/api/projects/", user)
        assert [row["access"] for row in response.json()["results"]] == [access]


def test_item_url_may_be_empty(project: Project, requester: Any, annotator: Any) -> None:
    # "" where the schema said format "uri".
    response = _call("GET", "/api/projects/{project_pk}/items/", requester, path_parameters={"project_pk": project.pk})
    assert {row["url"] for row in response.json()["results"]} == {""}
    response = _call(
        "POST", "/api/projects/{project_pk}/next-task/", annotator, path_parameters={"project_pk": project.pk}
    )
    assert response.json()["item"]["url"] == ""


@pytest.mark.parametrize(
    "path", ["/api/projects/{project_pk}/crowd/import/", "/api/projects/{project_pk}/items/upload/"]
)
def test_import_400_bodies_have_detail(project: Project, requester: Any, path: str) -> None:
    # A form without its file answered DRF's {"file": [...]}, without "detail".
    response = _call(
        "POST", path, requester, path_parameters={"project_pk": project.pk}, body={}, media_type="multipart/form-data"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["detail"].startswith("Nothing was imported") and body["errors"][0]["field"] in {"file", "external_id"}


def test_run_now_answers_match_the_schema(project: Project, requester: Any) -> None:
    path, ids = "/api/projects/{project_pk}/runs/", {"project_pk": project.pk}
    created = _call("POST", path, requester, path_parameters=ids, body={}, media_type="application/json")
    assert created.status_code == 202 and created.json()["created_at"]
    # The 409 body is {"detail", "run"}: the schema documented a bare run (no created_at at its top level).
    conflict = _call("POST", path, requester, path_parameters=ids, body={}, media_type="application/json")
    assert conflict.status_code == 409 and conflict.json()["run"]["id"] == created.json()["id"]


def test_error_status_codes_are_documented(project: Project, requester: Any, annotator: Any) -> None:
    ids = {"project_pk": project.pk}
    assert _call("GET", "/api/projects/{project_pk}/runs/", path_parameters=ids).status_code == 401
    assert _call("GET", "/api/projects/{project_pk}/runs/", annotator, path_parameters=ids).status_code == 403
    assert _call("GET", "/api/projects/{project_pk}/results/labels/", requester, path_parameters=ids).status_code == 404
    assert (
        _call(
            "GET", "/api/projects/{project_pk}/annotations/", requester, path_parameters=ids, query={"offset": "-1"}
        ).status_code
        == 400
    )
    assert (
        _call(
            "POST",
            "/api/auth/token/",
            body={"username": "requester", "password": "wrong"},
            media_type="application/json",
        ).status_code
        == 400
    )
    # A path the URL patterns do not match (a non-numeric id) is a JSON 404, not the HTML page.
    response = _call(
        "GET",
        "/api/projects/{project_pk}/runs/{run_pk}/",
        requester,
        path_parameters={"project_pk": project.pk, "run_pk": "latest"},
    )
    assert response.status_code == 404 and response.json() == {"detail": "Not found."}


def test_skip_answers_match_the_schema(project: Project, annotator: Any) -> None:
    lease = next_task(project=project, annotator=annotator)
    path = "/api/projects/{project_pk}/assignments/{assignment_id}/skip/"
    ids = {"project_pk": project.pk, "assignment_id": lease.pk}
    assert _call("POST", path, annotator, path_parameters=ids).status_code == 200
    assert _call("POST", path, annotator, path_parameters=ids).status_code == 400  # skipped already
