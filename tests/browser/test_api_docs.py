"""/api/docs/ (Swagger UI) and /api/redoc/ in Chromium on a closed network:
every request that leaves the site is refused, and the pages still render the
schema, from files the site serves itself (drf-spectacular-sidecar)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from .conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize(
    ("path", "title"),
    [("/api/docs/", ".swagger-ui .info .title"), ("/api/redoc/", "h1")],
)
def test_api_docs_work_offline(path: str, title: str, new_page: Callable[..., Page], live_server: Any) -> None:
    page = new_page()
    served: list[str] = []
    refused: list[str] = []

    def closed_network(route: Route) -> None:
        url = route.request.url
        if url.startswith(live_server.url + "/"):
            served.append(url.removeprefix(live_server.url))
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    page.context.route("**/*", closed_network)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path)
    expect(page.locator(title).first).to_contain_text("crowdlab API", timeout=30_000)
    # The operations are listed, so the schema was fetched and parsed.
    expect(page.get_by_text("/api/projects/{project_pk}/next-task/").first).to_be_attached()
    page.screenshot(path=str(ARTIFACTS / f"api-docs-{path.strip('/').replace('/', '-')}.png"))
    assert refused == []
    assert errors == []
    assert "/api/schema/" in served
    assert any(url.startswith("/static/drf_spectacular_sidecar/") for url in served), served
