"""Admin dashboards in Chromium after a real run on a crowd with a known confusion; access refusals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from crowdlab.projects.roles import make_requester
from tests.platform.factories import UserFactory
from tests.platform.front.crowds import make_confused_crowd, run_now_synchronously

from .conftest import ARTIFACTS, no_horizontal_overflow

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

READ_HEATMAP = """id => {
  const chart = Chart.getChart(id);
  if (!chart) return null;
  return {
    x: chart.options.scales.x.labels,
    y: chart.options.scales.y.labels,
    cells: chart.data.datasets[0].data.map(c => ({x: c.x, y: c.y, v: c.v})),
  };
}"""


def _cell(heatmap: dict[str, Any], true: str, given: str) -> float:
    return next(c["v"] for c in heatmap["cells"] if c["y"] == true and c["x"] == given)


@pytest.fixture
def crowd(db: None) -> tuple[Any, Any, list[Any]]:
    owner = UserFactory(username="scene_req")
    make_requester(owner)
    project, _, annotators = make_confused_crowd(owner=owner, n_items=80)
    run_now_synchronously(project)
    return project, owner, annotators


def test_admin_dashboard_shows_the_known_confusion(crowd: Any, new_page: Callable[..., Page]) -> None:
    project, _owner, annotators = crowd
    admin = UserFactory(username="boss", is_staff=True, is_superuser=True)
    page = new_page(admin, viewport={"width": 1280, "height": 900})
    expect(page.get_by_test_id("role")).to_have_text("admin")
    page.goto(f"/p/{project.pk}/dashboard/")

    # Sortable table: ascending learned accuracy puts the confuser first.
    page.click("#annotator-table th >> text=Learned accuracy")
    page.click("#annotator-table th >> text=Learned accuracy")
    expect(page.locator("#annotator-table tbody tr").first).to_have_attribute("data-username", "scenes_confuser")

    common = page.evaluate(READ_HEATMAP, "common-heatmap")
    assert common["x"] == common["y"] == project.class_names
    assert _cell(common, "street", "inside city") == max(c["v"] for c in common["cells"] if c["x"] != c["y"])
    expect(page.locator("#confused-pairs li").first).to_contain_text("street → inside city")
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    page.click("#annotator-table >> text=scenes_confuser")
    page.wait_for_url(f"**/dashboard/annotators/{annotators[4].pk}/")
    learned = page.evaluate(READ_HEATMAP, "learned-heatmap")
    assert learned["x"] == learned["y"] == project.class_names
    assert _cell(learned, "street", "inside city") > 0.8
    assert _cell(learned, "street", "street") < 0.2
    for name in ("inside city", "forest", "coast"):
        assert _cell(learned, name, name) > 0.8
    # The same values, readable in an accessible table; raw counts beside it.
    page.click("details.matrix-table summary")
    table = page.get_by_test_id("learned-heatmap-table")
    value = float(table.locator("tbody tr").nth(0).locator("td").nth(1).get_attribute("data-value"))
    assert value == pytest.approx(_cell(learned, "street", "inside city"))
    raw = page.locator("#raw-counts tbody tr").nth(0).locator("td")
    assert int(raw.nth(0).inner_text()) == 0 and int(raw.nth(1).inner_text()) > 0
    page.screenshot(path=str(ARTIFACTS / "dashboard-annotator.png"), full_page=True)

    # A good annotator looks good.
    page.goto(f"/p/{project.pk}/dashboard/annotators/{annotators[0].pk}/")
    good = page.evaluate(READ_HEATMAP, "learned-heatmap")
    assert _cell(good, "street", "street") > 0.7


def test_conal_dashboards_on_desktop_and_phone(new_page: Callable[..., Page]) -> None:
    """A CoNAL run: learned common confusion, ω histogram; readable on a phone."""
    import torch

    torch.set_num_threads(1)
    owner = UserFactory(username="conal_req")
    make_requester(owner)
    project, _, annotators = make_confused_crowd(owner=owner, n_items=60, model="conal", name="Conal")
    # Few epochs and a small classifier: this checks the pages, not CoNAL's quality.
    run_now_synchronously(project, params={"epochs": 15, "hidden": 16})
    page = new_page(owner, viewport={"width": 1280, "height": 900})
    page.goto(f"/p/{project.pk}/dashboard/annotators/{annotators[4].pk}/")
    omega = page.evaluate("() => Chart.getChart('omega-chart').data.datasets[0].data")
    assert sum(omega) == 60
    page.screenshot(path=str(ARTIFACTS / "dashboard-annotator-conal.png"), full_page=True)

    phone = new_page(owner, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    phone.goto(f"/p/{project.pk}/dashboard/")
    expect(phone.locator("text=The crowd-wide confusion learned by the model.")).to_be_visible()
    assert phone.evaluate(READ_HEATMAP, "common-heatmap") is not None
    assert no_horizontal_overflow(phone)
    phone.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)


def test_annotator_gets_403_on_admin_and_requester_pages(crowd: Any, new_page: Callable[..., Page]) -> None:
    project, _owner, annotators = crowd
    page = new_page(annotators[0])
    expect(page.get_by_test_id("role")).to_have_text("annotator")
    for path in (
        f"/p/{project.pk}/dashboard/",
        f"/p/{project.pk}/dashboard/annotators/{annotators[1].pk}/",
        f"/p/{project.pk}/",
        f"/p/{project.pk}/results/",
        f"/p/{project.pk}/upload/",
        f"/p/{project.pk}/edit/",
        f"/p/{project.pk}/export.csv",
        "/projects/new/",
    ):
        response = page.goto(path)
        assert response is not None and response.status == 403, path
        expect(page.get_by_test_id("forbidden")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "forbidden.png"))
    # The nav offers annotators nothing of that sort.
    page.goto("/")
    expect(page.locator(".mainnav")).not_to_contain_text("New project")
    expect(page.locator("body")).not_to_contain_text("Dashboard")
    response = page.goto("/admin/")
    assert response is not None and "/admin/login/" in page.url  # Django admin: staff only
