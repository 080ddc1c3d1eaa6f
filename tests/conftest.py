"""Shared fixtures. Tests run on the real PostgreSQL named by DATABASE_URL and
on the Celery broker named by TEST_BROKER_URL (see tests/brokers.py)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import pytest

from crowdlab.celery import app as celery_app
from tests.brokers import TEST_BROKER_URL, delete_session_queues, route_live_tasks_to, session_queue

# Before any test sends a message: never the deployment's broker.
celery_app.conf.broker_url = TEST_BROKER_URL


@pytest.fixture(scope="session", autouse=True)
def _test_broker_cleanup() -> Iterator[None]:
    yield
    try:
        delete_session_queues()
    except Exception as exc:  # noqa: BLE001 - cleanup only: report it in the summary, do not fail a green session
        warnings.warn(f"could not delete this session's test queues on {TEST_BROKER_URL}: {exc}", stacklevel=1)


@pytest.fixture
def live_tasks_queue() -> str:
    """Where this test's ``live.tasks`` messages go: by default a queue of this
    session that no worker consumes (deleted at the end); tests/platform/live
    overrides it with its worker's queue."""
    return session_queue("tests_unconsumed")


@pytest.fixture(autouse=True)
def _route_live_tasks(live_tasks_queue: str) -> None:
    # Per test, not at import: conftests set it at import before, so whichever
    # was imported last (it depends on the command line) routed every test.
    route_live_tasks_to(live_tasks_queue)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``install`` tests (a fresh virtualenv, minutes) run only with RUN_INSTALL_TESTS=1:
    ``.ci/run`` runs them as a step of their own after the suite."""
    if os.environ.get("RUN_INSTALL_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="pip-installs into a fresh virtualenv; set RUN_INSTALL_TESTS=1 (.ci/run does)")
    for item in items:
        if "install" in item.keywords:
            item.add_marker(skip)
