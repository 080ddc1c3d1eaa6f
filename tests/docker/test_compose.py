"""The compose file's healthchecks, run for real where this machine can run them."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.brokers import TEST_BROKER_URL

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def test_worker_and_beat_wait_for_a_healthy_web_and_have_checks_of_their_own() -> None:
    for name in ("worker", "beat"):
        assert SERVICES[name]["depends_on"]["web"]["condition"] == "service_healthy"
        assert SERVICES[name]["healthcheck"]["test"] != SERVICES["web"]["healthcheck"]["test"]
    assert "/api/schema/" not in str(SERVICES["web"]["healthcheck"])  # regenerated the schema every 30 s
    assert SERVICES["beat"]["healthcheck"]["test"] == ["CMD", "python", "/app/manage.py", "healthcheck"]


@pytest.mark.django_db(transaction=True)
def test_web_healthcheck_passes_when_allowed_hosts_leaves_out_127(live_server: Any, settings: Any) -> None:
    # A deployment's ALLOWED_HOSTS names its public host only; the check comes from inside.
    settings.ALLOWED_HOSTS = ["crowdlab.example.org"]
    kind, *command = SERVICES["web"]["healthcheck"]["test"]
    assert kind == "CMD" and command[:2] == ["python", "-c"]
    port = live_server.url.rsplit(":", 1)[1]
    script = command[2].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    assert script != command[2]
    check = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    # What the old check asked for fails the same way: that is why worker and beat never started.
    old = script.replace("/health/", "/api/schema/")
    assert subprocess.run([sys.executable, "-c", old], capture_output=True, timeout=60).returncode != 0


def test_worker_healthcheck_fails_when_its_node_does_not_answer() -> None:
    kind, shell = SERVICES["worker"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    # Compose turns $$ into $; the container's shell expands $HOSTNAME.
    argv = shlex.split(shell.replace("$$HOSTNAME", "crowdlab-ui-no-such-worker").replace("/app/platform", "platform"))
    assert argv[:3] == ["celery", "-A", "crowdlab"] and "ping" in argv
    env = {**os.environ, "CELERY_BROKER_URL": TEST_BROKER_URL}
    ping = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert ping.returncode != 0
    assert "No nodes replied" in ping.stdout + ping.stderr
