"""Every web UI view × {anonymous, annotator, outsider, other requester, owner, admin}.

Anonymous people are sent to the login page; members asking for owner pages
get 403; people with no relation to the project get 404 (ids do not leak).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse

from crowdlab.labelling.models import Assignment
from crowdlab.projects.models import Project
from crowdlab.results.services import run_create

pytestmark = pytest.mark.django_db

OWNER_PAGE = {
    "anonymous": "login",
    "annotator": 403,
    "outsider": 404,
    "other_requester": 404,
    "owner": 200,
    "admin": 200,
}


@pytest.mark.parametrize(
    "name",
    ["front:project", "front:project-edit", "front:project-upload", "front:results", "front:dashboard"],
)
def test_owner_pages(name: str, project: Project, web_matrix: Callable[..., Any]) -> None:
    web_matrix("get", reverse(name, args=[project.pk]), OWNER_PAGE)


def test_dashboard_annotator_page(project: Project, annotator: Any, web_matrix: Callable[..., Any]) -> None:
    url = reverse("front:dashboard-annotator", args=[project.pk, annotator.pk])
    web_matrix("get", url, OWNER_PAGE)


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_export(fmt: str, project: Project, web_matrix: Callable[..., Any]) -> None:
    responses = web_matrix("get", reverse("front:export", args=[project.pk, fmt]), OWNER_PAGE)
    assert "attachment" in responses["owner"]["Content-Disposition"]


def test_run_status(project: Project, web_matrix: Callable[..., Any]) -> None:
    run = run_create(project=project)
    assert run is not None
    responses = web_matrix("get", reverse("front:run-status", args=[project.pk, run.pk]), OWNER_PAGE)
    assert responses["owner"].json()["status"] == "pending"


def test_run_now_post(project: Project, web_matrix: Callable[..., Any]) -> None:
    url = reverse("front:run-now", args=[project.pk])
    web_matrix(
        "post",
        url,
        {"anonymous": "login", "annotator": 403, "outsider": 404, "other_requester": 404, "owner": 302, "admin": 302},
    )
    assert project.runs.count() == 1  # the admin's click found the owner's run active


def test_run_cancel_post(project: Project, web_matrix: Callable[..., Any]) -> None:
    run = run_create(project=project)
    assert run is not None
    url = reverse("front:run-cancel", args=[project.pk, run.pk])
    web_matrix("post", url, {"anonymous": "login", "annotator": 403, "outsider": 404, "other_requester": 404})
    run.refresh_from_db()
    assert run.status == "pending"  # nobody above could cancel it
    web_matrix("get", url, {"owner": 405})
    web_matrix("post", url, {"owner": 302, "admin": 302})
    run.refresh_from_db()
    assert run.status == "cancelled"


def test_owner_posts_refused_to_others(project: Project, web_matrix: Callable[..., Any]) -> None:
    refused = {"anonymous": "login", "annotator": 403, "outsider": 404, "other_requester": 404}
    for name in ("front:project-edit", "front:project-upload", "front:project-crowd", "front:project-members"):
        web_matrix("post", reverse(name, args=[project.pk]), refused, data={})
    assert project.items.count() == 5


def test_project_new(web_matrix: Callable[..., Any], project: Project) -> None:
    web_matrix(
        "get",
        reverse("front:project-new"),
        {"anonymous": "login", "annotator": 403, "outsider": 403, "other_requester": 200, "owner": 200, "admin": 200},
    )


def test_home(web_matrix: Callable[..., Any], project: Project) -> None:
    responses = web_matrix(
        "get",
        reverse("home"),
        {"anonymous": "login", "annotator": 200, "outsider": 200, "other_requester": 200, "owner": 200, "admin": 200},
    )
    assert project.name in responses["annotator"].content.decode()
    assert project.name not in responses["other_requester"].content.decode()
    assert project.name in responses["owner"].content.decode()
    assert project.name in responses["admin"].content.decode()
    # The nav names the role.
    assert 'data-testid="role">annotator<' in responses["annotator"].content.decode()
    assert 'data-testid="role">requester<' in responses["owner"].content.decode()
    assert 'data-testid="role">admin<' in responses["admin"].content.decode()


@pytest.mark.parametrize(("method", "name"), [("get", "front:label"), ("post", "front:label-next")])
def test_label_pages(method: str, name: str, project: Project, web_matrix: Callable[..., Any]) -> None:
    # Owners and admins manage, they do not label: 403 unless they are members.
    web_matrix(
        method,
        reverse(name, args=[project.pk]),
        {"anonymous": "login", "annotator": 200, "outsider": 404, "other_requester": 404, "owner": 403, "admin": 403},
    )


def test_label_next_refuses_get_and_leases_nothing(project: Project, web_matrix: Callable[..., Any]) -> None:
    # Asking for the next task leases an item: a GET (a prefetch, a reload, a
    # link checker) must not, so it is refused before anything is written.
    web_matrix(
        "get",
        reverse("front:label-next", args=[project.pk]),
        {"anonymous": "login", "annotator": 405, "outsider": 405, "owner": 405, "admin": 405},
    )
    assert not Assignment.objects.exists()


@pytest.mark.parametrize("name", ["front:label-submit", "front:label-skip", "front:label-undo"])
def test_label_posts(name: str, project: Project, web_matrix: Callable[..., Any]) -> None:
    web_matrix(
        "post",
        reverse(name, args=[project.pk]),
        {"anonymous": "login", "outsider": 404, "other_requester": 404, "owner": 403, "admin": 403, "annotator": 400},
    )


def test_item_media(project: Project, web_matrix: Callable[..., Any]) -> None:
    item = project.items.first()
    # Text items have no image: 404 for those allowed to ask, the usual refusals for the rest.
    web_matrix(
        "get",
        reverse("front:item-media", args=[project.pk, item.pk]),
        {"anonymous": "login", "outsider": 404, "other_requester": 404, "annotator": 403, "owner": 404, "admin": 404},
    )


def test_login_and_logout(annotator: Any) -> None:
    from django.test import Client

    client = Client()
    page = client.get(reverse("login"))
    assert page.status_code == 200 and 'name="password"' in page.content.decode()
    response = client.post(reverse("login"), {"username": "annotator", "password": "crowdlab-pass-123"})
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert client.get(reverse("home")).status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("home")).status_code == 302
