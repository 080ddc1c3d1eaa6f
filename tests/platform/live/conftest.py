"""Fixtures for live inference: a known-truth crowd and a REAL Celery worker.

The worker is a separate ``celery worker`` process (prefork, concurrency 1)
on the real broker named by ``TEST_BROKER_URL`` (tests/brokers.py; default
Redis DB 13), consuming a queue of its own, and talking to this session's test
database. No eager mode anywhere. ``TEST_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//``
runs the same tests on RabbitMQ.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.db import connection
from django.db.models import F

from crowdlab.celery import app as celery_app
from crowdlab.labelling.models import Annotation
from crowdlab.projects.models import Item, ItemKind, Membership, Project
from crowdlab.projects.roles import make_requester
from crowdlab.results.models import InferenceRun
from tests.brokers import TEST_BROKER_URL, session_queue
from tests.platform.factories import UserFactory

REPO = Path(__file__).resolve().parents[3]
# Own queue (deleted at the session's end): other engineers run workers and
# tests on the same broker.
QUEUE = session_queue("live_test")
BROKER_URL = TEST_BROKER_URL
WORKER_NAME = f"live_test_{os.getpid()}@localhost"


@pytest.fixture
def live_tasks_queue() -> str:
    """Overrides tests/conftest.py's: these tests' runs go to their worker."""
    return QUEUE


CLASSES = [{"name": "cat", "key": "1"}, {"name": "dog", "key": "2"}, {"name": "bird", "key": "3"}]


class Worker:
    """A celery worker subprocess that can be SIGKILLed and restarted."""

    def __init__(self, database_name: str, name: str = WORKER_NAME, heartbeat_timeout_s: int | None = 3600) -> None:
        self.database_name = database_name
        self.name = name  # the node name: a replacement container comes back with another one
        # Every worker fails stale runs of its database (live.tasks.StaleRunWatchdog).
        # The session's worker outlives these tests and would race the tests that
        # make runs stale on purpose and fail them themselves, so it waits an hour;
        # None keeps the production default (the replacement-worker test).
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = REPO / "test-artifacts" / f"live-worker-{os.getpid()}-{name.split('@')[0]}.log"
        self.log_path.parent.mkdir(exist_ok=True)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{self.database_name}",
            CELERY_BROKER_URL=BROKER_URL,
            CELERY_INFERENCE_QUEUE=QUEUE,
            INFERENCE_THREADS="1",
            PYTHONPATH=os.pathsep.join([str(REPO / "platform"), str(REPO)]),
        )
        env.pop("INFERENCE_HEARTBEAT_TIMEOUT_S", None)
        if self.heartbeat_timeout_s is not None:
            env["INFERENCE_HEARTBEAT_TIMEOUT_S"] = str(self.heartbeat_timeout_s)
        return env

    def start(self) -> None:
        with open(self.log_path, "ab") as log:  # the worker keeps its own descriptor
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "crowdlab",
                    "worker",
                    "-Q",
                    QUEUE,
                    "--concurrency",
                    "1",
                    "-P",
                    "prefork",
                    "-n",
                    self.name,
                    "--loglevel",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=REPO / "platform",
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: SIGKILL reaches the pool child too
            )
        self.wait_ready()

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"worker exited; see {self.log_path}"
            replies = celery_app.control.ping(destination=[self.name], timeout=0.5) or []
            if replies:
                return
            time.sleep(0.5)
        raise AssertionError(f"worker not ready after {timeout} s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool child) mid-whatever."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture(scope="session")
def _live_worker(django_db_setup: None, django_db_blocker: Any) -> Iterator[Worker]:
    with django_db_blocker.unblock():
        name = connection.settings_dict["NAME"]
    # Leftovers of an earlier, interrupted session with the same pid; only our
    # own queue: other runs' queues on the shared broker are not ours to purge.
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge(QUEUE)
    worker = Worker(name)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def live_worker(_live_worker: Worker) -> Iterator[Worker]:
    """The session's worker, (re)started if a previous test killed it."""
    if _live_worker.proc is None or _live_worker.proc.poll() is not None:
        _live_worker.start()
    yield _live_worker


def wait_for(predicate: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.2, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def wait_run(run_id: int, statuses: tuple[str, ...], *, timeout: float = 60.0) -> InferenceRun:
    def check() -> InferenceRun | None:
        run = InferenceRun.objects.defer("checkpoint").get(pk=run_id)
        return run if run.status in statuses else None

    return wait_for(check, timeout=timeout, what=f"run {run_id} to become {statuses}")


def _requester(username: str) -> Any:
    user = UserFactory(username=username)
    make_requester(user)
    return user


def make_crowd_project(
    *,
    owner: Any,
    n_items: int = 40,
    n_annotators: int = 4,
    accuracy: tuple[float, ...] | None = None,
    model: str = "ds",
    retrain_every_n: int = 10_000,
    seed: int = 0,
    features: bool = False,
    n_unlabelled: int = 0,
    name: str = "Live crowd",
) -> tuple[Project, np.ndarray, list[Any], list[Item]]:
    """A project whose items have a known true class, labelled by annotators of
    known accuracy (wrong labels are uniform over the other classes).

    Returns (project, truth per item, annotators, items). Annotations are
    stored directly (like a crowd import); tests add more through the API.
    """
    rng = np.random.default_rng(seed)
    project = Project.objects.create(
        owner=owner,
        name=name,
        classes=[dict(c) for c in CLASSES],
        k=n_annotators + 2,
        model=model,
        retrain_every_n=retrain_every_n,
        retrain_every_minutes=10_000,
    )
    c = len(CLASSES)
    total = n_items + n_unlabelled
    truth = rng.integers(0, c, size=total)
    centres = rng.normal(size=(c, 6)) * 3.0
    items = Item.objects.bulk_create(
        [
            Item(
                project=project,
                external_id=f"it{i:05d}",
                kind=ItemKind.TEXT,
                text=f"{CLASSES[truth[i]]['name']} picture number {i}",
                features=(centres[truth[i]] + rng.normal(size=6)).round(4).tolist() if features else None,
            )
            for i in range(total)
        ]
    )
    accuracy = accuracy or tuple([0.9] * n_annotators)
    annotators = [UserFactory(username=f"{name.replace(' ', '_').lower()}_ann{r}") for r in range(len(accuracy))]
    Membership.objects.bulk_create([Membership(project=project, user=u) for u in annotators])
    rows = []
    for i in range(n_items):
        for r, acc in enumerate(accuracy):
            label = truth[i] if rng.random() < acc else (truth[i] + rng.integers(1, c)) % c
            rows.append(
                Annotation(project=project, item=items[i], annotator=annotators[r], label=CLASSES[label]["name"])
            )
    if rows:
        Annotation.objects.bulk_create(rows)
        Item.objects.filter(pk__in=[it.pk for it in items[:n_items]]).update(
            n_annotations=F("n_annotations") + len(accuracy)
        )
    return project, truth, annotators, items


@pytest.fixture
def live_owner(transactional_db: None) -> Any:
    return _requester("live_owner")
