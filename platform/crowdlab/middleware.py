"""Project middleware: the health endpoint, a quieter WhiteNoise, and 503 for a lost database.

A lost database connection answers 503 with ``Retry-After``, not 500. While PostgreSQL
restarts (or fails over) every request that touches it raises ``OperationalError``
(connection refused, terminated by administrator) or ``InterfaceError`` (connection
already closed). That is the server being briefly unavailable, not a bug: clients and
load balancers should retry, and ``Retry-After`` tells them when. ``CONN_HEALTH_CHECKS``
(settings) makes the first request after the restart reconnect instead of failing on the
dead persistent connection, and Django closes an unusable connection at the end of each
request, so nothing else is needed to recover. Two entry points:
``DatabaseUnavailableMiddleware.process_exception`` for errors raised by views (DRF
re-raises what its handler does not know), and ``crowdlab.views.server_error``
(``handler500``) for errors raised outside views, e.g. by the session middleware saving a
session. Neither touches the database: the page is rendered without the request context.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from whitenoise.middleware import WhiteNoiseMiddleware

from . import health

logger = logging.getLogger(__name__)

HEALTH_PATHS = frozenset({"/health/", "/health"})
DATABASE_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)
UNAVAILABLE_MESSAGE = "The database is unavailable (restarting?); please retry in a few seconds."


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


def wants_json(request: HttpRequest) -> bool:
    """API clients and ``fetch`` calls get JSON errors, people get pages."""
    accept = request.headers.get("Accept", "")
    return request.path_info.startswith("/api/") or ("application/json" in accept and "text/html" not in accept)


def unavailable_response(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """503 + Retry-After, as JSON for the API and as a small page for people."""
    retry_after = int(getattr(settings, "DATABASE_RETRY_AFTER_S", 5))
    logger.warning("%s %s: database unavailable (%s: %s); answered 503", request.method, request.path,
                   type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    if wants_json(request):
        response: HttpResponse = JsonResponse({"detail": UNAVAILABLE_MESSAGE, "retry_after": retry_after}, status=503)
    else:
        html = render_to_string("503.html", {"message": UNAVAILABLE_MESSAGE, "retry_after": retry_after})
        response = HttpResponse(html, status=503)
    response["Retry-After"] = str(retry_after)
    # Never cache an outage.
    response["Cache-Control"] = "no-store"
    return response


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DATABASE_ERRORS):
            return unavailable_response(request, exception)
        return None
