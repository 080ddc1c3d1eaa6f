"""Issue 14, item 3: brute force on ``POST /api/auth/token/``.

django-axes counts failed logins per IP address and per username; past the
limit every login is refused with 429 and ``Retry-After``, the right password
included, until the window has passed. The annotators' token-authenticated
hot paths (``api/hot.py``) are never limited.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from crowdlab.labelling.models import Annotation
from crowdlab.projects.models import Project
from tests.platform.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db

LIMIT = 3
WINDOW_S = 600


@pytest.fixture(autouse=True)
def _limits(settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(seconds=WINDOW_S)


def _token(username: str, password: str, ip: str = "203.0.113.7", **extra: Any) -> Any:
    return APIClient().post(
        reverse("api:token"), {"username": username, "password": password}, format="json", REMOTE_ADDR=ip, **extra
    )


def test_right_password_gets_a_token(annotator: Any) -> None:
    response = _token("annotator", DEFAULT_PASSWORD)
    assert response.status_code == 200
    assert response.json()["token"] == Token.objects.get(user=annotator).key


def test_after_the_limit_even_the_right_password_is_refused_per_username(annotator: Any, outsider: Any) -> None:
    # Guesses from several addresses: the username's own count locks it.
    for attempt in range(LIMIT - 1):
        assert _token("annotator", "wrong", ip=f"198.51.100.{attempt}").status_code == 400
    locked = _token("annotator", "wrong", ip="198.51.100.99")  # the limit-th failure is refused as such
    assert locked.status_code == 429

    refused = _token("annotator", DEFAULT_PASSWORD, ip="192.0.2.1")  # an address never seen before
    assert refused.status_code == 429
    assert refused["Retry-After"] == str(WINDOW_S)
    assert "Too many failed logins" in refused.json()["detail"]
    assert "token" not in refused.json()
    assert not Token.objects.filter(user=annotator).exists()
    # Another person, from an address with no failures, is not affected.
    assert _token("outsider", DEFAULT_PASSWORD, ip="192.0.2.2").status_code == 200


def test_after_the_limit_even_the_right_password_is_refused_per_ip(annotator: Any, outsider: Any) -> None:
    # One address trying many usernames (password spraying).
    for name in ("alice", "bob", "carol"):
        _token(name, "wrong", ip="203.0.113.50")
    refused = _token("annotator", DEFAULT_PASSWORD, ip="203.0.113.50")
    assert refused.status_code == 429 and refused["Retry-After"] == str(WINDOW_S)
    # The same person from another address is fine: the username itself failed nowhere.
    assert _token("annotator", DEFAULT_PASSWORD, ip="203.0.113.51").status_code == 200


def test_the_right_password_works_again_once_the_window_has_passed(annotator: Any, settings: Any) -> None:
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    for _ in range(LIMIT):
        _token("annotator", "wrong")
    refused = _token("annotator", DEFAULT_PASSWORD)
    assert refused.status_code == 429 and refused["Retry-After"] == "1"
    time.sleep(1.2)
    assert _token("annotator", DEFAULT_PASSWORD).status_code == 200


def test_a_client_written_x_forwarded_for_does_not_dodge_the_ip_limit(annotator: Any) -> None:
    # No trusted proxy (TRUSTED_PROXY_COUNT=0): X-Forwarded-For is ignored.
    for index in range(LIMIT):
        _token(f"user{index}", "wrong", ip="203.0.113.60", HTTP_X_FORWARDED_FOR=f"10.9.9.{index}")
    refused = _token("annotator", DEFAULT_PASSWORD, ip="203.0.113.60", HTTP_X_FORWARDED_FOR="10.9.9.200")
    assert refused.status_code == 429


def test_behind_a_trusted_proxy_the_client_is_the_address_the_proxy_appended(annotator: Any, settings: Any) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    proxy = "10.0.0.2"
    # The attacker's address is what the proxy appended, whatever they wrote before it.
    for index in range(LIMIT):
        _token(f"user{index}", "wrong", ip=proxy, HTTP_X_FORWARDED_FOR=f"1.1.1.{index}, 198.51.100.66")
    assert _token("annotator", DEFAULT_PASSWORD, ip=proxy, HTTP_X_FORWARDED_FOR="198.51.100.66").status_code == 429
    # Everyone else behind the same proxy still logs in.
    assert _token("annotator", DEFAULT_PASSWORD, ip=proxy, HTTP_X_FORWARDED_FOR="198.51.100.67").status_code == 200


def test_token_hot_paths_are_not_limited_even_for_a_locked_out_username(
    project: Project,
    annotator: Any,
) -> None:
    token = Token.objects.create(user=annotator).key
    for _ in range(LIMIT):
        _token("annotator", "wrong")
    assert _token("annotator", DEFAULT_PASSWORD).status_code == 429
    # The lockout is about guessing passwords; a token holder is already authenticated.
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    statuses = []
    for _ in range(project.items.count()):
        task = client.post(f"/api/projects/{project.pk}/next-task/")
        statuses.append(task.status_code)
        item = task.json()["item"]["external_id"]
        submit = client.post(f"/api/projects/{project.pk}/annotations/", {"item": item, "label": "cat"}, format="json")
        statuses.append(submit.status_code)
    assert set(statuses) == {200, 201}, statuses
    assert Annotation.objects.filter(annotator=annotator).count() == project.items.count()
