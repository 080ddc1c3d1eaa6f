"""Running crowdlab's processes side by side: gunicorn and the Celery worker (with beat).

``crowdlab demo``, ``crowdlab serve`` and ``manage.py demo`` share this. Each
child leads its own session, so the terminal's Ctrl-C reaches only us and we
stop the children in order; then this process exits, and with the last
reference gone the embedded PostgreSQL stops too (``crowdlab.embedded``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from celery import current_app
from django.conf import settings

from crowdlab.embedded import forget_dead_handles
from crowdlab.home import SOURCE_ROOT


def worker_options() -> list[str]:
    """``celery worker`` options: both queues, one process, beat, the schedule in CROWDLAB_HOME."""
    schedule = settings.CROWDLAB_HOME / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    return [
        "-Q",
        f"{settings.CELERY_INFERENCE_QUEUE},{settings.CELERY_TASK_DEFAULT_QUEUE}",
        "--concurrency",
        "1",
        "--beat",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--schedule",
        str(schedule),
    ]


def _child_env() -> dict[str, str]:
    env = os.environ.copy()
    if SOURCE_ROOT is not None:
        # A checkout run through manage.py, crowdlab perhaps not installed: the
        # children import it the way manage.py does.
        env["PYTHONPATH"] = os.pathsep.join(
            [str(SOURCE_ROOT / "platform"), str(SOURCE_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
    env.setdefault("DJANGO_SETTINGS_MODULE", "crowdlab.settings")
    return env


def _check_broker(write: Any) -> None:
    try:
        with current_app.connection_for_write() as broker_connection:
            broker_connection.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # noqa: BLE001 - kombu raises many transport-specific errors
        write(
            f"The Celery broker {settings.CELERY_BROKER_URL} is not reachable ({exc}); the worker keeps retrying, "
            "and inference runs wait until it connects. Start it, or unset CELERY_BROKER_URL for the embedded one."
        )


def run_services(
    *,
    host: str,
    port: int,
    web_workers: int = 2,
    with_worker: bool = True,
    out: Any = None,
    err: Any = None,
) -> int:
    """Start the worker (if asked) and gunicorn, wait for SIGINT/SIGTERM or a child's exit, stop both.

    Returns 0 after a requested stop, 1 when a child exited by itself.
    """
    write = out or (lambda text: print(text, flush=True))
    warn = err or (lambda text: print(text, file=sys.stderr, flush=True))
    env = _child_env()
    commands: list[tuple[str, list[str]]] = []
    if with_worker:
        _check_broker(warn)
        commands.append(("worker", [sys.executable, "-m", "celery", "-A", "crowdlab", "worker", *worker_options()]))
    commands.append(
        (
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "crowdlab.wsgi:application",
                "--bind",
                f"{host}:{port}",
                "--workers",
                str(web_workers),
                "--threads",
                "2",
                "--access-logfile",
                "-",
                "--graceful-timeout",
                "5",
            ],
        )
    )
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False
    failed = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for name, command in commands:
            children.append((name, subprocess.Popen(command, env=env, start_new_session=True)))
            write(f"started {name} (pid {children[-1][1].pid}): {' '.join(command[1:7])} …")
        write(f"Serving on http://{host}:{port}/ — press Ctrl-C to stop.")
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    warn(f"{name} exited with status {child.returncode}; stopping the others.")
                    stopping = failed = True
                    break
            time.sleep(0.5)
    finally:
        write("Stopping…")
        # SIGTERM to the main processes: gunicorn and Celery shut their own
        # workers down gracefully (Celery lets a running task finish).
        for _, child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        killed = False
        for name, child in reversed(children):
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # A running inference task keeps a warm shutdown waiting; the
                # run is failed by its stale heartbeat and the next trigger starts a fresh one
                # (with Redis/RabbitMQ, acks_late + reject_on_worker_lost re-queue it).
                # Each child leads its own process group, so killing the group
                # leaves no orphaned pool processes.
                warn(f"{name} did not stop within 10 s; killing it.")
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                killed = True
        if killed and settings.EMBEDDED_DATABASE:
            # The killed worker never dropped its handle on the embedded server,
            # which would then outlive us (seen: postgres left running after a
            # demo stopped mid-run).
            forget_dead_handles(settings.CROWDLAB_HOME)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        write("Stopped.")
    return 1 if failed else 0
