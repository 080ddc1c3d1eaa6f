"""Site-wide views that belong to no app: the 404 and 500 handlers."""

from __future__ import annotations

import logging
import sys

from django.http import HttpRequest, HttpResponse, HttpResponseServerError, JsonResponse
from django.template import loader
from django.views.defaults import page_not_found

from .middleware import DATABASE_ERRORS, unavailable_response, wants_json

logger = logging.getLogger(__name__)

SERVER_ERROR_DETAIL = (
    "Internal server error. It has been logged; try again in a moment, and tell the site's administrators "
    "if it keeps happening."
)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler404`` for a URL nothing matches: JSON under /api/ (clients and the
    OpenAPI schema expect ``{"detail": ...}``, e.g. for a non-numeric id), the page elsewhere."""
    if request.path_info.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: JSON for API clients and ``fetch`` calls, the styled page for people.

    Like Django's own handler it renders without a RequestContext: whatever
    broke the request (the database, a context processor) must not break the
    error page too. ``500.html`` therefore needs no context. A lost database connection
    raised outside a view is a 503 with ``Retry-After`` (see ``crowdlab.middleware``).
    """
    exc = sys.exc_info()[1]
    if isinstance(exc, DATABASE_ERRORS):
        return unavailable_response(request, exc)
    if wants_json(request):
        return JsonResponse({"detail": SERVER_ERROR_DETAIL, "error": SERVER_ERROR_DETAIL}, status=500)
    try:
        body = loader.get_template("500.html").render()
    except Exception:
        logger.exception("could not render 500.html")
        return HttpResponseServerError("<h1>Server Error (500)</h1>", content_type="text/html")
    return HttpResponseServerError(body, content_type="text/html")
