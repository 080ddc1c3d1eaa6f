"""``POST /api/auth/token/``: DRF's token view, with the login limits.

django-axes counts failed logins per IP address and per username (see
``crowdlab.lockout``). DRF hands ``authenticate()`` its own request object, so
django-axes' middleware never sees a lockout here; this view turns it into
DRF's 429 with ``Retry-After``. Annotators call it once to get a token; the
hot paths that use the token (``api/hot.py``) are never limited.
"""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from crowdlab.lockout import LOCKED_OUT_MESSAGE, retry_after_seconds


class TokenView(ObtainAuthToken):
    @extend_schema(
        operation_id="auth_token_create",
        summary="Exchange a username and password for an API token",
        request=AuthTokenSerializer,
        responses={
            200: OpenApiResponse(description='{"token": "<key>"}: send it as `Authorization: Token <key>`.'),
            400: OpenApiResponse(description="Wrong username or password, or a field missing."),
            429: OpenApiResponse(
                description="Too many failed logins from this IP address or for this username: every login is "
                "refused, the right password included, until the time in `Retry-After` (seconds) has passed."
            ),
        },
        auth=[],
        tags=["auth"],
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return super().post(request, *args, **kwargs)
        except ValidationError:
            # django-axes flags the request it was given (this DRF request)
            # when the attempt was refused or reached the limit.
            if getattr(request, "axes_locked_out", False):
                raise Throttled(wait=retry_after_seconds(request), detail=LOCKED_OUT_MESSAGE) from None
            raise
