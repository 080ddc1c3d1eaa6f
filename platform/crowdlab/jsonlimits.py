"""Bounded JSON decoding for everything that reads JSON from users.

Why: Python's ``json`` module recurses once per level of nesting. 100,000
nested brackets exhaust the interpreter's stack inside ``json.loads``
(``RecursionError``, a 500), and a document of ~900 levels decodes but then
breaks any code that walks it, serialises it or stores it. So the nesting depth
is checked on the raw text *before* decoding, and without recursion: escaped
quotes are dropped, ``bytes.translate`` keeps only quotes and brackets, the
quoted runs (string literals, whose brackets do not nest) go, and the running
depth is a C-level ``accumulate`` over ±1 steps, chunk by chunk so that a
hostile document is refused after its first deep chunk. Every pass runs in C.
Typical bodies never get that far: a document with at most ``limit`` opening
brackets cannot nest deeper than ``limit``.

The limit is ``settings.JSON_MAX_DEPTH`` (environment variable of the same
name) and applies to every JSON document a user sends: request bodies (the DRF
parser, the annotator fast path, the web UI's fetch calls), JSON and JSONL
uploads, and JSON cells of CSV uploads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from itertools import accumulate
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput

# Escaped quotes and backslashes are dropped first (so every remaining quote
# opens or closes a string); then every byte but quotes and brackets; then the
# quoted runs (whose brackets do not nest).
_QUOTE_ESCAPE = re.compile(rb'\\["\\]')
_QUOTED = re.compile(rb'"[^"]*"')
_KEEP_QUOTES_AND_BRACKETS = bytes(byte for byte in range(256) if byte not in b'"[]{}')
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
# Used only to locate an error: strings, brackets and the commas that separate
# the elements of the top-level array (to name the row of an upload).
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.DOTALL)
_CHUNK = 1 << 16


def max_depth() -> int:
    return int(settings.JSON_MAX_DEPTH)


class JSONTooDeep(ValueError):
    """A JSON document nests arrays/objects deeper than the limit.

    ``line`` and ``column`` (1-based) point at the bracket that crossed the
    limit; ``index`` is the 0-based position of the top-level array element
    that holds it (None when the document is not an array), so an upload can
    name its row.
    """

    def __init__(self, *, limit: int, line: int, column: int, index: int | None) -> None:
        self.limit = limit
        self.line = line
        self.column = column
        self.index = index
        super().__init__(
            f"JSON nested more than {limit} levels deep (line {line}, column {column}); "
            f"at most {limit} levels of arrays and objects are allowed (JSON_MAX_DEPTH)."
        )


def _brackets(document: str | bytes) -> bytes:
    """The brackets of ``document`` outside string literals, in order.

    Every pass runs in C, and all but the first two over a much shorter text."""
    data = document.encode("utf-8", "surrogatepass") if isinstance(document, str) else document
    if b"\\" in data:
        data = _QUOTE_ESCAPE.sub(b"", data)
    # Dropping two adjacent quotes never changes what is outside strings (they
    # were an empty string or an empty gap between two), and after the
    # translate most strings are just that: the regex is left the few strings
    # that hold brackets.
    short = data.translate(None, _KEEP_QUOTES_AND_BRACKETS).replace(b'""', b"")
    if b'"' in short:
        # A quote left unpaired (invalid JSON) goes too: only brackets remain.
        short = _QUOTED.sub(b"", short).replace(b'"', b"")
    return short


def depth_exceeds(document: str | bytes, limit: int) -> bool:
    """True when ``document`` nests arrays/objects more than ``limit`` levels deep.

    Exact for valid JSON. For invalid JSON it may err either way, but never
    below the depth a decoder reaches before failing: that prefix is valid, and
    it is measured exactly.
    """
    if isinstance(document, bytes):
        if document.count(b"[") + document.count(b"{") <= limit:
            return False
    elif document.count("[") + document.count("{") <= limit:
        return False
    brackets = _brackets(document)
    depth = 0
    for start in range(0, len(brackets), _CHUNK):
        levels = list(accumulate(map(_STEP.__getitem__, brackets[start : start + _CHUNK]), initial=depth))
        if max(levels) > limit:
            return True
        depth = levels[-1]
    return False


def _locate(text: str, limit: int) -> JSONTooDeep:
    """The error for a document known to be too deep, pointing at where (error path only)."""
    depth = 0
    index: int | None = None
    top_is_array = False
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in {"[", "{"}:
            if depth == 0:
                top_is_array = token == "["
                index = 0 if top_is_array else None
            depth += 1
            if depth > limit:
                position = match.start()
                line = text.count("\n", 0, position) + 1
                column = position - (text.rfind("\n", 0, position) + 1) + 1
                return JSONTooDeep(limit=limit, line=line, column=column, index=index)
        elif token in {"]", "}"}:
            depth -= 1
        elif token == "," and depth == 1 and top_is_array and index is not None:
            index += 1
    return JSONTooDeep(limit=limit, line=1, column=1, index=None)  # unbalanced text; not reached for JSON


def check_depth(document: str | bytes, *, limit: int | None = None) -> None:
    """Raise ``JSONTooDeep`` when ``document`` nests deeper than the limit."""
    limit = max_depth() if limit is None else limit
    if depth_exceeds(document, limit):
        text = document.decode("utf-8", "replace") if isinstance(document, bytes) else document
        raise _locate(text, limit)


def reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (and PostgreSQL's jsonb) do not.
    raise ValueError(f"{name} is not a JSON value; use null or a number.")


# One decoder: ``json.loads(..., parse_constant=...)`` builds a new one per call.
_STRICT_DECODER = json.JSONDecoder(parse_constant=reject_constant)


def loads(
    document: str | bytes,
    *,
    limit: int | None = None,
    parse_constant: Callable[[str], Any] | None = reject_constant,
) -> Any:
    """``json.loads`` that refuses documents nested deeper than the limit first.

    NaN and Infinity are refused by default (they are not JSON). Raises
    ``JSONTooDeep`` (a ``ValueError``), ``json.JSONDecodeError`` or
    ``UnicodeDecodeError`` (bytes that are not UTF-8): every failure is a
    ``ValueError``, never a ``RecursionError``.
    """
    if isinstance(document, (bytes, bytearray)):
        document = bytes(document).decode("utf-8")
    check_depth(document, limit=limit)
    if parse_constant is reject_constant:
        return _STRICT_DECODER.decode(document)
    return json.loads(document, parse_constant=parse_constant)


def nesting_exceeds(value: Any, limit: int) -> bool:
    """True when an already-decoded value nests lists/dicts more than ``limit`` deep.

    Iterative (an explicit stack), for values that did not come through
    ``loads``, e.g. rows handed to a service by Python code.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(current, dict):
            children = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


class JSONFormField(forms.JSONField):
    """Django's form ``JSONField`` (the admin's JSON fields) with the depth
    checked before decoding: its ``json.loads`` recursed into a 500 for deep
    input, both when cleaning and when re-rendering the form."""

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and not self.disabled:
            try:
                check_depth(value)
            except JSONTooDeep as error:
                raise ValidationError(str(error), code="invalid") from None
        return super().to_python(value)

    def bound_data(self, data: Any, initial: Any) -> Any:
        if isinstance(data, str) and not self.disabled and depth_exceeds(data, max_depth()):
            return InvalidJSONInput(data)
        return super().bound_data(data, initial)


def admin_formfield_overrides() -> dict[Any, dict[str, Any]]:
    """``ModelAdmin.formfield_overrides`` for models with JSON fields."""
    from django.db import models

    return {models.JSONField: {"form_class": JSONFormField}}
