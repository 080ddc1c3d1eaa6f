"""``manage.py recover_runs``: fail dead runs and re-send lost pending ones.

Use after a crash of the whole deployment (or from cron where beat is not run).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from crowdlab.live.triggers import enqueue_run
from crowdlab.results.models import InferenceRun, RunStatus
from crowdlab.results.services import run_fail, runs_fail_stale


class Command(BaseCommand):
    help = "Fail runs whose worker died (stale heartbeat, or all running with --all-running) and re-send pending runs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--timeout",
            type=int,
            default=None,
            help="Heartbeat age in seconds after which a running run is dead (default: INFERENCE_HEARTBEAT_TIMEOUT_S).",
        )
        parser.add_argument(
            "--all-running",
            action="store_true",
            help="Fail every running run (only when no worker is alive, e.g. after a full restart).",
        )
        parser.add_argument("--no-resend", action="store_true", help="Do not re-send pending runs to the queue.")

    def handle(self, *args: Any, timeout: int | None, all_running: bool, no_resend: bool, **options: Any) -> None:
        if timeout is not None and timeout < 1:
            self.stderr.write("--timeout: must be a positive number of seconds")
            raise SystemExit(2)
        failed = runs_fail_stale(timeout_s=timeout)
        if all_running:
            for run_id in InferenceRun.objects.filter(status=RunStatus.RUNNING).values_list("id", flat=True):
                if run_fail(run_id=run_id, error="Failed by recover_runs --all-running (no worker was alive)."):
                    failed.append(run_id)
        resent: list[int] = []
        if not no_resend:
            for run_id in InferenceRun.objects.filter(status=RunStatus.PENDING).values_list("id", flat=True):
                if enqueue_run(run_id):
                    resent.append(run_id)
        self.stdout.write(f"failed runs: {failed or 'none'}; re-sent pending runs: {resent or 'none'}")
