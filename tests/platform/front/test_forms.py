"""The project form's classes field: errors name the line the requester typed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django import forms
from django.test import Client
from django.urls import reverse

from crowdlab.front.forms import parse_classes
from crowdlab.projects.models import Project


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Blank lines count: the requester sees line numbers, not list positions.
        ("street\n\nforest\nstreet", "line 4 (class name): duplicate class 'street'."),
        ("street, a\nforest, A", "line 2 (key): key 'A' is used twice."),
        (
            "street\nforest, s",
            "line 2 (key): a single character other than S and U (reserved for skip and undo)"
            " and ? (opens the list of shortcuts).",
        ),
        ("street\nforest, ?", "line 2 (key): a single character other than S and U"),
        ("street\n" + "x" * 101, "line 2 (class name): must be 1–100 characters."),
        ("street", "give at least 2 classes, one per line."),
        ("street\n, f", "line 2: the class name is empty."),
    ],
)
def test_class_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(forms.ValidationError) as error:
        parse_classes(text)
    (got,) = error.value.messages
    assert got.startswith(message), got
    assert "classes[" not in got


def test_the_form_page_says_line_3_not_classes_2(requester: Any, web_client_for: Callable[..., Client]) -> None:
    response = web_client_for(requester).post(
        reverse("front:project-new"),
        {
            "name": "Scenes",
            "classes": "cat\ndog\ncat",
            "k": 3,
            "model": "ds",
            "retrain_every_n": 20,
            "retrain_every_minutes": 5,
            "lease_seconds": 300,
            "is_active": "on",
        },
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "line 3 (class name): duplicate class &#x27;cat&#x27;." in page
    assert "classes[" not in page
    assert not Project.objects.filter(name="Scenes").exists()


def test_the_api_still_names_the_json_position(client_for: Callable[..., Any], requester: Any) -> None:
    response = client_for(requester).post(
        "/api/projects/",
        {
            "name": "Scenes",
            "classes": [{"name": "cat"}, {"name": "dog", "key": "?"}],
        },
        format="json",
    )
    assert response.status_code == 400
    assert "classes[1].key: a single character other than S and U" in str(response.json())
