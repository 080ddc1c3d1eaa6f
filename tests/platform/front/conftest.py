"""Fixtures for the web UI tests: logged-in Django test clients per role, and
a crowd with a known systematic confusion whose run is computed for real.

"Run now" sends a Celery message after commit; it goes to the session's queue
that no worker consumes on the test broker (``live_tasks_queue`` in
tests/conftest.py), deleted at the session's end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from crowdlab.projects.roles import make_requester
from tests.platform.factories import UserFactory


@pytest.fixture
def web_client_for() -> Callable[[Any], Client]:
    """``web_client_for(user)`` → a Django test client logged in as ``user`` (None: anonymous)."""

    def make(user: Any | None) -> Client:
        client = Client()
        if user is not None:
            client.force_login(user)
        return client

    return make


@pytest.fixture
def web_matrix(web_client_for: Callable[[Any], Client], role_users: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    """``web_matrix(method, url, expected)``: call ``url`` as each role and
    check the status; ``"login"`` as the expected value means a redirect to
    the login page (anonymous)."""

    def check(method: str, url: str, expected: dict[str, int | str], data: Any = None) -> dict[str, Any]:
        failures: list[str] = []
        responses: dict[str, Any] = {}
        for role, wanted in expected.items():
            client = web_client_for(role_users[role])
            response = getattr(client, method)(url, data) if data is not None else getattr(client, method)(url)
            responses[role] = response
            if wanted == "login":
                ok = response.status_code == 302 and response["Location"].startswith("/login/")
            else:
                ok = response.status_code == wanted
            if not ok:
                failures.append(f"{role}: got {response.status_code} {response.get('Location', '')}, wanted {wanted}")
        assert not failures, f"{method.upper()} {url}:\n" + "\n".join(failures)
        return responses

    return check


@pytest.fixture
def scene_owner(db: None) -> Any:
    user = UserFactory(username="scene_owner")
    make_requester(user)
    return user
