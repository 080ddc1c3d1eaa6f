"""/health/ and ``manage.py healthcheck``: the compose healthchecks.

The endpoint is public on purpose (a healthcheck carries no credentials): the
tests prove that anyone, logged in or not, gets only ok/down per service.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from crowdlab.celery import app as celery_app
from tests.brokers import TEST_BROKER_URL

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.django_db


@pytest.fixture
def broker_down() -> Iterator[None]:
    saved = celery_app.conf.broker_url
    celery_app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    yield
    celery_app.conf.broker_url = saved


def test_health_is_ok_for_anyone_and_says_nothing_else(outsider: Any, django_assert_num_queries: Any) -> None:
    logged_in = Client()
    logged_in.force_login(outsider)
    for client in (Client(), logged_in):
        with django_assert_num_queries(1):  # the SELECT 1; no session, no user
            response = client.get("/health/")
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}
        assert response["Cache-Control"] == "no-store"
        assert "Set-Cookie" not in response


def test_health_answers_whatever_allowed_hosts_says(client: Client, settings: Any) -> None:
    # A deployment names its public host; compose's healthcheck still asks
    # http://127.0.0.1:8000/ from inside the container.
    settings.ALLOWED_HOSTS = ["crowdlab.example.org"]
    assert client.get("/api/schema/", HTTP_HOST="127.0.0.1:8000").status_code == 400  # the old healthcheck
    assert client.get("/login/", HTTP_HOST="127.0.0.1:8000").status_code == 400  # and every page
    response = client.get("/health/", HTTP_HOST="127.0.0.1:8000")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert client.get("/health", HTTP_HOST="127.0.0.1:8000").status_code == 200  # no slash: no redirect either


def test_health_is_503_when_the_broker_is_down_without_saying_why(client: Client, broker_down: None) -> None:
    response = client.get("/health/")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "broker": "down"}
    body = response.content.decode().lower()
    assert "refused" not in body and "127.0.0.1" not in body and "redis" not in body


def test_health_only_reads(client: Client) -> None:
    response = client.post("/health/")
    assert response.status_code == 405 and response["Allow"] == "GET, HEAD"
    head = client.head("/health/")
    assert head.status_code == 200 and head.content == b""


def _healthcheck(database_url: str, broker_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "CELERY_BROKER_URL": broker_url}
    return subprocess.run(
        [sys.executable, "manage.py", "healthcheck"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_healthcheck_command_for_beat() -> None:
    database = connection.settings_dict["NAME"]
    ok = _healthcheck(f"postgres://postgres@127.0.0.1:5432/{database}", TEST_BROKER_URL)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"database": "ok", "broker": "ok"}

    down = _healthcheck("postgres://postgres@127.0.0.1:5432/crowdlab_ui_no_such_database", "redis://127.0.0.1:1/0")
    assert down.returncode == 1
    assert json.loads(down.stdout) == {"database": "down", "broker": "down"}
    assert "unhealthy: broker, database down" in down.stderr
