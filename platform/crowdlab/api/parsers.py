"""Request-body parsers of the API.

``JSONParser`` replaces DRF's everywhere (``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]``
and the views that list parsers): DRF's hands the body straight to ``json.load``,
which recurses per level of nesting, so 100,000 nested brackets were a
``RecursionError`` and a 500 on any endpoint, anonymous ``POST /api/auth/token/``
included. This one checks the depth first (``crowdlab.jsonlimits``) and answers
400 naming the limit. The raw parsers hand CSV/JSONL bodies to the import
services as bytes; those decode them and report encoding problems by row.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from crowdlab import jsonlimits

from .exceptions import RequestTooLarge


def read_body(stream: Any) -> bytes:
    """The request body, at most ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes of it.

    Django enforces that limit only on ``request.body`` (which DRF reads for
    JSON, see ``api.exceptions``); the raw CSV/JSONL parsers read the stream,
    so a body of any size was read whole."""
    if stream is None:
        return b""
    # Django documents None as "no limit"; crowdlab's settings always give an int,
    # but a deployment's own settings module may not, so None stays handled.
    limit: int | None = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is None:
        whole: bytes = stream.read()
        return whole
    body: bytes = stream.read(limit + 1)
    if len(body) > limit:
        raise RequestTooLarge()
    return body


class JSONTooDeepError(ParseError):
    """A 400 for a JSON body nested deeper than ``JSON_MAX_DEPTH``; ``too_deep``
    says where (an import names the row from it)."""

    def __init__(self, too_deep: jsonlimits.JSONTooDeep) -> None:
        self.too_deep = too_deep
        super().__init__(f"JSON parse error - {too_deep}")


def describe_undecodable(error: UnicodeDecodeError, encoding: str) -> str:
    """``byte 0xE9 at position 12 is not valid UTF-8`` (what and where, not Python's wording)."""
    bad = error.object[error.start : error.start + 1]
    return f"byte 0x{bad.hex().upper()} at position {error.start} is not valid {encoding} ({error.reason})"


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with the nesting depth checked before decoding."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding") or settings.DEFAULT_CHARSET
        raw = read_body(stream)
        try:
            text = raw.decode(encoding)
        except LookupError:
            raise ParseError(f"JSON parse error - unknown charset {encoding!r}; send UTF-8.") from None
        except UnicodeDecodeError as error:
            raise ParseError(
                f"JSON parse error - the body is not {encoding} text: {describe_undecodable(error, encoding)}."
            ) from None
        try:
            return jsonlimits.loads(text, parse_constant=jsonlimits.reject_constant if self.strict else None)
        except jsonlimits.JSONTooDeep as error:
            raise JSONTooDeepError(error) from None
        except ValueError as error:
            raise ParseError(f"JSON parse error - {error}") from None


class _RawParser(parsers.BaseParser):
    """Hands the raw request body (bytes) to the view; the service parses it."""

    # DRF hands whatever a parser returns to the view as request.data; the stub's
    # return type (Mapping | DataAndFiles) covers only DRF's own parsers.
    def parse(  # type: ignore[override]
        self, stream: Any, media_type: str | None = None, parser_context: Any = None
    ) -> bytes:
        return read_body(stream)


class CSVParser(_RawParser):
    media_type = "text/csv"


class JSONLinesParser(_RawParser):
    media_type = "application/jsonl"


class NDJSONParser(_RawParser):
    media_type = "application/x-ndjson"


class JSONLinesTextParser(_RawParser):
    media_type = "application/jsonlines"
