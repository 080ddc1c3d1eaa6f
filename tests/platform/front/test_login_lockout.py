"""Issue 14, item 3: brute force on the login form (``/login/``, and the
admin's, which goes through the same ``authenticate()``).

Past ``LOGIN_FAILURE_LIMIT`` failures per IP address or per username the
form answers 429 with ``Retry-After`` and logs nobody in, the right password
included, until ``LOGIN_LOCKOUT_SECONDS`` have passed.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.platform.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db

LIMIT = 3
WINDOW_S = 900


@pytest.fixture(autouse=True)
def _limits(settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(seconds=WINDOW_S)


def _login(client: Client, username: str, password: str, url: str | None = None) -> Any:
    return client.post(url or reverse("login"), {"username": username, "password": password})


def _logged_in(client: Client) -> bool:
    return client.get(reverse("home")).status_code == 200


def test_wrong_passwords_below_the_limit_just_fail(annotator: Any) -> None:
    client = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(LIMIT - 1):
        response = _login(client, "annotator", "wrong")
        assert response.status_code == 200 and "did not match" in response.content.decode()
    assert _login(client, "annotator", DEFAULT_PASSWORD).status_code == 302
    assert _logged_in(client)


def test_after_the_limit_the_right_password_is_refused_with_429(annotator: Any) -> None:
    attacker = Client(REMOTE_ADDR="203.0.113.10")
    for _ in range(LIMIT - 1):
        _login(attacker, "annotator", "wrong")
    assert _login(attacker, "annotator", "wrong").status_code == 429

    # The owner of the account, from elsewhere, with the right password: refused too.
    owner = Client(REMOTE_ADDR="192.0.2.10")
    refused = _login(owner, "annotator", DEFAULT_PASSWORD)
    assert refused.status_code == 429
    assert refused["Retry-After"] == str(WINDOW_S)
    page = refused.content.decode()
    assert "Too many failed logins" in page and "15 minutes" in page
    assert not _logged_in(owner)


def test_one_address_trying_many_usernames_is_locked_out(annotator: Any, outsider: Any) -> None:
    sprayer = Client(REMOTE_ADDR="203.0.113.11")
    for name in ("alice", "bob", "carol"):
        _login(sprayer, name, "wrong")
    refused = _login(sprayer, "outsider", DEFAULT_PASSWORD)
    assert refused.status_code == 429 and refused["Retry-After"] == str(WINDOW_S)
    assert not _logged_in(sprayer)
    # The same person from another address logs in.
    elsewhere = Client(REMOTE_ADDR="203.0.113.12")
    assert _login(elsewhere, "outsider", DEFAULT_PASSWORD).status_code == 302


def test_the_admin_login_shares_the_limits(admin_user: Any) -> None:
    client = Client(REMOTE_ADDR="203.0.113.13")
    admin_login = reverse("admin:login")
    for _ in range(LIMIT):
        _login(client, "admin", "wrong", url=admin_login)
    refused = _login(client, "admin", DEFAULT_PASSWORD, url=admin_login)
    assert refused.status_code == 429 and "Retry-After" in refused
    assert client.get(reverse("admin:index")).status_code == 302  # still sent to log in


def test_the_right_password_works_again_once_the_window_has_passed(annotator: Any, settings: Any) -> None:
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    client = Client(REMOTE_ADDR="203.0.113.14")
    for _ in range(LIMIT):
        _login(client, "annotator", "wrong")
    refused = _login(client, "annotator", DEFAULT_PASSWORD)
    assert refused.status_code == 429 and refused["Retry-After"] == "1"
    assert not _logged_in(client)
    time.sleep(1.2)
    assert _login(client, "annotator", DEFAULT_PASSWORD).status_code == 302
    assert _logged_in(client)
