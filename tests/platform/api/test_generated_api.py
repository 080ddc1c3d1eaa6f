"""API for CrowdInG's generated annotations (issue 5): the list endpoint and the export flag."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from crowdlab.projects.models import Project
from crowdlab.results.models import InferenceRun
from tests.platform.factories import AnnotationFactory, UserFactory, publish_with_generated

pytestmark = pytest.mark.django_db


@pytest.fixture
def generated_run(project: Project, annotator: Any) -> InferenceRun:
    items = {i.external_id: i for i in project.items.all()}
    others = [UserFactory(username=f"crowd{n}") for n in range(3)]
    AnnotationFactory(item=items["a0"], annotator=annotator, label="cat")
    return publish_with_generated(
        project,
        [
            (items["a0"], others[0], "cat", 0.9),
            (items["a0"], others[1], "dog", 0.6),
            (items["a1"], others[0], "bird", 0.7),
            (items["a2"], annotator, "cat", 0.55),
        ],
    )


def _url(project: Project) -> str:
    return f"/api/projects/{project.pk}/results/generated/"


def test_generated_list_permissions(project: Project, generated_run: Any, assert_matrix: Callable[..., Any]) -> None:
    responses = assert_matrix(
        "get",
        _url(project),
        {"anonymous": 401, "annotator": 403, "outsider": 404, "other_requester": 404, "owner": 200, "admin": 200},
    )
    assert responses["owner"].data["count"] == 4
    assert responses["admin"].data["count"] == 4


def test_generated_list_before_any_run_is_404(
    project: Project, client_for: Callable[[Any], Any], requester: Any
) -> None:
    response = client_for(requester).get(_url(project))
    assert response.status_code == 404


def test_generated_list_rows_filters_and_pagination(
    project: Project, generated_run: InferenceRun, client_for: Callable[[Any], Any], requester: Any
) -> None:
    client = client_for(requester)
    body = client.get(_url(project)).data
    first = body["results"][0]
    assert set(first) == {"item", "item_external_id", "annotator", "username", "label", "probability", "kind", "run"}
    assert all(row["kind"] == "generated" and row["run"] == generated_run.pk for row in body["results"])
    assert [r["item_external_id"] for r in body["results"]] == ["a0", "a0", "a1", "a2"]

    by_item = client.get(_url(project), {"item": "a0"}).data
    assert by_item["count"] == 2 and {r["label"] for r in by_item["results"]} == {"cat", "dog"}
    crowd0 = UserFactory._meta.model.objects.get(username="crowd0")
    by_annotator = client.get(_url(project), {"annotator": crowd0.pk}).data
    assert {r["item_external_id"] for r in by_annotator["results"]} == {"a0", "a1"}
    by_label = client.get(_url(project), {"label": "cat"}).data
    assert by_label["count"] == 2
    page = client.get(_url(project), {"limit": 1, "offset": 1}).data
    assert page["count"] == 4 and len(page["results"]) == 1 and page["results"][0]["label"] == "dog"
    pinned = client.get(_url(project), {"run": generated_run.pk}).data
    assert pinned["count"] == 4


def test_generated_list_rejects_bad_filters(
    project: Project, generated_run: Any, client_for: Callable[[Any], Any], requester: Any
) -> None:
    client = client_for(requester)
    bad_label = client.get(_url(project), {"label": "zebra"})
    assert bad_label.status_code == 400 and "label" in bad_label.data and "allowed" in str(bad_label.data["label"])
    bad_annotator = client.get(_url(project), {"annotator": "x"})
    assert bad_annotator.status_code == 400 and "annotator" in bad_annotator.data


def test_generated_list_is_the_latest_runs(
    project: Project, generated_run: Any, client_for: Callable[[Any], Any], requester: Any
) -> None:
    newer = publish_with_generated(project, [(project.items.get(external_id="a4"), requester, "dog", 0.5)])
    body = client_for(requester).get(_url(project)).data
    assert body["count"] == 1 and body["results"][0]["run"] == newer.pk


def _export(client: Any, project: Project, fmt: str, flag: str | None) -> Any:
    params = {"as": fmt} if flag is None else {"as": fmt, "generated": flag}
    return client.get(f"/api/projects/{project.pk}/export/", params)


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_export_with_and_without_the_generated_flag(
    project: Project, generated_run: Any, client_for: Callable[[Any], Any], requester: Any, fmt: str
) -> None:
    client = client_for(requester)
    n_items = project.items.count()
    for flag in (None, "0", "1"):
        response = _export(client, project, fmt, flag)
        assert response.status_code == 200
        text = b"".join(response.streaming_content).decode("utf-8")
        if fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(text)))
            header = text.splitlines()[0].split(",")
        elif fmt == "json":
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines()]
        if flag != "1":
            assert len(rows) == n_items
            assert all("kind" not in row and "annotator" not in row for row in rows)
            continue
        assert Counter(row["kind"] for row in rows) == {"aggregated": n_items, "generated": 4}
        generated = [row for row in rows if row["kind"] == "generated"]
        assert [(r["item"], r["label"]) for r in generated] == [
            ("a0", "cat"),
            ("a0", "dog"),
            ("a1", "bird"),
            ("a2", "cat"),
        ]
        if fmt == "csv":
            assert header[0] == "kind" and header[-2:] == ["annotator", "probability"]
            assert all(r["source"] == "generated" and r["n_annotations"] == "" for r in generated)
        else:
            assert all(set(r) == {"kind", "item", "annotator", "label", "probability", "run_id"} for r in generated)
        # The human count of a0 stays 1: generated rows never add to it.
        a0 = next(r for r in rows if r["kind"] == "aggregated" and r["item"] == "a0")
        assert str(a0["n_annotations"]) == "1"


def test_export_rejects_a_bad_generated_flag(
    project: Project, client_for: Callable[[Any], Any], requester: Any
) -> None:
    response = _export(client_for(requester), project, "csv", "yes")
    assert response.status_code == 400
    assert "generated" in response.json() and "0, 1" in response.json()["generated"][0]


def test_export_with_generated_keeps_its_permissions(
    project: Project, generated_run: Any, assert_matrix: Callable[..., Any]
) -> None:
    assert_matrix(
        "get",
        f"/api/projects/{project.pk}/export/?generated=1",
        {"anonymous": 401, "annotator": 403, "outsider": 404, "other_requester": 404, "owner": 200, "admin": 200},
    )


def test_schema_documents_the_endpoint_and_the_flag(client_for: Callable[[Any], Any], requester: Any) -> None:
    response = client_for(requester).get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert "/api/projects/{project_pk}/results/generated/" in schema["paths"]
    export_params = {p["name"] for p in schema["paths"]["/api/projects/{project_pk}/export/"]["get"]["parameters"]}
    assert "generated" in export_params
