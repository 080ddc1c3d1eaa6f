"""Issue 14, item 1: the site-wide Content-Security-Policy, in Chromium.

The pages still work under it (labelling with an uploaded image, the project
page's charts, the dashboards, the results bars, the API docs, the admin) and
nothing is refused on them (``new_page`` fails a test whose pages had anything
refused); and it really stops injected inline script.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from playwright.sync_api import Browser, Page, expect

from crowdlab.projects.importing import item_create_with_file
from crowdlab.projects.models import Membership
from crowdlab.projects.roles import make_requester
from tests.platform.factories import UserFactory, image_bytes
from tests.platform.front.crowds import make_confused_crowd, run_now_synchronously

from .conftest import ARTIFACTS, csp_violations, login, watch_csp

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _chart(page: Page, canvas_id: str) -> Any:
    """The Chart.js chart drawn on ``canvas_id``: its type and number of data points, or None."""
    return page.evaluate(
        "id => { const c = Chart.getChart(id); return c ? {type: c.config.type, n: c.data.datasets[0].data.length} : null }",
        canvas_id,
    )


def _goto_with_csp(page: Page, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.ok, url
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy, (url, policy)


@pytest.fixture
def scene(db: None) -> tuple[Any, Any, list[Any]]:
    owner = UserFactory(username="csp_owner")
    make_requester(owner)
    project, _, annotators = make_confused_crowd(owner=owner, n_items=40)
    run_now_synchronously(project)
    return project, owner, annotators


def test_requester_pages_and_their_charts_work_under_the_csp(scene: Any, new_page: Callable[..., Page]) -> None:
    project, owner, annotators = scene
    page = new_page(owner, viewport={"width": 1280, "height": 900})

    _goto_with_csp(page, f"/p/{project.pk}/")
    hist = _chart(page, "hist-chart")
    assert hist is not None and hist["type"] == "bar" and hist["n"] > 0
    assert _chart(page, "timeline-chart") is not None
    # The run panel's bar has no style attribute any more: width 0 from the stylesheet.
    assert page.evaluate("getComputedStyle(document.querySelector('#run-progress .bar')).width") == "0px"

    _goto_with_csp(page, f"/p/{project.pk}/dashboard/")
    assert _chart(page, "common-heatmap") == {"type": "matrix", "n": 16}
    assert _chart(page, "loss-chart") is not None and _chart(page, "accuracy-chart") is not None
    page.screenshot(path=str(ARTIFACTS / "csp-dashboard.png"), full_page=True)

    _goto_with_csp(page, f"/p/{project.pk}/dashboard/annotators/{annotators[4].pk}/")
    assert _chart(page, "learned-heatmap") == {"type": "matrix", "n": 16}

    _goto_with_csp(page, f"/p/{project.pk}/results/")
    bars = page.locator("#results-table .conf")
    expect(bars.first).to_be_visible()
    widths = page.evaluate(
        "() => [...document.querySelectorAll('#results-table .conf')].map(e => [e.dataset.w, e.style.getPropertyValue('--w')])"
    )
    assert widths and all(style == f"{w}%" for w, style in widths), widths[:3]
    assert csp_violations(page) == []


def test_labelling_an_uploaded_image_works_under_the_csp(
    new_page: Callable[..., Page],
    settings: Any,
    tmp_path: Path,
) -> None:
    settings.MEDIA_ROOT = tmp_path
    owner = UserFactory(username="img_owner")
    make_requester(owner)
    annotator = UserFactory(username="img_annotator")
    project, _, _ = make_confused_crowd(owner=owner, n_items=0, name="Images")
    Membership.objects.create(project=project, user=annotator)
    item = item_create_with_file(
        project=project,
        external_id="photo-1",
        image=SimpleUploadedFile("photo.html", image_bytes("PNG", size=(64, 48)), "text/html"),
    )

    page = new_page(annotator)
    _goto_with_csp(page, f"/p/{project.pk}/label/")
    image = page.locator("#item-body img.item-image")
    expect(image).to_be_visible()
    # The image was loaded and decoded from the media view (img-src 'self').
    page.wait_for_function(
        "() => { const i = document.querySelector('img.item-image'); return i && i.complete && i.naturalWidth === 64; }"
    )
    assert image.get_attribute("src") == f"/p/{project.pk}/items/{item.pk}/media/"
    page.keyboard.press("1")
    expect(page.locator("#count-total")).to_have_text("1")
    page.screenshot(path=str(ARTIFACTS / "csp-label-image.png"), full_page=True)
    assert csp_violations(page) == []


def test_api_docs_and_admin_work_under_the_csp(scene: Any, new_page: Callable[..., Page]) -> None:
    admin = UserFactory(username="csp_admin", is_staff=True, is_superuser=True)
    page = new_page(admin, viewport={"width": 1280, "height": 900})

    _goto_with_csp(page, "/api/docs/")
    # Swagger UI (drf-spectacular-sidecar's files) started and read the schema.
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("crowdlab API", timeout=20_000)
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "csp-api-docs.png"))
    assert csp_violations(page) == []

    _goto_with_csp(page, "/api/redoc/")
    expect(page.locator("h1").first).to_contain_text("crowdlab API", timeout=20_000)
    # ReDoc's own page policy refuses its vendor's logo (an image) on purpose; no code is refused.
    assert [v for v in csp_violations(page) if not v.startswith("img-src")] == []

    for url in ("/admin/", "/admin/projects/project/", "/admin/auth/user/add/"):
        _goto_with_csp(page, url)
        assert csp_violations(page) == [], url


def test_the_csp_stops_injected_inline_script(scene: Any, browser: Browser, live_server: Any) -> None:
    project, owner, _ = scene
    context = browser.new_context(base_url=live_server.url)
    try:
        page = context.new_page()
        refused: list[str] = []
        watch_csp(page, refused)
        login(page, owner.username)
        page.goto(f"/p/{project.pk}/")
        # What a stored XSS would add to a crowdlab page: an inline handler and an inline script.
        page.evaluate(
            """() => {
              document.body.insertAdjacentHTML("beforeend", '<img src="/static/none.png" onerror="window.__pwned = 1">');
              const script = document.createElement("script");
              script.textContent = "window.__pwned = 2";
              document.body.append(script);
            }"""
        )
        page.wait_for_function("() => window.__cspViolations.length >= 2")
        assert page.evaluate("window.__pwned") is None
        assert any("script-src" in violation for violation in csp_violations(page))
        # The console path that ``new_page`` checks on every test sees the refusals too.
        for _ in range(50):
            if refused:
                break
            page.wait_for_timeout(100)
        assert any("script" in message for message in refused), refused
    finally:
        context.close()
