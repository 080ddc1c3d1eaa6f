"""Pagination shared by every list endpoint."""

from __future__ import annotations

import re
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

_DIGITS = re.compile(r"[0-9]+")


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """``?limit=&offset=`` with a ceiling: an unbounded ``limit`` reaches SQL as a
    LIMIT past bigint (500) and lets one request pull a whole table, so a larger
    ``limit`` is capped at ``max_limit``. A value that is not a number is a 400
    naming the parameter (DRF silently fell back to the defaults, so a typo read
    the wrong page)."""

    default_limit = 100
    max_limit = 1000

    def _integer(self, request: Request, name: str, *, minimum: int, default: int, cap: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        if not _DIGITS.fullmatch(raw):
            raise ValidationError({name: [f"must be an integer ≥ {minimum}, got {raw[:40]!r}."]})
        # Past 18 digits the value is beyond any cap (and int() of thousands of digits raises).
        value = cap if len(raw) > 18 else min(int(raw), cap)
        if value < minimum:
            raise ValidationError({name: [f"must be an integer ≥ {minimum}, got {raw[:40]!r}."]})
        return value

    def get_limit(self, request: Request) -> int:
        return self._integer(request, self.limit_query_param, minimum=1, default=self.default_limit, cap=self.max_limit)

    def get_offset(self, request: Request) -> int:
        # Capped below bigint: a larger OFFSET is a PostgreSQL error (a 500), not an empty page.
        return self._integer(request, self.offset_query_param, minimum=0, default=0, cap=2**62)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] = (
                    f"Rows per page (default {self.default_limit}; larger values are capped at {self.max_limit})."
                )
            elif parameter["name"] == self.offset_query_param:
                parameter["schema"]["minimum"] = 0
        return parameters
