"""A database restart answers 503 with Retry-After, not 500 (issue 14, item 11).

The test starts a PostgreSQL cluster of its own (``initdb``/``pg_ctl`` into a
temporary folder, on a spare port; as the ``postgres`` user when run as root),
migrates a database there and serves crowdlab from it with gunicorn. It then
restarts and stops *that* cluster, never the shared one.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import InterfaceError, OperationalError
from django.test import RequestFactory

from crowdlab.views import server_error

REPO = Path(__file__).resolve().parents[3]
DB_NAME = "crowdlab_rel_restart"

pytestmark = [pytest.mark.slow]


def _pg_bin(name: str) -> str:
    on_path = shutil.which(name)
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([on_path] if on_path else [])
    if not found:
        pytest.skip(f"PostgreSQL's {name} is not installed")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A throw-away PostgreSQL cluster: initdb, start, restart, stop, remove."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="crowdlab_rel_pg_"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str, timeout: float = 120) -> None:
        command = list(args)
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        # To a file, not a pipe: the server pg_ctl starts inherits its output and
        # would hold a pipe open for good.
        with open(self.root / "commands.log", "ab") as out:
            subprocess.run(
                command, check=True, timeout=timeout, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def init(self) -> None:
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def restart(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass  # already stopped
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{DB_NAME}"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def _env(cluster: Cluster) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=cluster.url,
        CELERY_BROKER_URL="memory://",
        DEBUG="0",
        DATABASE_RETRY_AFTER_S="7",
        PYTHONPATH=os.pathsep.join([str(REPO / "platform"), str(REPO)]),
    )
    return env


def _manage(cluster: Cluster, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args],
        env=_env(cluster),
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.stdout


@pytest.fixture
def server(cluster: Cluster) -> Iterator[dict[str, Any]]:
    """crowdlab under gunicorn on the cluster; a user with a token and a logged-in session."""
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    _manage(cluster, "migrate", "--no-input", "-v", "0")
    token = (
        _manage(
            cluster,
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model; from rest_framework.authtoken.models import Token; "
            "u = get_user_model().objects.create_user('restart_requester', password='restart-pass-123'); "
            "print(Token.objects.create(user=u).key)",
        )
        .strip()
        .splitlines()[-1]
    )
    port = _free_port()
    with open(cluster.root / "gunicorn.log", "wb") as log:  # gunicorn keeps its own descriptor
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "crowdlab.wsgi:application",
                "--chdir",
                str(REPO / "platform"),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--threads",
                "1",
                "--timeout",
                "60",
            ],
            env=_env(cluster),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (cluster.root / "gunicorn.log").read_text(errors="replace")
            try:
                requests.get(f"{base}/login/", timeout=20)  # the first request waits for the worker's boot
                break
            except (requests.ConnectionError, requests.Timeout):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        browser = requests.Session()
        page = browser.get(f"{base}/login/", timeout=10)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert csrf is not None
        logged_in = browser.post(
            f"{base}/login/",
            timeout=10,
            allow_redirects=False,
            data={
                "username": "restart_requester",
                "password": "restart-pass-123",
                "csrfmiddlewaretoken": csrf.group(1),
            },
            headers={"Referer": f"{base}/login/"},
        )
        assert logged_in.status_code == 302, logged_in.text[:500]
        yield {"base": base, "token": token, "browser": browser, "log": cluster.root / "gunicorn.log"}
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def test_database_restart_answers_503_with_retry_after_then_recovers(cluster: Cluster, server: dict[str, Any]) -> None:
    api = requests.Session()
    api.headers["Authorization"] = f"Token {server['token']}"
    projects = f"{server['base']}/api/projects/"
    assert api.get(projects, timeout=10).status_code == 200
    assert server["browser"].get(f"{server['base']}/", timeout=10).status_code == 200

    # A restart kills the server's persistent connection: CONN_HEALTH_CHECKS makes
    # the next request reconnect instead of failing on the dead connection.
    cluster.restart()
    after_restart = api.get(projects, timeout=10)
    assert after_restart.status_code == 200, after_restart.text[:500]
    assert server["browser"].get(f"{server['base']}/", timeout=10).status_code == 200

    # While the database is down: 503 with Retry-After, JSON for the API, a page for people.
    cluster.stop()
    down = api.get(projects, timeout=10)
    assert down.status_code == 503, down.text[:500]
    assert down.headers["Retry-After"] == "7"
    assert down.headers["Content-Type"].startswith("application/json")
    assert "database is unavailable" in down.json()["detail"] and down.json()["retry_after"] == 7
    page = server["browser"].get(f"{server['base']}/", timeout=10)
    assert page.status_code == 503 and page.headers["Retry-After"] == "7"
    assert 'data-testid="unavailable"' in page.text
    # A write too (the token lookup is the first query to fail).
    posted = api.post(projects, json={"name": "x"}, timeout=10)
    assert posted.status_code == 503 and posted.headers["Retry-After"] == "7"

    # Back up: the same server process answers again, no restart needed.
    cluster.start()
    assert api.get(projects, timeout=10).status_code == 200
    assert server["browser"].get(f"{server['base']}/", timeout=10).status_code == 200
    assert "Internal Server Error" not in server["log"].read_text(errors="replace")


@pytest.mark.parametrize(
    "error",
    [OperationalError("server closed the connection unexpectedly"), InterfaceError("connection already closed")],
)
def test_handler500_answers_503_for_a_lost_connection_raised_outside_a_view(error: Exception) -> None:
    # Django calls handler500 inside its ``except`` block, e.g. when the session
    # middleware fails to save a session: the error is in sys.exc_info().
    request = RequestFactory().get("/p/1/", HTTP_ACCEPT="text/html")
    try:
        raise error
    except type(error):
        response = server_error(request)
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert b'data-testid="unavailable"' in response.content
    try:
        raise ValueError("a bug")
    except ValueError:
        assert server_error(request).status_code == 500
