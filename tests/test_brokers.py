"""The tests' broker: one variable, and no keys left behind."""

from __future__ import annotations

import os
import uuid

import pytest
import redis

from crowdlab.celery import app as celery_app
from tests.brokers import TEST_BROKER_URL, delete_queues


def _keys_naming(client: redis.Redis, name: str) -> list[str]:
    """Every key that is, or whose set holds a member naming, ``name``."""
    found = [key.decode() for key in client.scan_iter(match=f"*{name}*")]
    for key in client.scan_iter(match="_kombu.binding*"):
        if client.type(key) == b"set" and any(name in member.decode() for member in client.smembers(key)):
            found.append(f"{key.decode()} (member)")
    return found


def test_the_tests_send_to_the_test_broker_only() -> None:
    # tests/conftest.py points the app at TEST_BROKER_URL before any test runs,
    # whatever CELERY_BROKER_URL (a deployment's broker) says.
    assert celery_app.conf.broker_url == TEST_BROKER_URL
    assert os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/13") == TEST_BROKER_URL


def test_delete_queues_leaves_no_key_behind() -> None:
    if not TEST_BROKER_URL.startswith("redis://"):
        pytest.skip("inspects Redis keys; TEST_BROKER_URL is not Redis")
    client = redis.Redis.from_url(TEST_BROKER_URL)
    name = f"cleanup_probe_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    # What a test does: send a task to its own queue that no worker consumes.
    celery_app.send_task("live.tasks.sweep", queue=name)
    before = _keys_naming(client, name)
    assert name in before and f"_kombu.binding.{name}" in before  # the message list and its binding

    delete_queues([name])

    assert _keys_naming(client, name) == []
