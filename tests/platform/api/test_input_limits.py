"""Bad input is never a 500 (issue 14, items 5-7): JSON nested too deeply, raw
uploads that are not UTF-8, and free-form fields beyond their size limits all
get a 400 that names the limit (and the field, and the row), and store nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from crowdlab.labelling.models import Annotation
from crowdlab.labelling.services import next_task
from crowdlab.projects.models import Item, Project
from crowdlab.results.models import InferenceRun

pytestmark = pytest.mark.django_db

DEEP = ("[" * 100_000 + "]" * 100_000).encode()


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"k": value}
    return value


def _import_url(project: Project) -> str:
    return reverse("api:project-items-import", kwargs={"project_pk": project.pk})


def _crowd_url(project: Project) -> str:
    return reverse("api:project-crowd-import", kwargs={"project_pk": project.pk})


def _token_client(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def _assert_names_the_depth_limit(response: Any) -> None:
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"] == "application/json"
    detail = response.json()["detail"]
    assert "64" in detail and "JSON_MAX_DEPTH" in detail, detail


# --------------------------------------------------------------------------- item 5: depth


def test_anonymous_token_request_with_100k_levels_is_400(db: None) -> None:
    response = APIClient().generic("POST", "/api/auth/token/", DEEP, content_type="application/json")
    _assert_names_the_depth_limit(response)


def test_every_json_body_is_depth_checked_by_the_parser(
    project: Project, requester: Any, annotator: Any, client_for: Callable[[Any], APIClient]
) -> None:
    annotation = Annotation.objects.create(
        project=project, item=project.items.first(), annotator=annotator, label="cat"
    )
    owner, member = client_for(requester), client_for(annotator)
    cases = [
        (owner, "POST", "/api/projects/"),
        (owner, "PATCH", f"/api/projects/{project.pk}/"),
        (owner, "POST", f"/api/projects/{project.pk}/members/"),
        (owner, "POST", f"/api/projects/{project.pk}/runs/"),
        (member, "POST", f"/api/projects/{project.pk}/annotations/"),
        (member, "PATCH", f"/api/projects/{project.pk}/annotations/{annotation.pk}/"),
    ]
    for client, method, url in cases:
        _assert_names_the_depth_limit(client.generic(method, url, DEEP, content_type="application/json"))
    assert Project.objects.count() == 1 and not InferenceRun.objects.exists()
    assert Annotation.objects.get().label == "cat"


def test_annotator_fast_path_falls_through_to_the_400(project: Project, annotator: Any) -> None:
    # A token request takes api/hot.py's fast path first; a hostile body must not
    # recurse there, and the DRF view words the 400.
    assignment = next_task(project=project, annotator=annotator)
    client = _token_client(annotator)
    url = f"/api/projects/{project.pk}/annotations/"
    _assert_names_the_depth_limit(client.generic("POST", url, DEEP, content_type="application/json"))
    # ~900 levels decode in Python's json, but are still refused.
    body = json.dumps({"item": assignment.item.external_id, "label": "cat", "extra": _nested(900)})
    _assert_names_the_depth_limit(client.generic("POST", url, body.encode(), content_type="application/json"))
    assert not Annotation.objects.exists()
    ok = client.post(url, {"item": assignment.item.external_id, "label": "cat"}, format="json")
    assert ok.status_code == 201, ok.content


def test_depth_limit_comes_from_settings(
    project: Project, requester: Any, client_for: Callable[[Any], APIClient], settings: Any
) -> None:
    settings.JSON_MAX_DEPTH = 3
    client = client_for(requester)
    url = f"/api/projects/{project.pk}/"
    response = client.patch(url, {"classes": [{"name": "a", "key": None}, {"name": ["b"]}]}, format="json")
    assert response.status_code == 400
    assert "at most 3 levels" in response.json()["detail"]
    # Three levels are fine (and then the ordinary validation speaks).
    response = client.patch(url, {"classes": [{"name": "a"}, {"name": "b"}]}, format="json")
    assert response.status_code == 200, response.content


def test_item_data_nested_900_levels_is_400_naming_the_row(
    project: Project, requester: Any, client_for: Callable[[Any], APIClient]
) -> None:
    before = Item.objects.count()
    rows = [{"id": "fine", "text": "ok"}, {"id": "deep", "data": _nested(900)}]
    response = client_for(requester).post(_import_url(project), rows, format="json")
    assert response.status_code == 400, response.content[:300]
    body = response.json()
    assert set(body) == {"detail", "error_count", "errors", "errors_truncated"}
    assert body["errors"][0]["row"] == 2 and "JSON_MAX_DEPTH" in body["errors"][0]["message"]
    # The same rows as JSONL and as a multipart JSON file: the row again.
    jsonl = "\n".join(json.dumps(row) for row in rows).encode()
    response = client_for(requester).generic("POST", _import_url(project), jsonl, content_type="application/jsonl")
    assert response.status_code == 400
    assert [(e["row"], "JSON_MAX_DEPTH" in e["message"]) for e in response.json()["errors"]] == [(2, True)]
    upload = SimpleUploadedFile("items.json", json.dumps(rows).encode())
    response = client_for(requester).post(_import_url(project), {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert response.json()["errors"][0]["row"] == 2
    assert Item.objects.count() == before


def test_item_data_up_to_the_limit_is_imported(
    project: Project, requester: Any, client_for: Callable[[Any], APIClient]
) -> None:
    # The array and the row object are two levels of the body: data may nest 62 more.
    response = client_for(requester).post(_import_url(project), [{"id": "d62", "data": _nested(62)}], format="json")
    assert response.status_code == 201, response.content[:300]
    assert Item.objects.get(project=project, external_id="d62").data == _nested(62)


def test_csv_data_cell_is_depth_checked(
    project: Project, requester: Any, client_for: Callable[[Any], APIClient]
) -> None:
    cell = json.dumps(_nested(900)).replace('"', '""')
    body = f'id,data\nok,"{{}}"\ndeep,"{cell}"\n'.encode()
    response = client_for(requester).generic("POST", _import_url(project), body, content_type="text/csv")
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert (error["row"], error["field"]) == (2, "data") and "JSON_MAX_DEPTH" in error["message"]


# --------------------------------------------------------------------------- item 6: encodings


LATIN1_CSV = "id,text\nok,fine\ncafé,crème brûlée\n".encode("latin-1")


@pytest.mark.parametrize(
    ("body", "row", "field", "words"),
    [
        (LATIN1_CSV, 2, "id", "byte 0xE9"),
        ("id,text\nok,fine\n".encode("utf-16"), None, None, "UTF-16"),
        ("id,text\nok,fine\n".encode("utf-16-le"), None, None, "UTF-16"),
        (b"id,text\nok,\x80\xff\xfe garbage\n", 1, "text", "byte 0x80"),
        (bytes(range(256)) * 8, None, None, "NUL character"),
    ],
    ids=["latin-1", "utf-16", "utf-16-no-bom", "garbage-row", "binary"],
)
def test_raw_csv_that_is_not_utf8_is_400_naming_encoding_and_row(
    project: Project,
    requester: Any,
    client_for: Callable[[Any], APIClient],
    body: bytes,
    row: int | None,
    field: str | None,
    words: str,
) -> None:
    before = Item.objects.count()
    response = client_for(requester).generic("POST", _import_url(project), body, content_type="text/csv")
    assert response.status_code == 400, response.content[:300]
    error = response.json()["errors"][0]
    assert (error["row"], error["field"]) == (row, field), error
    assert words in error["message"] and ("UTF-8" in error["message"]), error
    assert Item.objects.count() == before


def test_raw_jsonl_that_is_not_utf8_is_400_naming_the_row(
    project: Project, requester: Any, client_for: Callable[[Any], APIClient]
) -> None:
    body = '{"id": "ok", "text": "fine"}\n{"id": "bad", "text": "crème"}\n'.encode("latin-1")
    for content_type in ("application/jsonl", "application/x-ndjson"):
        response = client_for(requester).generic("POST", _import_url(project), body, content_type=content_type)
        assert response.status_code == 400, response.content[:300]
        errors = response.json()["errors"]
        assert [e["row"] for e in errors] == [2] and "byte 0xE8" in errors[0]["message"]
    utf16 = '{"id": "ok", "text": "fine"}\n'.encode("utf-16")
    response = client_for(requester).generic("POST", _import_url(project), utf16, content_type="application/jsonl")
    assert response.status_code == 400 and "UTF-16" in response.json()["errors"][0]["message"]
    assert not Item.objects.filter(external_id="ok").exists()


def test_multipart_file_gets_the_same_row_error_as_the_raw_body(
    project: Project, requester: Any, client_for: Callable[[Any], APIClient]
) -> None:
    upload = SimpleUploadedFile("items.csv", LATIN1_CSV)
    response = client_for(requester).post(_import_url(project), {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert (response.json()["errors"][0]["row"], response.json()["errors"][0]["field"]) == (2, "id")


@pytest.mark.parametrize(
    ("body", "row", "words"),
    [
        ("item,annotator,label\na0,w1,cat\na1,wörker,dog\n".encode("latin-1"), 2, "byte 0xF6"),
        ("item,annotator,label\na0,w1,cat\n".encode("utf-16"), None, "UTF-16"),
        (b"item,annotator,label\n\xff\xfe\x00garbage,w1,cat\n", 1, "byte 0xFF"),
    ],
    ids=["latin-1", "utf-16", "garbage"],
)
def test_raw_crowd_csv_that_is_not_utf8_is_400(
    project: Project, requester: Any, client_for: Callable[[Any], APIClient], body: bytes, row: int | None, words: str
) -> None:
    response = client_for(requester).generic("POST", _crowd_url(project), body, content_type="text/csv")
    assert response.status_code == 400, response.content[:300]
    error = response.json()["errors"][0]
    assert error["row"] == row and words in error["message"] and "UTF-8" in error["message"], error
    assert not Annotation.objects.exists()


def test_json_body_that_is_not_utf8_is_400(
    project: Project, requester: Any, client_for: Callable[[Any], APIClient]
) -> None:
    body = '{"name": "Café", "classes": [{"name": "a"}, {"name": "b"}]}'.encode("latin-1")
    response = client_for(requester).generic("POST", "/api/projects/", body, content_type="application/json")
    assert response.status_code == 400
    assert "0xE9" in response.json()["detail"] and "utf-8" in response.json()["detail"]


# --------------------------------------------------------------------------- item 7: sizes


def test_ten_megabyte_text_is_400_naming_field_and_limit(
    project: Project, requester: Any, client_for: Callable[[Any], APIClient]
) -> None:
    before = Item.objects.count()
    big = "x" * (10 * 1024 * 1024)
    for client_call in (
        lambda: client_for(requester).post(_import_url(project), [{"id": "big", "text": big}], format="json"),
        lambda: client_for(requester).generic(
            "POST", _import_url(project), f"id,text\nbig,{big}\n".encode(), content_type="text/csv"
        ),
    ):
        response = client_call()
        assert response.status_code == 400
        error = response.json()["errors"][0]
        assert (error["row"], error["field"]) == (1, "text")
        assert "10,485,760 characters" in error["message"] and "1,000,000" in error["message"]
        assert "ITEM_TEXT_MAX_LENGTH" in error["message"]
    assert Item.objects.count() == before


def test_text_at_the_limit_is_accepted(
    project: Project, requester: Any, client_for: Callable[[Any], APIClient], settings: Any
) -> None:
    settings.ITEM_TEXT_MAX_LENGTH = 10
    response = client_for(requester).post(
        _import_url(project), [{"id": "ten", "text": "x" * 10}, {"id": "eleven", "text": "x" * 11}], format="json"
    )
    assert response.status_code == 400
    assert [(e["row"], e["field"]) for e in response.json()["errors"]] == [(2, "text")]
    response = client_for(requester).post(_import_url(project), [{"id": "ten", "text": "x" * 10}], format="json")
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("row", "setting", "value", "field", "words"),
    [
        ({"id": "d", "data": {"k": "x" * 30}}, "ITEM_DATA_MAX_BYTES", 20, "data", "ITEM_DATA_MAX_BYTES"),
        ({"id": "d", "data": {"k": "é" * 10}}, "ITEM_DATA_MAX_BYTES", 20, "data", "29 bytes"),
        ({"id": "f", "features": [1, 2, 3, 4]}, "ITEM_FEATURES_MAX_LENGTH", 3, "features", "ITEM_FEATURES_MAX_LENGTH"),
    ],
    ids=["data-bytes", "data-utf8-bytes", "features"],
)
def test_data_and_features_limits(
    project: Project,
    requester: Any,
    client_for: Callable[[Any], APIClient],
    settings: Any,
    row: dict[str, Any],
    setting: str,
    value: int,
    field: str,
    words: str,
) -> None:
    setattr(settings, setting, value)
    response = client_for(requester).post(_import_url(project), [row], format="json")
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["field"] == field and words in error["message"], error


def test_data_with_a_number_json_cannot_store_is_400(
    project: Project, requester: Any, client_for: Callable[[Any], APIClient]
) -> None:
    # 1e400 decodes to inf in Python, which JSON (and jsonb) cannot hold.
    body = b'[{"id": "inf", "data": {"x": 1e400}}]'
    response = client_for(requester).generic("POST", _import_url(project), body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "data"
    assert not Item.objects.filter(external_id="inf").exists()


def test_upload_text_limit(
    project: Project, requester: Any, client_for: Callable[[Any], APIClient], settings: Any
) -> None:
    settings.ITEM_TEXT_MAX_LENGTH = 5
    url = reverse("api:project-items-upload", kwargs={"project_pk": project.pk})
    image = SimpleUploadedFile("a.png", b"\x89PNG\r\n", content_type="image/png")
    response = client_for(requester).post(
        url, {"external_id": "img", "image": image, "text": "x" * 6}, format="multipart"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["errors"][0]["field"] == "text" and "ITEM_TEXT_MAX_LENGTH" in body["errors"][0]["message"]
    assert not Item.objects.filter(external_id="img").exists()


def test_project_instructions_limit(project: Project, requester: Any, client_for: Callable[[Any], APIClient]) -> None:
    url = f"/api/projects/{project.pk}/"
    response = client_for(requester).patch(url, {"instructions": "x" * 100_001}, format="json")
    assert response.status_code == 400
    message = response.json()["instructions"][0]
    assert "100000" in message and "PROJECT_INSTRUCTIONS_MAX_LENGTH" in message
    project.refresh_from_db()
    assert project.instructions == "Pick the animal shown."


def test_schema_documents_the_limits(client_for: Callable[[Any], APIClient], requester: Any) -> None:
    schema = client_for(requester).get("/api/schema/?format=json").json()
    row = schema["components"]["schemas"]["ItemImportRowRequest"]["properties"]
    assert row["text"]["maxLength"] == 1_000_000 and row["features"]["maxItems"] == 10_000
    assert "ITEM_DATA_MAX_BYTES" in row["data"]["description"]
    project = schema["components"]["schemas"]["ProjectRequest"]["properties"]
    assert project["instructions"]["maxLength"] == 100_000


def test_body_over_the_upload_limit_is_413(
    project: Project, requester: Any, annotator: Any, client_for: Callable[[Any], APIClient], settings: Any
) -> None:
    # DRF's parsers read the stream whole: DATA_UPLOAD_MAX_MEMORY_SIZE held only for request.body.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    rows = [{"id": f"r{index}", "text": "x" * 100} for index in range(100)]
    for body, content_type in (
        (json.dumps(rows).encode(), "application/json"),
        (("id,text\n" + "r,x\n" * 2000).encode(), "text/csv"),
    ):
        response = client_for(requester).generic("POST", _import_url(project), body, content_type=content_type)
        assert response.status_code == 413, response.content[:200]
        assert "DATA_UPLOAD_MAX_MEMORY_SIZE" in response.json()["detail"]
    assignment = next_task(project=project, annotator=annotator)
    big = json.dumps({"item": assignment.item.external_id, "label": "cat", "pad": "x" * 5000}).encode()
    response = _token_client(annotator).generic(
        "POST", f"/api/projects/{project.pk}/annotations/", big, content_type="application/json"
    )
    assert response.status_code == 413 and not Annotation.objects.exists()
    assert Item.objects.filter(external_id="r0").count() == 0
