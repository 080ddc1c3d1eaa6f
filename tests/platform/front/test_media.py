"""Issue 14, item 1: item images are served with the type verified from their
bytes, ``X-Content-Type-Options: nosniff`` and ``Content-Disposition: inline``.

Before the fix ``FileResponse`` guessed the type from the stored (client's)
file name, so an HTML file uploaded as ``image/png`` under a ``.html`` name
was served as ``text/html`` from crowdlab's origin: script in an admin's
session. Files stored before the fix keep their client names, so serving
re-reads the bytes instead of trusting any name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from crowdlab.labelling.services import next_task
from crowdlab.projects.models import Item, ItemKind, Project
from tests.platform.factories import HTML_PAGE as HTML
from tests.platform.factories import SVG_WITH_SCRIPT as SVG
from tests.platform.factories import image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


def _legacy_item(project: Project, stored_name: str, content: bytes) -> Item:
    """An image item as an upload before the fix left it: the client's file name on disk."""
    item = Item(project=project, external_id=f"legacy-{stored_name}", kind=ItemKind.IMAGE)
    item.image.save(stored_name, ContentFile(content), save=True)
    return item


def _media_url(item: Item) -> str:
    return reverse("front:item-media", args=[item.project_id, item.pk])


def test_uploaded_image_is_served_with_its_verified_type_and_safe_headers(
    project: Project,
    requester: Any,
    client_for: Callable[[Any], Any],
    web_client_for: Callable[[Any], Client],
    media_root: Path,
) -> None:
    content = image_bytes("JPEG")
    upload = SimpleUploadedFile("page.html", content, "text/html")
    response = client_for(requester).post(
        reverse("api:project-items-upload", kwargs={"project_pk": project.pk}),
        {"external_id": "photo", "image": upload},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    item = Item.objects.get(project=project, external_id="photo")

    served = web_client_for(requester).get(_media_url(item))

    assert served.status_code == 200
    assert served["Content-Type"] == "image/jpeg"
    assert served["X-Content-Type-Options"] == "nosniff"
    assert served["Content-Disposition"] == f'inline; filename="item-{item.pk}.jpg"'
    assert served["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert b"".join(served.streaming_content) == content


@pytest.mark.parametrize(
    ("stored_name", "content"),
    [("evil.html", HTML), ("evil.png", HTML), ("evil.svg", SVG), ("notes", b"just text")],
    ids=["html", "html-named-png", "svg", "no-extension"],
)
def test_a_legacy_file_that_is_not_an_image_is_never_served(
    stored_name: str,
    content: bytes,
    project: Project,
    requester: Any,
    admin_user: Any,
    web_client_for: Callable[[Any], Client],
    media_root: Path,
) -> None:
    item = _legacy_item(project, stored_name, content)
    for viewer in (requester, admin_user):  # the admin is whom a stored XSS would target
        response = web_client_for(viewer).get(_media_url(item))
        assert response.status_code == 404
        assert content not in response.content  # crowdlab's 404 page, not the file


def test_a_legacy_image_under_a_client_name_is_served_by_its_bytes(
    project: Project,
    requester: Any,
    web_client_for: Callable[[Any], Client],
    media_root: Path,
) -> None:
    item = _legacy_item(project, "photo.html", image_bytes("GIF"))
    response = web_client_for(requester).get(_media_url(item))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert response["Content-Disposition"] == f'inline; filename="item-{item.pk}.gif"'


def test_media_is_refused_to_the_outsider_and_to_members_without_the_item(
    project: Project,
    requester: Any,
    annotator: Any,
    outsider: Any,
    other_requester: Any,
    web_client_for: Callable[[Any], Client],
    media_root: Path,
) -> None:
    Item.objects.filter(project=project).delete()
    item = _legacy_item(project, "cat.png", image_bytes("PNG"))
    url = _media_url(item)
    assert web_client_for(outsider).get(url).status_code == 404
    assert web_client_for(other_requester).get(url).status_code == 404
    assert web_client_for(None).get(url).status_code == 302  # to the login page
    assert web_client_for(annotator).get(url).status_code == 403  # a member not (yet) handed the item
    assert next_task(project=project, annotator=annotator).item_id == item.pk
    assert web_client_for(annotator).get(url)["Content-Type"] == "image/png"
