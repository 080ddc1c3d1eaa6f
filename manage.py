#!/usr/bin/env python
"""Django's command-line utility for crowdlab."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# platform/ is a plain folder, not a package: a package named "platform" would
# shadow the standard library module that Celery, kombu and others import.
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(1, str(ROOT))


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crowdlab.settings")
    if sys.argv[1:2] == ["demo"] and not os.environ.get("SECRET_KEY"):
        # The demo serves with DEBUG off, which needs a SECRET_KEY before the
        # settings load: its own, made once and kept in var/ (untracked). Its
        # gunicorn and Celery worker inherit it through the environment.
        from crowdlab.demo_key import demo_secret_key

        os.environ["SECRET_KEY"] = demo_secret_key(ROOT / "var" / "demo-secret-key")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
