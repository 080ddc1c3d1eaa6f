"""The Celery broker the tests talk to, and cleaning up after them.

``TEST_BROKER_URL`` is the one setting: default ``redis://127.0.0.1:6379/13``,
a Redis database of the tests' own, apart from a deployment's (``/0``) and the
benchmarks' (``/14``). ``TEST_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//``
runs the same tests on RabbitMQ. ``tests/conftest.py`` points the Celery app at
it before any test runs, so no test ever sends to ``CELERY_BROKER_URL``.

Several engineers' test runs share that database, so nothing is flushed:
each run names its queues after its process id (``session_queue``), and the
session's end deletes exactly those, with their binding keys
(``delete_queues``). Celery's control replies (``celery_app.control.ping``)
live in queues that expire by themselves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from kombu import Exchange, Queue

from crowdlab.celery import app as celery_app

TEST_BROKER_URL = os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/13")

_session_queues: set[str] = set()


def session_queue(prefix: str) -> str:
    """A queue name of this test process (``<prefix>_<pid>``), deleted at the session's end."""
    name = f"{prefix}_{os.getpid()}"
    _session_queues.add(name)
    return name


def route_live_tasks_to(queue: str) -> None:
    """Send ``live.tasks.*`` to ``queue`` from now on.

    Celery caches its routing table and router on the first send; without the
    reset a later change would be ignored.
    """
    celery_app.conf.task_routes = {"live.tasks.*": {"queue": queue}}
    celery_app.amqp.flush_routes()
    celery_app.amqp.__dict__.pop("router", None)


def delete_queues(names: Iterable[str]) -> None:
    """Delete the queues, their messages and their bindings (on Redis: the list
    and the ``_kombu.binding*`` entries), and on Redis what kombu keeps about
    them elsewhere.

    Declared first, as Celery declares them (a direct exchange of the same
    name), so that kombu knows the bindings it has to remove.
    """
    names = sorted(set(names))
    if not names:
        return
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        for name in names:
            queue = Queue(name, Exchange(name, type="direct"), routing_key=name)(channel)
            queue.declare()
            queue.delete()
    if TEST_BROKER_URL.startswith(("redis://", "rediss://")):
        _redis_forget(names)


def _redis_forget(names: list[str]) -> None:
    """Kombu's shared bookkeeping keys on Redis, minus what concerned ``names``.

    ``unacked``/``unacked_index`` keep a message a worker took but never
    acknowledged (the tests SIGKILL workers mid-run) until a worker of its
    queue restores it, which none will: drop those of our queues.
    ``_kombu.binding_deadlines`` lists binding tables with a TTL (Celery's
    control replies); a member whose table is gone is dead weight.
    """
    import redis

    client = redis.Redis.from_url(TEST_BROKER_URL)
    ours = set(names)
    for tag, raw in client.hscan_iter("unacked"):
        try:
            _message, exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        if exchange in ours or routing_key in ours:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
    for member in client.zrange("_kombu.binding_deadlines", 0, -1):
        exchange = member.decode()
        if not client.exists(f"_kombu.binding.{exchange}", f"_kombu.binding_permanent.{exchange}"):
            client.zrem("_kombu.binding_deadlines", member)


def delete_session_queues() -> None:
    delete_queues(_session_queues)
    _session_queues.clear()
