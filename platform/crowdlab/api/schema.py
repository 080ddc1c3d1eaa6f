"""The OpenAPI schema generator: drf-spectacular plus the error answers every
operation can give.

Why: the schema must list every status code the API really answers
(schemathesis' ``status_code_conformance``), and those codes follow from how a
view is built rather than from what it does: an operation that needs a login
can answer 401, one with path ids 404, one that reads a body or query
parameters 400 (malformed JSON, JSON nested deeper than ``JSON_MAX_DEPTH``,
an invalid filter), one with a body 413 and 415, one behind a role check (or an unsafe
method behind session authentication and its CSRF check) 403. Declaring them by
hand on each view drifted (39 undocumented codes); here they are derived once,
and a view's own declaration of a code always wins.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated


class ErrorDetailSerializer(serializers.Serializer):
    """The body of DRF's errors that concern the request as a whole."""

    detail = serializers.CharField(help_text="What went wrong, in words.")


class ValidationErrorSerializer(serializers.Serializer):
    """A 400: each invalid field's name maps to its messages (which name the allowed
    values or the limit); ``non_field_errors`` for rules across fields; ``detail``
    when the body as a whole is unreadable (malformed JSON, not UTF-8, or nested
    deeper than ``JSON_MAX_DEPTH``)."""

    detail = serializers.CharField(required=False)
    non_field_errors = serializers.ListField(child=serializers.CharField(), required=False)


_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


class AutoSchema(SpectacularAutoSchema):
    """``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]``: adds the implicit error responses."""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses = operation["responses"]
        for code, response in self._implicit_errors(operation).items():
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(response, str(code))
        return operation

    def _implicit_errors(self, operation: dict[str, Any]) -> dict[int, OpenApiResponse]:
        errors: dict[int, OpenApiResponse] = {}
        view = self.view
        permissions = [type(permission) for permission in view.get_permissions()]
        authenticators = [type(authenticator) for authenticator in view.get_authenticators()]
        needs_login = bool(permissions) and not all(issubclass(p, AllowAny) for p in permissions)
        has_query = any(parameter.get("in") == "query" for parameter in operation.get("parameters", []))
        if "requestBody" in operation or has_query:
            errors[400] = OpenApiResponse(
                ValidationErrorSerializer,
                description="Invalid input: the body names each field and the allowed values or limit; "
                "`detail` for a body that is not JSON, not UTF-8 or nested too deeply.",
            )
        if needs_login and authenticators:
            errors[401] = OpenApiResponse(ErrorDetailSerializer, description="Not authenticated (or an invalid token).")
        role_checked = any(not issubclass(p, (AllowAny, IsAuthenticated)) for p in permissions)
        csrf_checked = self.method in _UNSAFE and any(issubclass(a, SessionAuthentication) for a in authenticators)
        if role_checked or csrf_checked:
            errors[403] = OpenApiResponse(
                ErrorDetailSerializer,
                description="Authenticated but not allowed (e.g. an annotator asking for owner data), "
                "or a session request without its CSRF token.",
            )
        if "{" in self.path:
            errors[404] = OpenApiResponse(
                ErrorDetailSerializer, description="No such object, or no relation to the project (ids do not leak)."
            )
        if "requestBody" in operation:
            errors[413] = OpenApiResponse(
                ErrorDetailSerializer, description="A body larger than DATA_UPLOAD_MAX_MEMORY_SIZE (default 200 MiB)."
            )
            errors[415] = OpenApiResponse(
                ErrorDetailSerializer, description="A body in a media type this operation does not read."
            )
        return errors
