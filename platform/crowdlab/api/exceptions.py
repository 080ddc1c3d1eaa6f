"""Errors of the API that DRF does not word itself.

Django raises ``RequestDataTooBig`` (a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``)
and ``TooManyFieldsSent`` / ``TooManyFilesSent`` while DRF reads a body; DRF
does not know them, so they reached Django's handler and came back as an HTML
"Bad Request" page. ``exception_handler`` (``REST_FRAMEWORK["EXCEPTION_HANDLER"]``)
answers them in JSON like every other API error: 413 and 400.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"

    def __init__(self) -> None:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        super().__init__(
            f"The request body is larger than {limit:,} bytes, the limit (DATA_UPLOAD_MAX_MEMORY_SIZE); "
            "split the upload."
        )


def translate(exc: Exception) -> Exception:
    """Django's body-reading errors as the API exceptions they amount to."""
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLarge()
    if isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        return ParseError(f"{exc} (DATA_UPLOAD_MAX_NUMBER_FIELDS / DATA_UPLOAD_MAX_NUMBER_FILES).")
    return exc


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    return drf_exception_handler(translate(exc), context)
