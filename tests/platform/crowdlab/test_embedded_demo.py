"""The README's command 1 on a bare machine: ``crowdlab demo`` with nothing set.

No ``DATABASE_URL``, no ``CELERY_BROKER_URL``, no ``SECRET_KEY``, an empty
``HOME`` and ``CROWDLAB_HOME``: the demo starts its embedded PostgreSQL and its
filesystem broker in ``CROWDLAB_HOME``, a real Celery worker with beat and
gunicorn. An annotator labels an item, the requester's run is executed by the
worker and published; Ctrl-C (SIGINT) stops every process, the PostgreSQL
server included, and a second start serves within 30 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

REPO = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.slow, pytest.mark.worker, pytest.mark.timeout(600)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _processes_of(scratch: Path, home: Path) -> list[psutil.Process]:
    """crowdlab's processes of this test: started in ``scratch`` (web, worker) or
    serving ``home``'s PostgreSQL data folder."""
    found = []
    for process in psutil.process_iter(["cwd", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["cwd"] == str(scratch) or str(home / "pgdata") in cmdline:
            found.append(process)
    return found


class Demo:
    def __init__(self, scratch: Path, home: Path, port: int) -> None:
        self.scratch, self.home, self.port = scratch, home, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = scratch / "demo.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start ``crowdlab demo``; the seconds until it serves the login page."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.home.parent / "user"),
            "CROWDLAB_HOME": str(self.home),
            # The console script of an editable install, without installing into the shared venv.
            "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO)]),
            "INFERENCE_THREADS": "1",
        }
        started = time.monotonic()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "crowdlab.cli",
                    "demo",
                    "--port",
                    str(self.port),
                    "--items",
                    "80",
                    "--workers",
                    "6",
                    "--unlabelled",
                    "20",
                ],
                cwd=self.scratch,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = started + 300
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-4000:]
            try:
                if requests.get(f"{self.url}/login/", timeout=10).status_code == 200:
                    return time.monotonic() - started
            except (requests.ConnectionError, requests.Timeout):
                # Not listening yet, or a gunicorn worker still booting on a
                # loaded machine (seen: a 2 s read timeout on the second start).
                time.sleep(0.25)
                continue
            time.sleep(0.25)
        raise AssertionError("the demo did not serve within 300 s:\n" + self.log.read_text()[-4000:])

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(timeout=60) == 0, self.log.read_text()[-4000:]
        deadline = time.monotonic() + 20
        while _processes_of(self.scratch, self.home) and time.monotonic() < deadline:
            time.sleep(0.25)
        left = [(p.pid, p.info["cmdline"]) for p in _processes_of(self.scratch, self.home)]
        assert left == [], left

    def kill(self) -> None:
        for process in _processes_of(self.scratch, self.home):
            process.kill()


def _token(url: str, username: str) -> dict[str, str]:
    response = requests.post(
        f"{url}/api/auth/token/", json={"username": username, "password": f"{username}-demo-pass"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Token {response.json()['token']}"}


def test_crowdlab_demo_on_a_bare_machine_labels_infers_stops_and_restarts(tmp_path: Path) -> None:
    scratch, home = tmp_path / "scratch", tmp_path / "crowdlab-home"
    scratch.mkdir()
    demo = Demo(scratch, home, _free_port())
    try:
        first_start = demo.start()
        assert (home / "pgdata" / "PG_VERSION").is_file()
        assert (home / "demo-secret-key").is_file()
        # The embedded server listens on its Unix socket only: no TCP port at all.
        postmaster = (home / "pgdata" / "postmaster.pid").read_text().splitlines()
        assert postmaster[5].strip() == "", postmaster

        owner, annotator = _token(demo.url, "demo-requester"), _token(demo.url, "anna")
        projects = requests.get(f"{demo.url}/api/projects/", headers=owner, timeout=10).json()["results"]
        project = projects[0]["id"]
        task = requests.post(f"{demo.url}/api/projects/{project}/next-task/", headers=annotator, timeout=10)
        assert task.status_code == 200, task.text
        submit = requests.post(
            f"{demo.url}/api/projects/{project}/annotations/",
            headers=annotator,
            timeout=10,
            json={"item": task.json()["item"]["external_id"], "label": "cat"},
        )
        assert submit.status_code == 201, submit.text

        # The demo's crowd is past the project's threshold: the label may have started a run
        # already (409 names it); otherwise the requester asks for one.
        created = requests.post(f"{demo.url}/api/projects/{project}/runs/", headers=owner, json={}, timeout=10)
        assert created.status_code in {201, 409}, created.text
        run = created.json() if created.status_code == 201 else created.json()["run"]
        run_url = f"{demo.url}/api/projects/{project}/runs/{run['id']}/"
        deadline = time.monotonic() + 240
        status = run["status"]
        while status not in {"published", "failed"} and time.monotonic() < deadline:
            time.sleep(1)
            status = requests.get(run_url, headers=owner, timeout=10).json()["status"]
        assert status == "published", demo.log.read_text()[-4000:]
        demo.stop()

        second_start = demo.start()
        assert second_start < 30, second_start
        assert requests.get(run_url, headers=owner, timeout=10).json()["status"] == "published"
        demo.stop()
        print(f"\nfirst start (bare CROWDLAB_HOME): {first_start:.1f} s; second start: {second_start:.1f} s")
    finally:
        demo.kill()
