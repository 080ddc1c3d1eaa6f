"""How crowdlab answers a login refused for too many failures (django-axes).

django-axes counts failed logins per IP address and per username (settings:
``LOGIN_FAILURE_LIMIT``, ``LOGIN_LOCKOUT_SECONDS``) and refuses every login of
a locked-out client, the right password included. These hooks give it
crowdlab's client address and crowdlab's answer: 429 Too Many Requests with a
``Retry-After`` header, for the login form (``/login/``, ``/admin/login/``) and
for ``POST /api/auth/token/``.
"""

from __future__ import annotations

import math
from typing import Any

from axes.helpers import get_cool_off
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from rest_framework.throttling import BaseThrottle

LOCKED_OUT_MESSAGE = "Too many failed logins from this address or for this username."


def client_ip(request: HttpRequest) -> str | None:
    """The client's address, by DRF's rule (``REST_FRAMEWORK["NUM_PROXIES"]``,
    set from ``TRUSTED_PROXY_COUNT``): the TCP peer, or with N trusted proxies
    the N-th address from the right of X-Forwarded-For (each proxy appends the
    address it saw, so the entries left of that were written by the client)."""
    # The stub asks for DRF's Request; get_ident reads only request.META, which HttpRequest has.
    return BaseThrottle().get_ident(request)  # type: ignore[arg-type]


def retry_after_seconds(request: HttpRequest | None = None) -> int:
    """Seconds until a locked-out client may try again.

    The refused attempt itself counts as a failure (django-axes restarts the
    wait on every attempt during a lockout), so the wait is the full cool-off.
    """
    cool_off = get_cool_off(request)
    return max(1, math.ceil(cool_off.total_seconds())) if cool_off is not None else 3600


def wait_in_words(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """``AXES_LOCKOUT_CALLABLE`` for the login forms: the page with a 429 and ``Retry-After``."""
    seconds = retry_after_seconds(request)
    response = render(
        request,
        "registration/locked_out.html",
        {"message": LOCKED_OUT_MESSAGE, "wait": wait_in_words(seconds)},
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response
