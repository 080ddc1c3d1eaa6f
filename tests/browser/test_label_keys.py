"""The labelling page in Chromium: keys pressed during a submit are queued, not
dropped; keys that mean nothing flash a hint; ? lists every shortcut."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from crowdlab.labelling.models import Annotation, Assignment
from crowdlab.projects.models import Item, ItemKind, Membership, Project
from crowdlab.projects.roles import make_requester
from tests.platform.factories import UserFactory

from .conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# forest has its own key (f); the others get their position digit (1, 2, 4).
CLASSES = [
    {"name": "street", "key": None},
    {"name": "inside city", "key": None},
    {"name": "forest", "key": "f"},
    {"name": "coast", "key": None},
]
SUBMIT = "**/label/submit/"


def labelling_project(*, n_items: int = 8, confirm: bool = False, k: int = 3) -> tuple[Project, Any]:
    owner = UserFactory(username="owner")
    make_requester(owner)
    annotator = UserFactory(username="ann")
    project = Project.objects.create(
        owner=owner,
        name="City scenes",
        classes=CLASSES,
        k=k,
        require_confirmation=confirm,
        retrain_every_n=10_000,
        retrain_every_minutes=10_000,
    )
    Membership.objects.create(project=project, user=annotator)
    for i in range(n_items):
        Item.objects.create(project=project, external_id=f"scene-{i}", kind=ItemKind.TEXT, text=f"Scene {i}")
    return project, annotator


def open_labelling(new_page: Callable[..., Page], project: Project, annotator: Any) -> Page:
    page = new_page(annotator)
    page.goto(f"/p/{project.pk}/label/")
    page.wait_for_function("() => document.body.dataset.state === 'ready' && !document.body.dataset.busy")
    return page


class Gate:
    """Holds every request to ``pattern`` until ``release()``: a submit "in
    flight" for as long as the test needs, deterministically. Requests after
    the release go straight through."""

    def __init__(self, page: Page, pattern: str) -> None:
        self.page = page
        self.held: list[Route] = []
        self.open = False
        page.route(pattern, self._handle)

    def _handle(self, route: Route) -> None:
        if self.open:
            route.continue_()
        else:
            self.held.append(route)

    def wait_held(self, n: int) -> None:
        for _ in range(200):
            if len(self.held) >= n:
                return
            self.page.wait_for_timeout(25)
        raise AssertionError(f"{n} request(s) expected to be held, got {len(self.held)}")

    def release(self, fulfil: Callable[[Route], None] | None = None) -> None:
        self.open = True
        for route in self.held:
            (fulfil or Route.continue_)(route)


def test_a_burst_of_five_keys_saves_five_labels_in_order(new_page: Callable[..., Page]) -> None:
    project, annotator = labelling_project()
    page = open_labelling(new_page, project, annotator)
    gate = Gate(page, SUBMIT)

    page.keyboard.type("12f41")  # five keys, faster than any answer
    # One submit is in flight, the other four keys wait their turn (before:
    # they were dropped, and the burst saved one label).
    gate.wait_held(1)
    page.wait_for_function("() => document.body.dataset.queued === '4'")
    expect(page.get_by_test_id("queue-info")).to_have_text("4 keys waiting…")
    assert len(gate.held) == 1 and Annotation.objects.count() == 0

    gate.release()
    expect(page.locator("#count-total")).to_have_text("5")
    expect(page.locator("#count-session")).to_have_text("5")
    page.wait_for_function("() => !document.body.dataset.busy && document.body.dataset.state === 'ready'")
    expect(page.get_by_test_id("queue-info")).to_be_hidden()

    rows = list(
        Annotation.objects.filter(project=project, annotator=annotator)
        .order_by("id")
        .values_list("label", "item__external_id")
    )
    # Each key applied in order, each to the next item as it arrived: the
    # items in the order they were leased, one label each.
    assert [label for label, _ in rows] == ["street", "inside city", "forest", "coast", "street"]
    leased = list(
        Assignment.objects.filter(annotator=annotator).order_by("id").values_list("item__external_id", flat=True)
    )
    assert [item for _, item in rows] == leased[:5]
    assert len(leased) == 6  # and the sixth item is the one now shown
    expect(page.locator("#item-id")).to_have_text(f"Item {leased[5]}")
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


def test_a_burst_with_confirmation_and_undo_applies_in_order(new_page: Callable[..., Page]) -> None:
    # Select, confirm, select, confirm, undo: all typed during the first submit.
    project, annotator = labelling_project(confirm=True)
    page = open_labelling(new_page, project, annotator)
    first = page.locator("#item-id").inner_text()
    gate = Gate(page, SUBMIT)
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    gate.wait_held(1)
    for key in ("f", "Enter", "u"):
        page.keyboard.press(key)
    page.wait_for_function("() => document.body.dataset.queued === '3'")
    gate.release()
    page.wait_for_function("() => !document.body.dataset.busy && document.body.dataset.state === 'ready'")
    expect(page.locator("#count-total")).to_have_text("1")
    expect(page.locator("#count-session")).to_have_text("1")
    # The second label (forest) was undone: its item is back, the first stays.
    assert list(Annotation.objects.values_list("item__external_id", "label")) == [
        (first.removeprefix("Item "), "inside city")
    ]
    expect(page.locator("#status")).to_have_text("Undone: label this item again.")


def test_a_key_that_means_nothing_flashes_a_hint(new_page: Callable[..., Page]) -> None:
    project, annotator = labelling_project()
    page = open_labelling(new_page, project, annotator)
    hint = page.get_by_test_id("key-hint")
    page.keyboard.press("x")
    expect(hint).to_be_visible()
    expect(hint).to_have_text("x is not a shortcut here. Press ? for the list.")
    page.screenshot(path=str(ARTIFACTS / "label-key-hint.png"))
    expect(hint).to_be_hidden(timeout=5_000)  # it is a flash, not a message that stays
    # forest has its own key, f: its position digit, 3, labels nothing (as the
    # project form and the README say).
    page.keyboard.press("3")
    expect(hint).to_have_text("3 is not a shortcut here. Press ? for the list.")
    page.keyboard.press("Shift")  # modifiers, arrows, Tab: no hint
    page.keyboard.press("ArrowDown")
    assert Annotation.objects.count() == 0
    page.keyboard.press("f")
    expect(page.locator("#count-total")).to_have_text("1")
    assert Annotation.objects.get().label == "forest"


def test_question_mark_shows_every_shortcut(new_page: Callable[..., Page]) -> None:
    project, annotator = labelling_project(confirm=True)
    page = open_labelling(new_page, project, annotator)
    overlay = page.get_by_test_id("shortcuts")
    expect(overlay).to_be_hidden()
    page.keyboard.press("?")
    expect(overlay).to_be_visible()
    rows = [" ".join(row.split()) for row in overlay.locator("tr").all_inner_texts()]
    assert rows == [
        "1 select “street”",
        "2 select “inside city”",
        "f select “forest”",
        "4 select “coast”",
        "Enter save the selected class",
        "S skip this item",
        "U undo your last label (within 10 s)",
        "? show or hide this list",
        "Esc close this list",
    ]
    page.screenshot(path=str(ARTIFACTS / "label-shortcuts.png"))
    # While the list covers the item, keys do not select or label anything.
    page.keyboard.press("2")
    page.keyboard.press("s")
    expect(overlay).to_be_visible()
    assert page.locator(".class-btn.selected").count() == 0
    page.keyboard.press("Escape")
    expect(overlay).to_be_hidden()
    page.keyboard.press("?")
    expect(overlay).to_be_visible()
    page.keyboard.press("?")  # ? toggles
    expect(overlay).to_be_hidden()
    page.locator("#help-btn").click()  # and a button for touch screens
    expect(overlay).to_be_visible()
    page.locator("#shortcuts-close").click()
    expect(overlay).to_be_hidden()
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    expect(page.locator("#count-total")).to_have_text("1")
    assert Annotation.objects.get().label == "inside city"
    assert Assignment.objects.filter(status="skipped").count() == 0


def test_leaving_while_labels_are_being_saved_asks_first(new_page: Callable[..., Page]) -> None:
    project, annotator = labelling_project()
    page = open_labelling(new_page, project, annotator)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.type), dialog.dismiss()))
    gate = Gate(page, SUBMIT)
    page.keyboard.type("12")
    gate.wait_held(1)
    page.close(run_before_unload=True)
    for _ in range(100):
        if dialogs:
            break
        page.wait_for_timeout(20)
    assert dialogs == ["beforeunload"] and not page.is_closed()  # dismissed: the page stays
    gate.release()
    expect(page.locator("#count-total")).to_have_text("2")
