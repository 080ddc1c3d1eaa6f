"""Project middleware: the health endpoint and a quieter WhiteNoise."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from whitenoise.middleware import WhiteNoiseMiddleware

from . import health

HEALTH_PATHS = frozenset({"/health/", "/health"})


class HealthCheckMiddleware:
    """Answers ``GET /health/`` itself, first in ``MIDDLEWARE``.

    Why a middleware and not a view: compose's healthchecks call
    ``http://127.0.0.1:8000/health/`` from inside the container, and a
    deployment's ``ALLOWED_HOSTS`` names its public host, not 127.0.0.1.
    Everything from ``CommonMiddleware`` on validates the Host header (400),
    and ``SecurityMiddleware`` may redirect to HTTPS; answering before them
    makes the check independent of both. Nothing here reads the Host header,
    the session or the user, and the answer says only ok/down per service
    (see ``crowdlab.health``), so it needs no login.

    Every other request pays one set lookup on its path, so the annotators' hot
    path (``api.hot``) is not slowed.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info not in HEALTH_PATHS:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response: HttpResponse = JsonResponse({"detail": "Use GET."}, status=405)
            response["Allow"] = "GET, HEAD"
        else:
            results = health.checks()
            healthy = all(value == "ok" for value in results.values())
            response = JsonResponse({"status": "ok" if healthy else "unavailable", **results},
                                    status=200 if healthy else 503)
            if request.method == "HEAD":
                response.content = b""
        # A cached "ok" would hide an outage from the next check.
        response["Cache-Control"] = "no-store"
        return response


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise without the ``No directory at: …/staticfiles/`` warning.

    With ``WHITENOISE_USE_FINDERS`` (our settings) the files are served from the
    apps' and ``STATICFILES_DIRS``' folders whether or not ``collectstatic`` has
    filled ``STATIC_ROOT``; only the Docker image collects them. A missing
    ``STATIC_ROOT`` is therefore normal in development, in tests and under
    ``manage.py demo``, and warning about it on every start only teaches people
    to ignore warnings. Without finders a missing root still warns: then it
    really means no static files.
    """

    def add_files(self, root: Any, prefix: str | None = None) -> None:
        if self.use_finders and root == self.static_root and not os.path.isdir(root):
            return
        super().add_files(root, prefix)
