"""Site-wide pages and files: the 500 page, the favicon, the offline API docs,
and WhiteNoise starting without a warning."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings

from crowdlab.middleware import StaticFilesMiddleware

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.django_db


@pytest.fixture
def failing_site(settings: Any) -> Client:
    settings.ROOT_URLCONF = "tests.platform.crowdlab.boom_urls"
    return Client(raise_request_exception=False)


def test_the_500_page_is_styled_and_tells_nothing_secret(failing_site: Client) -> None:
    response = failing_site.get("/boom/")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert 'data-testid="server-error"' in page and "Something went wrong on our side" in page
    assert 'href="/static/css/crowdlab.css"' in page and 'href="/static/favicon.svg"' in page
    assert "secret detail" not in page and "RuntimeError" not in page


def test_api_clients_and_fetch_get_a_json_500(failing_site: Client) -> None:
    for response in (failing_site.get("/api/boom/"), failing_site.get("/boom/", HTTP_ACCEPT="application/json")):
        assert response.status_code == 500
        assert response["Content-Type"] == "application/json"
        assert response.json()["detail"].startswith("Internal server error.")
        assert "secret detail" not in response.content.decode()


def test_favicon(client: Client) -> None:
    login = client.get("/login/").content.decode()
    assert 'rel="icon" href="/static/favicon.svg"' in login and 'rel="icon" href="/static/favicon.ico"' in login
    # Pages that name no icon (the admin, JSON) make browsers ask for /favicon.ico.
    redirect = client.get("/favicon.ico")
    assert redirect.status_code == 302 and redirect["Location"] == "/static/favicon.ico"
    for url in ("/static/favicon.ico", "/static/favicon.svg", "/static/apple-touch-icon.png"):
        icon = client.get(url)
        assert icon.status_code == 200, url
        assert b"".join(icon.streaming_content)
        icon.close()


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
ASSET = re.compile(r'(?:src|href)="([^"]+)"')


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_api_docs_come_from_this_site(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    page = response.content.decode()
    assets = ASSET.findall(page)
    assert assets and all(url.startswith("/") and not url.startswith("//") for url in assets), assets
    assert any("/static/drf_spectacular_sidecar/" in url for url in assets)
    assert "googleapis" not in page and "cdn." not in page
    assert not INLINE_SCRIPT.search(page)  # no inline code: the pages work under a strict CSP
    assert "<style" not in page
    for url in assets:
        asset = client.get(url.replace("&amp;", "&"))
        assert asset.status_code == 200, url
        asset.close()  # WhiteNoise streams the file


def test_swagger_ui_init_script_is_a_file(client: Client) -> None:
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle(" in script.content.decode()
    assert '"validatorUrl": null' in script.content.decode()  # no badge fetched from swagger.io


def test_an_uncollected_static_root_starts_without_a_warning(tmp_path: Path) -> None:
    # What `manage.py demo` or gunicorn on a checkout does: load the WSGI app
    # (and so the middleware) with DEBUG off and no collectstatic run.
    env = {**os.environ, "DEBUG": "0", "STATIC_ROOT": str(tmp_path / "never-collected"), "PYTHONWARNINGS": "always"}
    started = subprocess.run(
        [sys.executable, "-c", "import crowdlab.wsgi"],
        cwd=REPO / "platform",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    assert "No directory at" not in started.stderr


def test_the_missing_root_still_warns_where_it_means_no_static_files(tmp_path: Path) -> None:
    missing = tmp_path / "never-collected"
    with override_settings(STATIC_ROOT=missing, DEBUG=False, WHITENOISE_USE_FINDERS=True):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            middleware = StaticFilesMiddleware(lambda request: None)
        assert "/static/js/label.js" in middleware.files  # served from the finders
    with (
        override_settings(STATIC_ROOT=missing, DEBUG=False, WHITENOISE_USE_FINDERS=False),
        pytest.warns(UserWarning, match="No directory at"),
    ):
        StaticFilesMiddleware(lambda request: None)
