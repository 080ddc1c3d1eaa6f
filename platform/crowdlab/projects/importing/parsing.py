"""Upload bytes to rows: CSV, a JSON array or JSONL, in UTF-8, depth-limited.

Parsing never rejects a *row*: a line that does not parse becomes an
``Unparseable`` row that validation reports with its number, so one upload
gives every error at once. Only what spoils the whole upload (an unreadable
CSV, UTF-16 text, a malformed JSON array) raises ``ImportValidationError``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import IO, Any, Literal

from django.core.files.uploadedfile import UploadedFile

from crowdlab import jsonlimits

from .errors import ImportValidationError, RowError

ImportFormat = Literal["json", "jsonl", "csv"]
IMPORT_FORMATS: tuple[str, ...] = ("json", "jsonl", "csv")
# The csv module refuses fields over 128 KiB ("field larger than field limit"),
# far below ITEM_TEXT_MAX_LENGTH: a long text in CSV must meet the same
# field-named limit as in JSON. The request body limit bounds the memory.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))


# Undecodable bytes are decoded as lone surrogates (U+DC80..U+DCFF, Python's
# "surrogateescape") instead of failing the whole read: each row is then checked
# and a bad byte is reported with its row and column, like any other row error.
_ENCODING_ERRORS = "surrogateescape"
_UTF16_32_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def _refuse_other_unicode(head: bytes) -> None:
    """UTF-16/32 text (e.g. Excel's "Unicode text") decodes to garbage in every row: say so once."""
    for bom, name in _UTF16_32_BOMS:
        if head.startswith(bom):
            raise ImportValidationError(
                [
                    RowError(
                        None,
                        None,
                        f"the upload is {name} text (it starts with a {name} byte-order mark); "
                        "save it as UTF-8 and upload it again.",
                    )
                ]
            )


def text_stream(stream: IO[bytes] | IO[str] | bytes | str) -> IO[str]:
    """A text stream over bytes, str or a binary/text file (UTF-8, BOM tolerated).

    Bytes that are not UTF-8 come through as lone surrogates; ``unstorable``
    finds them in the row that holds them."""
    if isinstance(stream, bytes):
        _refuse_other_unicode(stream[:4])
        return io.StringIO(stream.decode("utf-8-sig", _ENCODING_ERRORS), newline="")
    if isinstance(stream, str):
        return io.StringIO(stream, newline="")
    if isinstance(stream, io.TextIOBase):
        return stream
    raw: Any = stream.file if isinstance(stream, UploadedFile) else stream
    if isinstance(stream, UploadedFile) or raw.seekable():
        raw.seek(0)
        _refuse_other_unicode(raw.read(4))
        raw.seek(0)
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors=_ENCODING_ERRORS, newline="")


def _read_all(stream: IO[bytes] | IO[str] | bytes | str) -> str:
    return text_stream(stream).read()


def unstorable(value: Any) -> str | None:
    """What in ``value`` (a string, or lists/dicts of them) PostgreSQL cannot store, in words; else None.

    A NUL character, or a lone surrogate: either a byte of the upload that is
    not UTF-8 (see ``text_stream``) or a ``\\udXXX`` JSON escape. Iterative:
    user data is never walked by recursion."""
    if type(value) is str:
        if value.isascii() and "\x00" not in value:
            return None  # the common case, without the walk's setup
    elif not isinstance(value, (dict, list)):
        return None  # numbers, booleans, null
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            # Undecodable bytes first: they say more about a broken upload than a NUL does.
            if not current.isascii():
                try:
                    current.encode("utf-8")
                except UnicodeEncodeError as error:
                    code = ord(current[error.start])
                    if 0xDC80 <= code <= 0xDCFF:
                        return (
                            f"byte 0x{code - 0xDC00:02X}, which is not UTF-8 text; "
                            "save the upload as UTF-8 (not Latin-1, Windows-1252 or UTF-16)"
                        )
                    return f"a lone surrogate (\\u{code:04x}), which cannot be stored"
            if "\x00" in current:
                return "a NUL character (\\u0000), which cannot be stored"
        elif isinstance(current, dict):
            stack.extend(current.keys())
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return None


def header_error(position: int, problem: str) -> ImportValidationError:
    # NULs between the letters of a header are the mark of UTF-16 without a byte-order mark.
    hint = "; is the file UTF-16? save it as UTF-8" if problem.startswith("a NUL") else ""
    return ImportValidationError(
        [RowError(None, None, f"the CSV header (column {position}) contains {problem}{hint}.")]
    )


def _too_deep_row_error(error: jsonlimits.JSONTooDeep, *, array: bool) -> RowError:
    """A depth error of a JSON array upload, on the row (array element) that holds it."""
    row = error.index + 1 if array and error.index is not None else None
    return RowError(row, None, str(error))


def parse_upload(stream: IO[bytes] | IO[str] | bytes | str, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row_number, raw_row)`` from a JSON array, JSONL or CSV upload."""
    if fmt not in IMPORT_FORMATS:
        raise ImportValidationError(
            [RowError(None, "format", f"unknown format {fmt!r}; allowed: {', '.join(IMPORT_FORMATS)}.")]
        )
    if fmt == "csv":
        yield from _parse_csv(stream)
        return
    text = _read_all(stream)
    if fmt == "json":
        try:
            rows = jsonlimits.loads(text)
        except jsonlimits.JSONTooDeep as exc:
            raise ImportValidationError([_too_deep_row_error(exc, array=text.lstrip().startswith("["))]) from None
        except json.JSONDecodeError as exc:
            raise ImportValidationError(
                [RowError(None, None, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}.")]
            ) from None
        except ValueError as exc:
            raise ImportValidationError([RowError(None, None, f"invalid JSON: {exc}")]) from None
        if not isinstance(rows, list):
            raise ImportValidationError([RowError(None, None, "a JSON upload must be an array of item objects.")])
        yield from enumerate(rows, start=1)
        return
    number = 0
    # JSONL lines end at "\n" (or "\r\n") only: str.splitlines also splits at
    # U+2028, U+2029 and U+0085, which JSON strings may hold unescaped.
    for raw_line in text.split("\n"):
        line = raw_line.removesuffix("\r")
        if not line.strip():
            continue
        number += 1
        problem = unstorable(line)
        if problem is not None and "\x00" not in line:
            # Undecodable bytes, before any JSON: a NUL is left to the JSON decoder's wording.
            yield number, Unparseable(f"contains {problem}.")
            continue
        try:
            yield number, jsonlimits.loads(line)
        except json.JSONDecodeError as exc:
            yield number, Unparseable(f"invalid JSON (column {exc.colno}): {exc.msg}.")
        except ValueError as exc:  # too deep, NaN/Infinity
            yield number, Unparseable(f"invalid JSON: {exc}")


class Unparseable(dict):
    """A JSONL line that did not parse; validation reports it as a row error."""

    def __init__(self, message: str, field_name: str | None = None) -> None:
        super().__init__()
        self.message = message
        self.field_name = field_name


def _parse_csv(stream: IO[bytes] | IO[str] | bytes | str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(text_stream(stream))
    try:
        header = next(reader, None)
        if header is None:
            raise ImportValidationError(
                [RowError(None, None, "the CSV upload is empty; the first line is the header.")]
            )
        header = [name.strip() for name in header]
        for position, name in enumerate(header, start=1):
            problem = unstorable(name)
            if problem is not None:
                raise header_error(position, problem)
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated:
            raise ImportValidationError(
                [RowError(None, None, f"the CSV header repeats column(s) {', '.join(duplicated)}.")]
            )
        width = len(header)
        for number, values in enumerate(reader, start=1):
            if not values:
                continue
            if len(values) != width:
                yield number, Unparseable(f"has {len(values)} columns; the header has {width}.")
                continue
            yield number, CsvRow(zip(header, values, strict=True))
    except csv.Error as exc:
        raise ImportValidationError([RowError(None, None, f"unreadable CSV: {exc}.")]) from None


class CsvRow(dict):
    """A CSV row: every value is a string and empty cells mean "absent"."""
