"""The ``crowdlab`` command (``[project.scripts]``): one entry point for an installed crowdlab.

    crowdlab demo [--port 8000] …   migrate, demo logins and project, then worker + web (Ctrl-C stops)
    crowdlab serve [--port 8000] …  gunicorn; with the embedded broker also the Celery worker with beat
    crowdlab worker [celery options] the Celery worker on the inference and default queues, with beat
    crowdlab fit …                  ``python -m inference fit …`` (same arguments)
    crowdlab manage <command> …     any Django management command (``manage.py`` in a checkout)

With ``DATABASE_URL`` / ``CELERY_BROKER_URL`` unset everything runs embedded in
``CROWDLAB_HOME`` (README, "Embedded mode").
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

USAGE = __doc__.split("\n\n")[1]


def local_secret_key(*, demo: bool) -> None:
    """A SECRET_KEY when none is set, made once and kept in CROWDLAB_HOME (0600).

    The demo always gets one (it serves with DEBUG off, like a deployment).
    Other commands only with ``DATABASE_URL`` unset: the key signs sessions
    stored in the embedded database next to it. A deployment (``DATABASE_URL``
    set) brings its own key, and the settings refuse to start without one.
    """
    if os.environ.get("SECRET_KEY") or (os.environ.get("DATABASE_URL") and not demo):
        return
    from crowdlab.demo_key import demo_secret_key
    from crowdlab.home import crowdlab_home

    os.environ["SECRET_KEY"] = demo_secret_key(crowdlab_home() / "demo-secret-key")


def _django(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crowdlab.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(argv)


def _serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="crowdlab serve", description="Serve crowdlab with gunicorn.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    parser.add_argument(
        "--with-worker",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run the Celery worker with beat (default: only with the embedded broker, "
        "where no other worker can be running)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crowdlab.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from crowdlab.processes import run_services

    if settings.EMBEDDED_DATABASE:
        # Nobody else migrates the embedded database: an upgraded crowdlab does it here.
        call_command("migrate", interactive=False, verbosity=0)
    with_worker = settings.EMBEDDED_BROKER if args.with_worker is None else args.with_worker
    return run_services(host=args.host, port=args.port, web_workers=args.workers, with_worker=with_worker)


def _worker(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crowdlab.settings")
    from crowdlab.celery import app
    from crowdlab.processes import worker_options

    app.worker_main(["worker", *worker_options(), *argv])


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(f"usage:\n{USAGE}")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "fit":
        from inference.cli import main as inference_main

        return inference_main(["fit", *rest])
    if command in {"demo", "serve", "worker", "manage"}:
        local_secret_key(demo=command == "demo")
    if command == "demo":
        _django(["crowdlab manage", "demo", *rest])
        return 0
    if command == "manage":
        _django(["crowdlab manage", *rest])
        return 0
    if command == "serve":
        return _serve(rest)
    if command == "worker":
        _worker(rest)
        return 0
    print(f"crowdlab: unknown command {command!r}\nusage:\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
