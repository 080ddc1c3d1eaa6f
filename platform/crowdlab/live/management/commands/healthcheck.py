"""``manage.py healthcheck``: the checks behind ``/health/``, for a process
that serves no HTTP.

Celery beat is one: it has no remote-control channel, so ``celery inspect
ping`` (the worker's healthcheck) cannot reach it, and pinging a worker from
beat's container would only say whether some worker is up. What beat needs to
do its job is the database (django-celery-beat's schedule) and the broker (to
send the tasks), so that is what its compose healthcheck asks here.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from crowdlab import health


class Command(BaseCommand):
    help = "Check the database (SELECT 1) and the Celery broker; exit 1 when either is down."

    def handle(self, *args: Any, **options: Any) -> None:
        results = health.checks()
        self.stdout.write(json.dumps(results))
        down = sorted(name for name, value in results.items() if value != "ok")
        if down:
            raise CommandError(f"unhealthy: {', '.join(down)} down (see the log above for why)")
