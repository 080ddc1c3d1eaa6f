"""What the API's views by resource share: the documented error answers and
the translation of service errors into DRF's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request

ERRORS = {
    400: OpenApiResponse(description="Invalid input; the body names the field and the allowed values."),
    401: OpenApiResponse(description="Not authenticated."),
    403: OpenApiResponse(description="Authenticated but not allowed (e.g. a member asking for owner data)."),
    404: OpenApiResponse(description="No such object, or no relation to the project (ids do not leak)."),
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: ERRORS[code] for code in codes}


@contextmanager
def service_errors() -> Iterator[None]:
    """Turn Django ``ValidationError`` from services into DRF 400 responses."""
    try:
        yield
    except DjangoValidationError as error:
        detail: Any = error.message_dict if hasattr(error, "error_dict") else error.messages
        raise ValidationError(detail) from None


class JSONErrorsMixin:
    """Errors are always JSON, whatever the client's Accept header (a CSV
    download client sends Accept: text/csv); successful exports bypass
    renderers with a StreamingHttpResponse."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[Any, str]:
        renderer = JSONRenderer()
        return renderer, renderer.media_type
