"""A requester creates a project through the form, then edits it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from crowdlab.projects.models import Project
from crowdlab.projects.roles import make_requester
from tests.platform.factories import UserFactory

from .conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_requester_creates_and_edits_a_project(new_page: Callable[..., Page]) -> None:
    owner = UserFactory(username="maker")
    make_requester(owner)
    page = new_page(owner)
    expect(page.get_by_test_id("role")).to_have_text("requester")
    page.screenshot(path=str(ARTIFACTS / "home-requester.png"), full_page=True)
    page.click(".mainnav >> text=New project")
    page.fill("input[name=name]", "Street scenes")
    page.fill("textarea[name=classes]", "street, q\ninside city, w\nforest")
    page.fill("textarea[name=instructions]", "Pick the **scene**.")
    page.fill("input[name=k]", "4")
    page.select_option("select[name=model]", "ds")
    page.check("input[name=require_confirmation]")
    page.screenshot(path=str(ARTIFACTS / "project-form.png"), full_page=True)
    page.click("form.form-grid button[type=submit]")
    expect(page.locator("h1")).to_have_text("Street scenes")
    project = Project.objects.get(owner=owner)
    assert project.classes == [
        {"name": "street", "key": "q"},
        {"name": "inside city", "key": "w"},
        {"name": "forest", "key": None},
    ]
    assert (project.k, project.model, project.require_confirmation) == (4, "ds", True)

    page.click(".subnav >> text=Settings")
    page.fill("textarea[name=classes]", "street, s\nforest")  # S is reserved for skip
    page.click("form.form-grid button[type=submit]")
    expect(page.locator(".field.has-error")).to_contain_text("reserved for skip and undo")
    project.refresh_from_db()
    assert len(project.classes) == 3
