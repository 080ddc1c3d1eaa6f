"""The labelling page in Chromium words each failure by its cause, says which
label was not saved, and lets the annotator redo it.

Real failures where the server can produce them: the network (Chromium
offline), an expired session (its row deleted), a CSRF refusal (the cookie
gone), a lapsed lease (the item went to someone else). A 500 and a 503 are
answered by the browser's router with the bodies the server (our 500 page) or
a proxy would send: the page must tell them apart by status, whatever the body.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.sessions.models import Session
from django.db.models import F
from django.template.loader import render_to_string
from django.utils import timezone
from playwright.sync_api import Page, expect

from crowdlab.labelling.models import Annotation, Assignment
from crowdlab.projects.models import Item, Membership
from tests.platform.factories import UserFactory

from .conftest import ARTIFACTS, PASSWORD
from .test_label_keys import SUBMIT, Gate, labelling_project, open_labelling

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PROXY_503 = "<html><head><title>503 Service Temporarily Unavailable</title></head><body>nginx</body></html>"


def _answer_500(page: Page, project: Any) -> None:
    page.route(
        SUBMIT, lambda route: route.fulfill(status=500, content_type="text/html", body=render_to_string("500.html"))
    )


def _answer_503(page: Page, project: Any) -> None:
    page.route(SUBMIT, lambda route: route.fulfill(status=503, content_type="text/html", body=PROXY_503))


def _go_offline(page: Page, project: Any) -> None:
    page.context.set_offline(True)


def _expire_session(page: Page, project: Any) -> None:
    Session.objects.all().delete()


def _drop_csrf_cookie(page: Page, project: Any) -> None:
    page.context.clear_cookies(name="csrftoken")


def _lose_the_lease(page: Page, project: Any) -> None:
    # k=1: the lease lapsed and someone else labelled the item meanwhile.
    assignment = Assignment.objects.get(project=project, status="active")
    Assignment.objects.filter(pk=assignment.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    other = UserFactory(username="quicker")
    Membership.objects.create(project=project, user=other)
    Annotation.objects.create(project=project, item=assignment.item, annotator=other, label="coast")
    Item.objects.filter(pk=assignment.item_id).update(n_annotations=F("n_annotations") + 1)


# cause: (set it up, what the message must say, how the page offers to redo it)
CAUSES: dict[str, tuple[Callable[[Page, Any], None], str, str]] = {
    "500": (
        _answer_500,
        "the server had an internal error (500). Try again; if it keeps failing, tell the project's owner.",
        "retry",
    ),
    "503": (_answer_503, "the server is unavailable right now (503). Wait a moment, then try again.", "retry"),
    "network": (_go_offline, "no connection to the server (network error", "retry"),
    "session": (_expire_session, "your session has expired. Log in again, then label this item again.", "login"),
    "403-csrf": (
        _drop_csrf_cookie,
        "not allowed (403): this page's security token is missing or out of date. "
        "Reload the page, then label this item again.",
        "reload",
    ),
    "403-lease": (
        _lose_the_lease,
        "not allowed (403): Your lease on this item expired and it went to other "
        "annotators; get a new task. A new item is shown.",
        "new item",
    ),
}
PHRASES = ["internal error", "unavailable", "no connection", "session has expired", "security token", "lease"]


@pytest.mark.parametrize("cause", list(CAUSES))
def test_each_failure_is_worded_by_its_cause_and_the_key_is_not_lost(cause: str, new_page: Callable[..., Page]) -> None:
    setup, message, remedy = CAUSES[cause]
    project, annotator = labelling_project(k=1)
    page = open_labelling(new_page, project, annotator)
    item = page.locator("#item-id").inner_text().removeprefix("Item ")

    setup(page, project)
    page.keyboard.press("1")
    status = page.locator("#status")
    # The label and the item it was for are named: nothing is lost silently.
    expect(status).to_contain_text(f"“street” for item {item} was not saved: ")
    expect(status).to_contain_text(message)
    expect(status).to_have_attribute("data-kind", "error")
    text = status.inner_text()
    assert [phrase for phrase in PHRASES if phrase in text] == [p for p in PHRASES if p in message], text
    page.screenshot(path=str(ARTIFACTS / f"label-error-{cause}.png"))
    assert not Annotation.objects.filter(annotator=annotator).exists()
    expect(page.locator("#count-total")).to_have_text("0")
    expect(page.locator("#count-session")).to_have_text("0")

    # ...and redoing it works once the cause is gone.
    if remedy == "retry":
        expect(page.locator(".class-btn.unsaved")).to_have_text("1street")
        page.unroute(SUBMIT)
        page.context.set_offline(False)
        page.locator("#retry-btn").click()
    elif remedy == "login":
        expect(page.locator("#retry-btn")).to_be_hidden()  # trying again cannot help
        link = status.get_by_role("link", name="Log in again")
        expect(link).to_have_attribute("href", f"/login/?next=%2Fp%2F{project.pk}%2Flabel%2F")
        link.click()
        page.fill("input[name=username]", annotator.username)
        page.fill("input[name=password]", PASSWORD)
        page.press("input[name=password]", "Enter")
        page.wait_for_url(f"**/p/{project.pk}/label/")
        page.wait_for_function("() => document.body.dataset.state === 'ready' && !document.body.dataset.busy")
        expect(page.locator("#item-id")).to_have_text(f"Item {item}")  # the lease is still theirs
        page.keyboard.press("1")
    elif remedy == "reload":
        expect(page.locator("#retry-btn")).to_be_hidden()
        status.get_by_role("link", name="Reload the page").click()
        page.wait_for_function("() => document.body.dataset.state === 'ready' && !document.body.dataset.busy")
        expect(page.locator("#item-id")).to_have_text(f"Item {item}")
        page.keyboard.press("1")
    else:  # the lease went elsewhere: a new item came with the message
        page.wait_for_function("() => !document.body.dataset.busy")
        expect(page.locator("#item-id")).not_to_have_text(f"Item {item}")
        expect(page.locator("#retry-btn")).to_be_hidden()
        item = page.locator("#item-id").inner_text().removeprefix("Item ")
        page.keyboard.press("1")
    expect(page.locator("#count-total")).to_have_text("1")
    assert list(Annotation.objects.filter(annotator=annotator).values_list("item__external_id", "label")) == [
        (item, "street")
    ]


def test_a_failed_submit_drops_the_keys_queued_behind_it_and_says_so(new_page: Callable[..., Page]) -> None:
    project, annotator = labelling_project()
    page = open_labelling(new_page, project, annotator)
    item = page.locator("#item-id").inner_text().removeprefix("Item ")
    gate = Gate(page, SUBMIT)
    page.keyboard.type("12f")
    gate.wait_held(1)
    page.wait_for_function("() => document.body.dataset.queued === '2'")
    gate.release(lambda route: route.fulfill(status=500, content_type="text/html", body=render_to_string("500.html")))
    expect(page.locator("#status")).to_have_text(
        f"“street” for item {item} was not saved: the server had an internal error (500). Try again; if it keeps "
        "failing, tell the project's owner. 2 more keys you pressed after it were not applied."
    )
    page.wait_for_function("() => !document.body.dataset.busy")
    # Not applied to the item still shown, which they were not meant for.
    assert len(gate.held) == 1 and not Annotation.objects.exists()
    expect(page.locator("#item-id")).to_have_text(f"Item {item}")


def test_the_first_item_failing_to_load_offers_to_try_again(new_page: Callable[..., Page]) -> None:
    project, annotator = labelling_project()
    page = new_page(annotator)
    page.route("**/label/next/", lambda route: route.fulfill(status=503, content_type="text/html", body=PROXY_503))
    page.goto(f"/p/{project.pk}/label/")
    expect(page.locator("#status")).to_have_text(
        "The next item could not be loaded: the server is unavailable right now (503). Wait a moment, then press "
        "Try again."
    )
    page.unroute("**/label/next/")
    page.locator("#retry-btn").click()
    page.wait_for_function("() => document.body.dataset.state === 'ready' && !document.body.dataset.busy")
    expect(page.locator("#item-id")).to_have_text(re.compile(r"^Item scene-\d$"))
    expect(page.locator("#retry-btn")).to_be_hidden()
