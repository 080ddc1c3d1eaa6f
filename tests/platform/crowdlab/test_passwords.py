"""Issue 14, item 4: Django's four standard password validators are on.

Checked where passwords are set in crowdlab: the admin's "add user" form
(the admin creates requesters and annotators) and the password change form.
Before the fix only the minimum length was checked, so "password123" or a
password like the username was accepted.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from tests.platform.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db

STRONG = "violet-harbour-tractor-91"


@pytest.fixture
def admin_client(admin_user: Any) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def _add_user(client: Client, username: str, password: str) -> Any:
    return client.post(
        reverse("admin:auth_user_add"),
        {"username": username, "usable_password": "true", "password1": password, "password2": password},
    )


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("k9#Tq2", "This password is too short. It must contain at least 8 characters."),
        ("password123", "This password is too common."),
        ("80561479230", "This password is entirely numeric."),
        ("greta-thunberg", "The password is too similar to the username."),
    ],
    ids=["length", "common", "numeric", "similar-to-username"],
)
def test_admin_add_user_refuses_weak_passwords(admin_client: Client, password: str, reason: str) -> None:
    response = _add_user(admin_client, "greta-thunberg", password)
    assert response.status_code == 200  # the form again, with the reason
    assert reason in response.content.decode()
    assert not get_user_model().objects.filter(username="greta-thunberg").exists()


def test_admin_add_user_accepts_a_strong_password(admin_client: Client) -> None:
    response = _add_user(admin_client, "greta-thunberg", STRONG)
    assert response.status_code == 302
    assert get_user_model().objects.get(username="greta-thunberg").check_password(STRONG)


def test_password_change_refuses_a_common_password(admin_user: Any, admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:password_change"),
        {"old_password": DEFAULT_PASSWORD, "new_password1": "qwertyuiop", "new_password2": "qwertyuiop"},
    )
    assert response.status_code == 200 and "This password is too common." in response.content.decode()
    admin_user.refresh_from_db()
    assert admin_user.check_password(DEFAULT_PASSWORD)
