"""API: bulk item import, crowd import and streamed export (api.views.items, api.views.export)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import StreamingHttpResponse
from django.urls import reverse

from crowdlab.labelling.models import Annotation
from crowdlab.projects.models import Item, Project
from crowdlab.results.models import AggregatedLabel, InferenceRun, LabelSource, RunStatus
from tests.platform.factories import AnnotationFactory, UserFactory, image_bytes

pytestmark = pytest.mark.django_db

# Annotators never see aggregates or manage items: 403; no relation: 404.
OWNER_ONLY_WRITE = {
    "anonymous": 401,
    "annotator": 403,
    "outsider": 404,
    "other_requester": 404,
    "admin": 201,
    "owner": 201,
}


def _import_url(project: Project) -> str:
    return reverse("api:project-items-import", kwargs={"project_pk": project.pk})


def _crowd_url(project: Project) -> str:
    return reverse("api:project-crowd-import", kwargs={"project_pk": project.pk})


def _export_url(project: Project, fmt: str | None = None) -> str:
    url = reverse("api:project-export", kwargs={"project_pk": project.pk})
    return f"{url}?as={fmt}" if fmt else url


def _body(response: Any) -> bytes:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content)


# --------------------------------------------------------------------------- permission matrix


def test_item_import_permissions(project: Project, assert_matrix: Callable[..., Any]) -> None:
    assert_matrix(
        "post",
        _import_url(project),
        OWNER_ONLY_WRITE,
        data=lambda role: [{"external_id": f"from-{role}", "text": "hello"}],
    )
    assert set(
        Item.objects.filter(project=project, external_id__startswith="from-").values_list("external_id", flat=True)
    ) == {
        "from-owner",
        "from-admin",
    }


def test_crowd_import_permissions(project: Project, assert_matrix: Callable[..., Any]) -> None:
    def payload(role: str) -> dict[str, Any]:
        return {"file": SimpleUploadedFile("crowd.csv", f"item,annotator,label\na0,{role},cat\n".encode(), "text/csv")}

    assert_matrix("post", _crowd_url(project), OWNER_ONLY_WRITE, data=payload, format="multipart")
    annotators = set(Annotation.objects.filter(project=project).values_list("annotator__username", flat=True))
    assert annotators == {f"p{project.pk}-owner", f"p{project.pk}-admin"}


def test_export_permissions(project: Project, assert_matrix: Callable[..., Any]) -> None:
    responses = assert_matrix(
        "get",
        _export_url(project, "json"),
        {"anonymous": 401, "annotator": 403, "outsider": 404, "other_requester": 404, "owner": 200, "admin": 200},
    )
    assert json.loads(_body(responses["owner"])) == json.loads(_body(responses["admin"]))


def test_item_upload_permissions(
    project: Project, assert_matrix: Callable[..., Any], settings: Any, tmp_path: Any
) -> None:
    settings.MEDIA_ROOT = tmp_path
    png = image_bytes("PNG")

    def payload(role: str) -> dict[str, Any]:
        return {"external_id": f"img-{role}", "image": SimpleUploadedFile(f"{role}.png", png, "image/png")}

    url = reverse("api:project-items-upload", kwargs={"project_pk": project.pk})
    responses = assert_matrix("post", url, OWNER_ONLY_WRITE, data=payload, format="multipart")
    item = Item.objects.get(project=project, external_id="img-owner")
    assert item.kind == "image" and item.image.name.endswith(".png")
    assert responses["owner"].json()["image"].startswith("/media/items/")


# --------------------------------------------------------------------------- item import


def test_import_json_array(project: Project, client_for: Callable[[Any], Any], requester: Any) -> None:
    response = client_for(requester).post(
        _import_url(project),
        [{"external_id": "n1", "text": "one", "gold": "dog"}, {"id": "n2", "image_url": "https://example.org/2.png"}],
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json() == {"created": 2, "kinds": {"image": 1, "text": 1}}
    assert Item.objects.get(project=project, external_id="n1").gold_label == "dog"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/jsonl", b'{"external_id": "n1", "text": "one"}\n{"external_id": "n2", "text": "two"}\n'),
        ("application/x-ndjson", b'{"external_id": "n1", "text": "one"}\n{"external_id": "n2", "text": "two"}\n'),
        ("text/csv; charset=utf-8", b"external_id,text\nn1,one\nn2,two\n"),
    ],
)
def test_import_raw_bodies(
    project: Project, client_for: Callable[[Any], Any], requester: Any, content_type: str, body: bytes
) -> None:
    response = client_for(requester).generic("POST", _import_url(project), body, content_type=content_type)
    assert response.status_code == 201, response.content
    assert response.json()["created"] == 2
    assert list(
        Item.objects.filter(project=project, external_id__in=["n1", "n2"])
        .values_list("text", flat=True)
        .order_by("external_id")
    ) == ["one", "two"]


def test_import_multipart_file(project: Project, client_for: Callable[[Any], Any], requester: Any) -> None:
    upload = SimpleUploadedFile("items.jsonl", b'{"id": "m1", "text": "x"}\n', "application/octet-stream")
    response = client_for(requester).post(_import_url(project), {"file": upload}, format="multipart")
    assert response.status_code == 201, response.content
    upload = SimpleUploadedFile("items.bin", b"id,text\nm2,y\n", "application/octet-stream")
    response = client_for(requester).post(_import_url(project), {"file": upload}, format="multipart")
    assert response.status_code == 400
    # The import's one 400 body, naming the field (was DRF's bare {"upload_format": [...]}).
    assert [error["field"] for error in response.json()["errors"]] == ["upload_format"]
    upload = SimpleUploadedFile("items.bin", b"id,text\nm2,y\n", "application/octet-stream")
    response = client_for(requester).post(
        _import_url(project), {"file": upload, "upload_format": "csv"}, format="multipart"
    )
    assert response.status_code == 201, response.content
    assert Item.objects.filter(project=project, external_id__in=["m1", "m2"]).count() == 2


def test_one_bad_row_is_400_listing_rows_and_nothing_imported(
    project: Project, client_for: Callable[[Any], Any], requester: Any
) -> None:
    before = Item.objects.filter(project=project).count()
    body = b"id,text,gold\nok1,a,cat\nok2,b,zebra\nok1,c,dog\na0,d,\n"
    response = client_for(requester).generic("POST", _import_url(project), body, content_type="text/csv")
    assert response.status_code == 400
    payload = response.json()
    assert "1-based" in payload["detail"] and "CSV header is not a row" in payload["detail"]
    assert payload["error_count"] == 3 and payload["errors_truncated"] is False
    assert payload["errors"] == [
        {"row": 2, "field": "gold", "message": "'zebra' is not a class of this project; allowed: cat, dog, bird."},
        {"row": 3, "field": "external_id", "message": "'ok1' repeats row 1; external ids are unique."},
        {"row": 4, "field": "external_id", "message": "'a0' already exists in this project."},
    ]
    assert Item.objects.filter(project=project).count() == before


def test_json_object_body_is_400(project: Project, client_for: Callable[[Any], Any], requester: Any) -> None:
    response = client_for(requester).post(_import_url(project), {"id": "x"}, format="json")
    assert response.status_code == 400
    assert "array" in json.dumps(response.json())


# --------------------------------------------------------------------------- crowd import


def test_crowd_import_raw_csv_task_worker_header(
    project: Project, client_for: Callable[[Any], Any], requester: Any
) -> None:
    body = b"task,worker,label\na0,w1,cat\na0,w2,dog\nb9,w1,bird\n"
    response = client_for(requester).generic("POST", _crowd_url(project), body, content_type="text/csv")
    assert response.status_code == 201, response.content
    assert response.json() == {
        "annotations_created": 3,
        "duplicates_skipped": 0,
        "items_created": 1,
        "annotators_created": 2,
        "members_added": 2,
    }
    response = client_for(requester).generic(
        "POST", _crowd_url(project), b"task,worker,label\na1,w1,horse\n", content_type="text/csv"
    )
    assert response.status_code == 400
    assert response.json()["errors"][0] == {
        "row": 1,
        "field": "label",
        "message": "'horse' is not a class of this project; allowed: cat, dog, bird.",
    }
    assert Annotation.objects.filter(project=project).count() == 3


# --------------------------------------------------------------------------- export


def test_export_streams_all_three_formats_with_headers(
    project: Project, client_for: Callable[[Any], Any], requester: Any
) -> None:
    item = Item.objects.get(project=project, external_id="a0")
    for index, label in enumerate(["dog", "dog", "cat"]):
        AnnotationFactory(item=item, annotator=UserFactory(username=f"w{index}"), label=label)
    client = client_for(requester)

    response = client.get(_export_url(project, "csv"), HTTP_ACCEPT="text/csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="animals-{project.pk}-labels.csv"'
    table = list(csv.DictReader(io.StringIO(_body(response).decode())))
    assert [row["item"] for row in table] == ["a0", "a1", "a2", "a3", "a4"]
    assert table[0]["label"] == "dog" and table[0]["p:dog"] == str(2 / 3) and table[0]["n_annotations"] == "3"
    assert table[0]["run_id"] == "" and table[1]["label"] == ""

    response = client.get(_export_url(project, "json"))
    assert response["Content-Type"] == "application/json"
    rows = json.loads(_body(response))
    assert rows[0]["label"] == "dog" and rows[0]["run_id"] is None

    response = client.get(_export_url(project, "jsonl"))
    assert response["Content-Type"] == "application/x-ndjson"
    assert [json.loads(line) for line in _body(response).decode().splitlines()] == rows

    # A published run replaces the majority vote for the items it covers.
    run = InferenceRun.objects.create(project=project, model="conal", status=RunStatus.PUBLISHED)
    AggregatedLabel.objects.create(
        run=run, item=item, label="cat", confidence=0.9, probabilities=[0.9, 0.05, 0.05], source=LabelSource.CROWD
    )
    rows = json.loads(_body(client.get(_export_url(project, "json"))))
    assert rows[0] == {
        "item": "a0",
        "label": "cat",
        "confidence": 0.9,
        "probabilities": {"cat": 0.9, "dog": 0.05, "bird": 0.05},
        "n_annotations": 3,
        "run_id": run.pk,
        "source": "crowd",
    }
    # The default is CSV.
    assert client.get(_export_url(project))["Content-Type"] == "text/csv; charset=utf-8"


def test_export_rejects_unknown_format(project: Project, client_for: Callable[[Any], Any], requester: Any) -> None:
    response = client_for(requester).get(_export_url(project, "xml"), HTTP_ACCEPT="text/csv")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"as": ["'xml' is not an export format; allowed: csv, json, jsonl."]}


def test_schema_documents_the_data_endpoints(client_for: Callable[[Any], Any], requester: Any) -> None:
    schema = client_for(requester).get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert "/api/projects/{project_pk}/export/" in paths
    assert set(paths["/api/projects/{project_pk}/items/import/"]["post"]["requestBody"]["content"]) == {
        "application/json",
        "application/jsonl",
        "application/x-ndjson",
        "text/csv",
        "multipart/form-data",
    }


@pytest.mark.parametrize("url_name", ["api:project-items-import", "api:project-crowd-import"])
@pytest.mark.parametrize("content_type", ["text/csv", "application/jsonl"])
def test_empty_raw_body_is_400(
    project: Project, client_for: Callable[[Any], Any], requester: Any, url_name: str, content_type: str
) -> None:
    url = reverse(url_name, kwargs={"project_pk": project.pk})
    response = client_for(requester).generic("POST", url, b"", content_type=content_type)
    assert response.status_code in (400, 415)
    assert response["Content-Type"] == "application/json"
