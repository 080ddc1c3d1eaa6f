"""Issue 14, item 1: ``POST /api/projects/{id}/items/upload/`` checks the file's
real type from its bytes and stores it under a name of the server's choosing.

Before the fix the client's declared content type was trusted and its file
name kept, so an HTML or SVG page uploaded "as image/png" was later served
from crowdlab's origin as a page (``tests/platform/front/test_media.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from crowdlab.projects.models import Item, Project
from tests.platform.factories import HTML_PAGE, SVG_WITH_SCRIPT, image_bytes

pytestmark = pytest.mark.django_db

HTML, SVG = HTML_PAGE, SVG_WITH_SCRIPT
ALLOWED_NAMES = ("PNG", "JPEG", "GIF", "WebP")


@pytest.fixture
def media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


def _upload(
    client: Any, project: Project, name: str, content: bytes, content_type: str, external_id: str = "img"
) -> Any:
    url = reverse("api:project-items-upload", kwargs={"project_pk": project.pk})
    upload = SimpleUploadedFile(name, content, content_type)
    return client.post(url, {"external_id": external_id, "image": upload}, format="multipart")


def _stored_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


@pytest.mark.parametrize(
    ("name", "content", "content_type"),
    [
        ("cat.png", HTML, "image/png"),  # an HTML page declared as a PNG
        ("cat.svg", SVG, "image/svg+xml"),  # SVG carries script: never accepted
        ("cat.png", SVG, "image/png"),
        ("cat.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, "image/png"),  # a PNG signature and no image
        ("cat.bmp", image_bytes("BMP"), "image/bmp"),  # a real image, but not one of the four
    ],
    ids=["html-as-png", "svg", "svg-as-png", "png-signature-only", "bmp"],
)
def test_upload_refuses_what_is_not_a_png_jpeg_gif_or_webp(
    name: str,
    content: bytes,
    content_type: str,
    project: Project,
    requester: Any,
    client_for: Callable[[Any], Any],
    media_root: Path,
) -> None:
    response = _upload(client_for(requester), project, name, content, content_type)

    assert response.status_code == 400, response.content
    [error] = response.json()["errors"]
    assert error["field"] == "image"
    assert "allowed types: PNG, JPEG, GIF, WebP (SVG is not accepted)" in error["message"]
    assert not Item.objects.filter(project=project, external_id="img").exists()
    assert _stored_files(media_root) == []


@pytest.mark.parametrize(("fmt", "extension"), [("PNG", ".png"), ("JPEG", ".jpg"), ("GIF", ".gif"), ("WEBP", ".webp")])
def test_upload_stores_a_real_image_under_a_server_chosen_name(
    fmt: str,
    extension: str,
    project: Project,
    requester: Any,
    client_for: Callable[[Any], Any],
    media_root: Path,
) -> None:
    content = image_bytes(fmt)
    # The client's name and declared type are lies; neither matters, the bytes do.
    response = _upload(client_for(requester), project, "../../evil.html", content, "text/html")

    assert response.status_code == 201, response.content
    item = Item.objects.get(project=project, external_id="img")
    assert re.fullmatch(rf"items/\d{{4}}/\d{{2}}/[0-9a-f]{{32}}\{extension}", item.image.name), item.image.name
    assert "evil" not in response.json()["image"]
    [stored] = _stored_files(media_root)
    assert stored.read_bytes() == content and stored.suffix == extension


def test_two_uploads_of_the_same_name_never_share_a_file(
    project: Project,
    requester: Any,
    client_for: Callable[[Any], Any],
    media_root: Path,
) -> None:
    client = client_for(requester)
    first = _upload(client, project, "cat.png", image_bytes("PNG"), "image/png", external_id="a")
    second = _upload(client, project, "cat.png", image_bytes("GIF"), "image/png", external_id="b")
    assert first.status_code == second.status_code == 201
    names = {item.image.name for item in Item.objects.filter(project=project, external_id__in=["a", "b"])}
    assert len(names) == 2 and len(_stored_files(media_root)) == 2
    assert {Path(name).suffix for name in names} == {".png", ".gif"}


def test_upload_refusals_name_every_allowed_type(
    project: Project,
    requester: Any,
    client_for: Callable[[Any], Any],
    media_root: Path,
) -> None:
    response = _upload(client_for(requester), project, "x.txt", b"plain text", "text/plain")
    message = response.json()["errors"][0]["message"]
    assert all(name in message for name in ALLOWED_NAMES), message
