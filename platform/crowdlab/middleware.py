"""Project middleware: the health endpoint, a quieter WhiteNoise, 503 for a lost database,
and the site-wide Content-Security-Policy.

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

from csp.constants import HEADER
from csp.middleware import CheckableLazyObject, CSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
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
            response = JsonResponse(
                {"status": "ok" if healthy else "unavailable", **results}, status=200 if healthy else 503
            )
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
    logger.warning(
        "%s %s: database unavailable (%s: %s); answered 503",
        request.method,
        request.path,
        type(exc).__name__,
        str(exc).strip().splitlines()[0] if str(exc).strip() else "",
    )
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


# What a response or request carries when a view or template asked for a
# policy of its own (django-csp's decorators, a nonce): then django-csp decides.
_PER_RESPONSE = (
    "_csp_config",
    "_csp_update",
    "_csp_replace",
    "_csp_exempt",
    "_csp_config_ro",
    "_csp_update_ro",
    "_csp_replace_ro",
    "_csp_exempt_ro",
)


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware, with the site-wide header built once.

    django-csp rebuilds the header from the settings on every response
    (~45 µs measured here), a few per cent of the CPU of the annotators' hot
    path (``api/hot.py``, ~1 ms). A response without a per-view policy gets the
    same string every time, so it is built once per value of
    ``CONTENT_SECURITY_POLICY`` (the object's identity: ``override_settings``
    in tests gets a fresh one); anything else goes to django-csp unchanged.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._built_for: object = None
        self._header = ""

    def _site_header(self) -> str:
        policy = getattr(settings, "CONTENT_SECURITY_POLICY", None)
        if policy is not self._built_for:
            self._header = build_policy()
            self._built_for = policy
        return self._header

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        policy = getattr(settings, "CONTENT_SECURITY_POLICY", None)
        if (
            settings.DEBUG  # django-csp leaves debug error pages alone
            or getattr(settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", None)
            or (policy or {}).get("EXCLUDE_URL_PREFIXES")
            or getattr(request, "_csp_nonce", None) is not None
            or any(hasattr(response, name) for name in _PER_RESPONSE)
        ):
            return super().process_response(request, response)
        header = self._site_header()
        if header and HEADER not in response:
            response[HEADER] = header
        # As django-csp does: a nonce asked for after the header was written is an error.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)  # type: ignore[attr-defined]
        return response
