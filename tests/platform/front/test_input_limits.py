"""The web UI meets the same input limits as the API (issue 14, items 5-7)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from crowdlab.labelling.models import Annotation
from crowdlab.labelling.services import next_task
from crowdlab.projects.models import Project

pytestmark = pytest.mark.django_db


def test_labelling_fetch_with_deep_json_is_400_naming_the_limit(
    project: Project, annotator: Any, web_client_for: Callable[..., Client]
) -> None:
    assignment = next_task(project=project, annotator=annotator)
    client = web_client_for(annotator)
    for name in ("front:label-submit", "front:label-skip"):
        response = client.post(
            reverse(name, args=[project.pk]), data=b"[" * 100_000 + b"]" * 100_000, content_type="application/json"
        )
        assert response.status_code == 400
        assert "JSON_MAX_DEPTH" in response.json()["error"]
    body = {"assignment_id": assignment.pk, "label": "cat", "extra": json.loads('{"k":' * 900 + "1" + "}" * 900)}
    response = client.post(
        reverse("front:label-submit", args=[project.pk]), data=json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 400 and "JSON_MAX_DEPTH" in response.json()["error"]
    assert not Annotation.objects.exists()


def test_upload_form_reports_bytes_that_are_not_utf8_by_row(
    project: Project, requester: Any, web_client_for: Callable[..., Client]
) -> None:
    upload = SimpleUploadedFile("items.csv", "external_id,text\nn1,fine\nn2,crème\n".encode("latin-1"))
    response = web_client_for(requester).post(
        reverse("front:project-upload", args=[project.pk]), {"items-file": upload}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert 'data-row="2"' in html and "byte 0xE8" in html and "UTF-8" in html
    crowd = SimpleUploadedFile("crowd.csv", "item,annotator,label\na0,wörker,cat\n".encode("latin-1"))
    response = web_client_for(requester).post(reverse("front:project-crowd", args=[project.pk]), {"crowd-file": crowd})
    assert response.status_code == 400 and "byte 0xF6" in response.content.decode()
    assert project.items.count() == 5 and not Annotation.objects.exists()


def test_upload_form_applies_the_size_limits(
    project: Project, requester: Any, web_client_for: Callable[..., Client], settings: Any
) -> None:
    settings.ITEM_TEXT_MAX_LENGTH = 4
    upload = SimpleUploadedFile("items.jsonl", b'{"id": "n1", "text": "short"}\n')
    response = web_client_for(requester).post(
        reverse("front:project-upload", args=[project.pk]), {"items-file": upload}
    )
    assert response.status_code == 400
    assert "ITEM_TEXT_MAX_LENGTH" in response.content.decode()
    assert project.items.count() == 5


def test_project_form_limits_instructions(
    project: Project, requester: Any, web_client_for: Callable[..., Client]
) -> None:
    response = web_client_for(requester).post(
        reverse("front:project-edit", args=[project.pk]),
        {
            "name": "Animals",
            "instructions": "x" * 100_001,
            "classes": "cat, 1\ndog, 2\nbird, 3",
            "k": 3,
            "model": "conal",
            "retrain_every_n": 50,
            "retrain_every_minutes": 10,
            "lease_seconds": 600,
            "is_active": "on",
        },
    )
    assert response.status_code == 200  # the form again, with the error
    assert "100000" in response.content.decode().replace(",", "")
    project.refresh_from_db()
    assert project.instructions == "Pick the animal shown."
