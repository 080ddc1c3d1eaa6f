"""Site-wide middleware of crowdlab."""
from __future__ import annotations

from typing import Any

from csp.constants import HEADER
from csp.middleware import CheckableLazyObject, CSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase

# What a response or request carries when a view or template asked for a
# policy of its own (django-csp's decorators, a nonce): then django-csp decides.
_PER_RESPONSE = ("_csp_config", "_csp_update", "_csp_replace", "_csp_exempt", "_csp_config_ro",
                 "_csp_update_ro", "_csp_replace_ro", "_csp_exempt_ro")


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
