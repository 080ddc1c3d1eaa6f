"""The labelling page in Chromium: keyboard only, no reloads, undo, phone size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from crowdlab.labelling.models import Annotation
from crowdlab.projects.models import Item, ItemKind, Membership, Project
from crowdlab.projects.roles import make_requester
from tests.platform.factories import UserFactory

from .conftest import ARTIFACTS, PASSWORD, no_horizontal_overflow

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CLASSES = [
    {"name": "street", "key": None},
    {"name": "inside city", "key": None},
    {"name": "forest", "key": "f"},
    {"name": "coast", "key": None},
]
INSTRUCTIONS = """Pick the **scene** the description shows.

* *street*: outdoors, a road is visible
* *inside city*: buildings all around, no road
* press **S** when you cannot tell
"""


def _project(*, n_items: int = 8, confirm: bool = False) -> tuple[Project, Any]:
    owner = UserFactory(username="owner")
    make_requester(owner)
    annotator = UserFactory(username="ann")
    project = Project.objects.create(
        owner=owner,
        name="City scenes",
        classes=CLASSES,
        k=3,
        instructions=INSTRUCTIONS,
        require_confirmation=confirm,
        retrain_every_n=10_000,
        retrain_every_minutes=10_000,
    )
    Membership.objects.create(project=project, user=annotator)
    for i in range(n_items):
        Item.objects.create(
            project=project,
            external_id=f"scene-{i}",
            kind=ItemKind.TEXT,
            text=f"Scene {i}: a narrow lane between tall houses.\nSecond line: cars parked on the left.",
        )
    return project, annotator


def _wait_for_task(page: Page, previous: str | None) -> str:
    """Wait until a task other than ``previous`` is shown and no request is in flight."""
    page.wait_for_function(
        "prev => document.body.dataset.state === 'ready' && !document.body.dataset.busy"
        " && document.body.dataset.assignment !== prev",
        arg=previous or "",
    )
    return page.evaluate("document.body.dataset.assignment")


def test_annotator_labels_five_items_by_keyboard_only(new_page: Callable[..., Page]) -> None:
    project, annotator = _project()
    page = new_page()
    # Log in with the keyboard too.
    page.goto("/login/")
    page.screenshot(path=str(ARTIFACTS / "login.png"))
    page.keyboard.type(annotator.username)  # the username field has autofocus
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/")
    expect(page.get_by_test_id("role")).to_have_text("annotator")
    page.goto(f"/p/{project.pk}/label/")
    url_before = page.url

    keys = ["1", "2", "f", "4", "1"]  # the project's key for forest is f; the others default to 1–9
    expected: dict[str, str] = {}
    assignment = None
    for n, key in enumerate(keys, start=1):
        assignment = _wait_for_task(page, assignment)
        external_id = page.locator("#item-id").inner_text().removeprefix("Item ")
        text = page.get_by_test_id("item-text")
        expect(text).to_contain_text("Second line")  # line breaks kept (white-space: pre-wrap)
        assert "\n" in text.inner_text()
        if n == 1:
            page.screenshot(path=str(ARTIFACTS / "label-desktop.png"), full_page=True)
        page.keyboard.press(key)
        expected[external_id] = {"1": "street", "2": "inside city", "f": "forest", "4": "coast"}[key]
        expect(page.locator("#count-total")).to_have_text(str(n))
    expect(page.locator("#count-session")).to_have_text("5")
    assert page.url == url_before  # no page reload or navigation happened
    stored = dict(Annotation.objects.filter(project=project).values_list("item__external_id", "label"))
    assert stored == expected
    assert Annotation.objects.filter(project=project, annotator=annotator).count() == 5
    assert sorted(Item.objects.filter(project=project).values_list("n_annotations", flat=True)) == [
        0,
        0,
        0,
        1,
        1,
        1,
        1,
        1,
    ]


def test_confirmation_skip_and_undo_by_keyboard(new_page: Callable[..., Page]) -> None:
    project, annotator = _project(n_items=4, confirm=True)
    page = new_page(annotator)
    page.goto(f"/p/{project.pk}/label/")
    first = _wait_for_task(page, None)
    first_item = page.locator("#item-id").inner_text()
    page.keyboard.press("2")  # selects, nothing saved until Enter
    expect(page.locator(".class-btn.selected")).to_have_text("2inside city")
    assert Annotation.objects.count() == 0
    page.keyboard.press("Enter")
    second = _wait_for_task(page, first)
    assert Annotation.objects.get().label == "inside city"
    expect(page.locator("#undo-btn")).to_be_visible()
    expect(page.locator("#status")).to_contain_text("Saved “inside city”")
    page.screenshot(path=str(ARTIFACTS / "label-after-submit.png"), full_page=True)

    page.keyboard.press("u")  # undo within the grace period: the first item comes back
    _wait_for_task(page, second)
    expect(page.locator("#item-id")).to_have_text(first_item)
    expect(page.locator("#count-total")).to_have_text("0")
    assert Annotation.objects.count() == 0

    current = page.evaluate("document.body.dataset.assignment")
    page.keyboard.press("s")  # skip it
    _wait_for_task(page, current)
    assert page.locator("#item-id").inner_text() != first_item
    assert Annotation.objects.count() == 0


def test_labelling_page_on_a_phone(new_page: Callable[..., Page]) -> None:
    project, annotator = _project(n_items=3)
    page = new_page(
        annotator, viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    page.goto(f"/p/{project.pk}/label/")
    first = _wait_for_task(page, None)
    page.locator("#instructions summary").tap()
    expect(page.locator("#instructions .prose strong").first).to_have_text("scene")
    assert no_horizontal_overflow(page)
    for button in page.locator(".class-btn").all():
        expect(button).to_be_in_viewport()
    page.screenshot(path=str(ARTIFACTS / "label-phone.png"), full_page=True)
    page.locator(".class-btn", has_text="forest").tap()
    _wait_for_task(page, first)
    assert Annotation.objects.get(annotator=annotator).label == "forest"


def test_json_and_audio_items_render(new_page: Callable[..., Page]) -> None:
    project, annotator = _project(n_items=0)
    Item.objects.create(
        project=project, external_id="j1", kind=ItemKind.JSON, data={"title": "<b>not html</b>", "tags": ["a", "b"]}
    )
    Item.objects.create(
        project=project,
        external_id="a1",
        kind=ItemKind.AUDIO,
        url="https://example.org/clip.mp3",
        text="Listen to the clip.",
    )
    page = new_page(annotator)
    page.goto(f"/p/{project.pk}/label/")
    first = _wait_for_task(page, None)
    json_block = page.locator("pre.item-json")
    expect(json_block).to_contain_text('"title": "<b>not html</b>"')  # shown as text, never as markup
    assert page.locator("#item-body b").count() == 0
    page.keyboard.press("s")
    _wait_for_task(page, first)
    expect(page.locator("audio.item-audio")).to_have_attribute("src", "https://example.org/clip.mp3")
    expect(page.get_by_test_id("item-text")).to_have_text("Listen to the clip.")
