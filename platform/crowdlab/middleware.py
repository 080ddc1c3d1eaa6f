"""A lost database connection answers 503 with ``Retry-After``, not 500.

While PostgreSQL restarts (or fails over) every request that touches it raises
``OperationalError`` (connection refused, terminated by administrator) or
``InterfaceError`` (connection already closed). That is the server being
briefly unavailable, not a bug: clients and load balancers should retry, and
``Retry-After`` tells them when. ``CONN_HEALTH_CHECKS`` (settings) makes the
first request after the restart reconnect instead of failing on the dead
persistent connection, and Django closes an unusable connection at the end of
each request, so nothing else is needed to recover.

Two entry points: ``DatabaseUnavailableMiddleware.process_exception`` for
errors raised by views (DRF re-raises what its handler does not know), and
``server_error`` (``handler500``) for errors raised outside views, e.g. by the
session middleware saving a session. Neither touches the database: the page
is rendered without the request context (no user, no session).
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.views import defaults

logger = logging.getLogger(__name__)

DATABASE_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)
MESSAGE = "The database is unavailable (restarting?); please retry in a few seconds."


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


def unavailable_response(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """503 + Retry-After, as JSON for the API and as a small page for people."""
    retry_after = int(getattr(settings, "DATABASE_RETRY_AFTER_S", 5))
    logger.warning("%s %s: database unavailable (%s: %s); answered 503", request.method, request.path,
                   type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    if _wants_json(request):
        response: HttpResponse = JsonResponse({"detail": MESSAGE, "retry_after": retry_after}, status=503)
    else:
        html = render_to_string("503.html", {"message": MESSAGE, "retry_after": retry_after})
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


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: 503 for a lost database connection raised outside a view, else Django's 500."""
    exc = sys.exc_info()[1]
    if isinstance(exc, DATABASE_ERRORS):
        return unavailable_response(request, exc)
    return defaults.server_error(request)
