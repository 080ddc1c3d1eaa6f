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
    if sys.argv[1:2] == ["demo"]:
        # The demo serves with DEBUG off, which needs a SECRET_KEY before the
        # settings load: its own, made once and kept in CROWDLAB_HOME (as
        # `crowdlab demo` does). Its gunicorn and Celery
        # worker inherit it through the environment.
        from crowdlab.cli import local_secret_key

        local_secret_key(demo=True)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
