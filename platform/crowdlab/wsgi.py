"""WSGI entry point: ``gunicorn --chdir platform crowdlab.wsgi``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
if (ROOT / "manage.py").is_file():
    # A checkout (gunicorn --chdir platform): platform/ and the root hold the
    # packages. Installed from a wheel, they are on sys.path already.
    for path in (str(ROOT / "platform"), str(ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crowdlab.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
