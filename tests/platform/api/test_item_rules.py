"""The API's item fields and the import services apply one set of rules (``projects.importing.rows``).

Each case sends the same bad value through the serializer, the HTTP API and the
service, and requires the same field and the same message from all three; the
limit comes from settings *at the time of the check*, so changing it moves both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from crowdlab.api.views.items import ItemUploadSerializer
from crowdlab.projects.importing import (
    ImportValidationError,
    item_create_with_file,
    items_import,
)
from crowdlab.projects.models import Item, Project

# A PNG signature is enough: every case here fails on a field before the image is read.
_PNG = b"\x89PNG\r\n\x1a\n"


def _image() -> SimpleUploadedFile:
    return SimpleUploadedFile("a.png", _PNG, content_type="image/png")


def _serializer_errors(fields: dict[str, str]) -> dict[str, list[str]]:
    form = ItemUploadSerializer(data={**fields, "image": _image()})
    assert not form.is_valid()
    return {name: [str(message) for message in messages] for name, messages in form.errors.items()}


def _service_errors(project: Project, fields: dict[str, str]) -> dict[str | None, list[str]]:
    with pytest.raises(ImportValidationError) as excinfo:
        item_create_with_file(project=project, image=_image(), **fields)
    errors: dict[str | None, list[str]] = {}
    for error in excinfo.value.errors:
        assert error.row == 1
        errors.setdefault(error.field, []).append(error.message)
    return errors


def _api_errors(client: APIClient, project: Project, fields: dict[str, str]) -> dict[str | None, list[str]]:
    url = reverse("api:project-items-upload", kwargs={"project_pk": project.pk})
    response = client.post(url, {**fields, "image": _image()}, format="multipart")
    assert response.status_code == 400, response.content
    errors: dict[str | None, list[str]] = {}
    for error in response.json()["errors"]:
        errors.setdefault(error["field"], []).append(error["message"])
    return errors


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        (
            {"external_id": "t", "text": "x" * 6},
            "text",
            "is 6 characters long; at most 5 are allowed (ITEM_TEXT_MAX_LENGTH).",
        ),
        ({"external_id": "t", "text": "a\x00b"}, "text", "a NUL character"),
        ({"external_id": "x" * 256}, "external_id", "is required, 1–255 characters."),
        ({"external_id": "   "}, "external_id", "is required, 1–255 characters."),
    ],
    ids=["text-too-long", "text-nul", "id-too-long", "id-blank"],
)
def test_the_same_bad_field_gets_the_same_error_everywhere(
    project: Project,
    requester: Any,
    client_for: Callable[[Any], APIClient],
    settings: Any,
    fields: dict[str, str],
    field: str,
    words: str,
) -> None:
    settings.ITEM_TEXT_MAX_LENGTH = 5
    from_serializer = _serializer_errors(fields)
    from_service = _service_errors(project, fields)
    from_api = _api_errors(client_for(requester), project, fields)
    assert set(from_serializer) == set(from_service) == set(from_api) == {field}
    assert from_serializer[field] == from_service[field] == from_api[field]
    assert words in from_service[field][0]
    assert not Item.objects.filter(project=project, external_id=fields["external_id"].strip()).exists()


def test_a_changed_text_limit_moves_the_serializer_and_the_services_together(project: Project, settings: Any) -> None:
    def serializer_text_errors(text: str) -> list[str]:
        form = ItemUploadSerializer(data={"external_id": "t", "text": text, "image": _image()})
        form.is_valid()
        return [str(message) for message in form.errors.get("text", [])]

    def bulk_text_errors(text: str) -> list[str]:
        try:
            items_import(project=project, rows=[{"id": "bulk", "text": text}])
        except ImportValidationError as rejected:
            return [error.message for error in rejected.errors if error.field == "text"]
        project.items.filter(external_id="bulk").delete()
        return []

    six = "x" * 6
    settings.ITEM_TEXT_MAX_LENGTH = 5
    refused = serializer_text_errors(six)
    assert refused == bulk_text_errors(six) == ["is 6 characters long; at most 5 are allowed (ITEM_TEXT_MAX_LENGTH)."]
    settings.ITEM_TEXT_MAX_LENGTH = 6
    assert serializer_text_errors(six) == bulk_text_errors(six) == []
