"""Shared fixtures for the platform tests: people, a project, API clients and
a permission-matrix helper.

People: ``requester`` (owns ``project``), ``other_requester`` (a requester with
no relation to ``project``), ``annotator`` (member of ``project``),
``outsider`` (an authenticated user with no relation), ``admin_user``.

``assert_matrix(method, url, expected, data=None)`` calls ``url`` once per role
in ``expected`` (in its order: put destructive owner calls last) and asserts
the status code, e.g.::

    assert_matrix("get", url, {"anonymous": 401, "annotator": 403, "other_requester": 404, "owner": 200, "admin": 200})

Roles: anonymous, annotator, outsider, other_requester, owner, admin. A value
may be a single status or a set of allowed statuses. ``data`` may be a callable
``role -> dict`` for per-role payloads. It returns the responses by role.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from rest_framework.test import APIClient

from crowdlab.projects.models import Item, ItemKind, Membership, Project
from crowdlab.projects.roles import make_requester
from tests.platform.factories import DEFAULT_CLASSES, ItemFactory, ProjectFactory, UserFactory

ROLES = ("anonymous", "annotator", "outsider", "other_requester", "owner", "admin")


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings: Any) -> None:
    # PBKDF2 with 1M iterations per user would dominate the test run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def requester(db: None) -> Any:
    user = UserFactory(username="requester")
    make_requester(user)
    return user


@pytest.fixture
def other_requester(db: None) -> Any:
    user = UserFactory(username="other_requester")
    make_requester(user)
    return user


@pytest.fixture
def annotator(db: None) -> Any:
    return UserFactory(username="annotator")


@pytest.fixture
def outsider(db: None) -> Any:
    return UserFactory(username="outsider")


@pytest.fixture
def admin_user(db: None) -> Any:
    return UserFactory(username="admin", is_staff=True, is_superuser=True)


@pytest.fixture
def project(requester: Any, annotator: Any) -> Project:
    """Owned by ``requester``; ``annotator`` is a member; 3 classes with keys,
    k=3, five text items of which two carry a gold label."""
    project = ProjectFactory(owner=requester, name="Animals", classes=[dict(c) for c in DEFAULT_CLASSES], k=3)
    Membership.objects.create(project=project, user=annotator)
    for index in range(5):
        ItemFactory(
            project=project,
            external_id=f"a{index}",
            kind=ItemKind.TEXT,
            text=f"animal number {index}",
            gold_label=DEFAULT_CLASSES[index % 3]["name"] if index < 2 else None,
        )
    return project


@pytest.fixture
def items(project: Project) -> list[Item]:
    return list(project.items.order_by("id"))


@pytest.fixture
def client_for() -> Callable[[Any], APIClient]:
    """``client_for(user)`` → an APIClient force-authenticated as ``user``;
    ``client_for(None)`` → an anonymous client."""

    def make(user: Any | None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user=user)
        return client

    return make


@pytest.fixture
def role_users(requester: Any, other_requester: Any, annotator: Any, outsider: Any, admin_user: Any) -> dict[str, Any]:
    return {
        "anonymous": None,
        "annotator": annotator,
        "outsider": outsider,
        "other_requester": other_requester,
        "owner": requester,
        "admin": admin_user,
    }


@pytest.fixture
def assert_matrix(client_for: Callable[[Any], APIClient], role_users: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    def check(
        method: str,
        url: str,
        expected: dict[str, int | Iterable[int]],
        data: dict[str, Any] | Callable[[str], Any] | None = None,
        format: str = "json",
    ) -> dict[str, Any]:
        responses: dict[str, Any] = {}
        failures: list[str] = []
        for role, wanted in expected.items():
            if role not in role_users:
                raise ValueError(f"unknown role {role!r}; allowed: {', '.join(ROLES)}")
            payload = data(role) if callable(data) else data
            client = client_for(role_users[role])
            kwargs: dict[str, Any] = {}
            if payload is not None:
                kwargs = {"data": payload, "format": format} if method.lower() != "get" else {"data": payload}
            response = getattr(client, method.lower())(url, **kwargs)
            responses[role] = response
            allowed = {wanted} if isinstance(wanted, int) else set(wanted)
            if response.status_code not in allowed:
                body = getattr(response, "data", None) or response.content[:300]
                failures.append(f"{role}: got {response.status_code}, wanted {sorted(allowed)}: {body!r}")
        assert not failures, f"{method.upper()} {url}:\n" + "\n".join(failures)
        return responses

    return check
