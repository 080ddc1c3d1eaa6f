"""Liveness of the two services every crowdlab process needs: the database and
the Celery broker.

``/health/`` (answered by ``crowdlab.middleware.HealthCheckMiddleware``) and
``manage.py healthcheck`` (beat's compose healthcheck) both call ``checks()``.
What they report is deliberately poor: ``ok``/``down`` per service and nothing
else. The endpoint needs no login, so it must not tell a stranger versions,
host names or error texts; the reason a check failed goes to the log.
"""

from __future__ import annotations

import logging

from celery import current_app
from django.db import connections

logger = logging.getLogger(__name__)

# Short, so that a hung service answers "down" well inside the compose
# healthcheck's own 10 s timeout instead of the check itself timing out.
BROKER_TIMEOUT_S = 3.0


def database_ok() -> bool:
    """One ``SELECT 1`` on the default database."""
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - whatever the failure, the answer is "down"; the reason is logged
        # One line, no traceback: a check repeats every 30 s while a service is down.
        logger.warning("health check: the database is not reachable: %s", exc)
        return False
    return True


def broker_ok(timeout: float = BROKER_TIMEOUT_S) -> bool:
    """Connect to the broker the Celery app sends tasks to (Redis answers a PING
    while kombu opens its channel), with one quick try and no retry loop."""
    # ``current_app``: the crowdlab app (``crowdlab/__init__`` creates it before
    # any of its modules loads); ``crowdlab.celery`` sits above this module.
    try:
        with current_app.connection_for_write(connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - as above
        logger.warning("health check: the Celery broker is not reachable: %s", exc)
        return False
    return True


def checks() -> dict[str, str]:
    """``{"database": "ok"|"down", "broker": "ok"|"down"}``."""
    return {
        "database": "ok" if database_ok() else "down",
        "broker": "ok" if broker_ok() else "down",
    }
