"""``POST /api/auth/token/``: DRF's token view, with the login limits and bounded input.

django-axes counts failed logins per IP address and per username (see
``crowdlab.lockout``). DRF hands ``authenticate()`` its own request object, so
django-axes' middleware never sees a lockout here; this view turns it into
DRF's 429 with ``Retry-After``. Annotators call it once to get a token; the
hot paths that use the token (``api/hot.py``) are never limited.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.parsers import FormParser
from rest_framework.request import Request
from rest_framework.response import Response

from crowdlab.lockout import LOCKED_OUT_MESSAGE, retry_after_seconds

from ..parsers import JSONParser
from ..schema import ValidationErrorSerializer
from ..serializers import StrictJSONMixin


class TokenRequestSerializer(StrictJSONMixin, AuthTokenSerializer):
    """DRF's credentials check, with JSON types enforced and lengths documented."""

    username = serializers.CharField(max_length=150, write_only=True)
    password = serializers.CharField(
        max_length=4096, write_only=True, trim_whitespace=False, style={"input_type": "password"}
    )


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send it as `Authorization: Token <token>`.")


class TokenView(ObtainAuthToken):
    """DRF's token view, reading JSON through the project's depth-limited parser
    (DRF's own view hard-codes DRF's JSON parser, whose recursion made 100,000
    nested brackets a 500 for anyone) and plain form posts. The credentials are
    in the body, so no authentication runs: a stale token header is no error."""

    parser_classes = [JSONParser, FormParser]
    authentication_classes: list[Any] = []
    serializer_class = TokenRequestSerializer

    @extend_schema(
        operation_id="auth_token_create",
        summary="Exchange a username and password for an API token",
        request={
            "application/json": TokenRequestSerializer,
            "application/x-www-form-urlencoded": TokenRequestSerializer,
        },
        responses={
            200: TokenSerializer,
            400: OpenApiResponse(
                ValidationErrorSerializer, description="Missing fields or wrong credentials (`non_field_errors`)."
            ),
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
