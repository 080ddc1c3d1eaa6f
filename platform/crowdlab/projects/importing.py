"""Bulk import of items and of existing crowd labels.

Both imports are all-or-nothing: every row is validated first (with a handful
of set-based queries, never one per row), and only a clean upload is written,
in one transaction. A rejected upload raises ``ImportValidationError`` whose
``as_dict()`` is the 400 body: row numbers and reasons naming the field and
the allowed values, capped at ``MAX_REPORTED_ERRORS`` plus the total count.

Row numbers are 1-based and count *data rows* only: a CSV header line is not a
row, the first element of a JSON array is row 1, and blank JSONL lines are
skipped without being counted.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.core.validators import URLValidator
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from crowdlab import jsonlimits

from crowdlab.labelling import hooks
from crowdlab.labelling.models import Annotation, AnnotationSource

from .images import ALLOWED_IMAGE_LABELS, ImageRejected, image_type_of
from .models import Item, ItemKind, Membership, Project

MAX_ITEMS_PER_REQUEST = 100_000
MAX_REPORTED_ERRORS = 100
BATCH_SIZE = 5_000

ImportFormat = Literal["json", "jsonl", "csv"]
IMPORT_FORMATS: tuple[str, ...] = ("json", "jsonl", "csv")
ROW_NUMBERS_NOTE = (
    "Row numbers are 1-based and count data rows only (a CSV header is not a row; blank JSONL lines are skipped)."
)

# Accepted spellings of each item field; the first is the canonical one.
_ID_KEYS = ("external_id", "id", "item")
_IMAGE_KEYS = ("image_url",)
_AUDIO_KEYS = ("audio_url",)
_KNOWN_JSON_KEYS = frozenset(
    {"external_id", "id", "item", "text", "image_url", "url", "audio_url", "data", "features", "gold", "kind"}
)
_FEATURE_COLUMN = re.compile(r"^f(\d+)$")
_AUDIO_SUFFIXES = (".mp3", ".wav", ".ogg", ".oga", ".flac", ".m4a", ".aac", ".opus", ".webm")
_USERNAME_CHARS = re.compile(r"^[\w.@+-]+\Z")
# The csv module refuses fields over 128 KiB ("field larger than field limit"),
# far below ITEM_TEXT_MAX_LENGTH: a long text in CSV must meet the same
# field-named limit as in JSON. The request body limit bounds the memory.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
_url_validator = URLValidator(schemes=["http", "https"])


# --------------------------------------------------------------------------- errors and results


@dataclass(frozen=True)
class RowError:
    row: int | None  # None: the upload as a whole (unreadable file, too many rows)
    field: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "message": self.message}


class ImportValidationError(ValueError):
    """The upload was rejected as a whole; nothing was written."""

    def __init__(self, errors: list[RowError], *, total: int | None = None) -> None:
        self.errors = errors[:MAX_REPORTED_ERRORS]
        self.total = total if total is not None else len(errors)
        super().__init__(self.summary())

    def summary(self) -> str:
        rows = {error.row for error in self.errors if error.row is not None}
        if rows:
            return f"Nothing was imported: {self.total} error(s) in the upload. {ROW_NUMBERS_NOTE}"
        return f"Nothing was imported: {self.errors[0].message if self.errors else 'the upload is invalid.'}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "detail": self.summary(),
            "error_count": self.total,
            "errors": [error.as_dict() for error in self.errors],
            "errors_truncated": self.total > len(self.errors),
        }


class _ErrorCollector:
    """Keeps the first errors and counts all of them."""

    def __init__(self) -> None:
        self.errors: list[RowError] = []
        self.total = 0

    def add(self, row: int | None, field_name: str | None, message: str) -> None:
        self.total += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(RowError(row, field_name, message))

    def raise_if_any(self) -> None:
        if self.total:
            raise ImportValidationError(self.errors, total=self.total)


@dataclass
class ImportResult:
    created: int
    kinds: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"created": self.created, "kinds": self.kinds}


@dataclass
class CrowdImportResult:
    annotations_created: int
    duplicates_skipped: int
    items_created: int
    annotators_created: int
    members_added: int
    annotator_usernames: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "annotations_created": self.annotations_created,
            "duplicates_skipped": self.duplicates_skipped,
            "items_created": self.items_created,
            "annotators_created": self.annotators_created,
            "members_added": self.members_added,
        }


# --------------------------------------------------------------------------- reading uploads


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
                [RowError(None, None, f"the upload is {name} text (it starts with a {name} byte-order mark); "
                                      "save it as UTF-8 and upload it again.")]
            )


def _text_stream(stream: IO[bytes] | IO[str] | bytes | str) -> IO[str]:
    """A text stream over bytes, str or a binary/text file (UTF-8, BOM tolerated).

    Bytes that are not UTF-8 come through as lone surrogates; ``_unstorable``
    finds them in the row that holds them."""
    if isinstance(stream, bytes):
        _refuse_other_unicode(stream[:4])
        return io.StringIO(stream.decode("utf-8-sig", _ENCODING_ERRORS), newline="")
    if isinstance(stream, str):
        return io.StringIO(stream, newline="")
    if isinstance(stream, io.TextIOBase):
        return stream  # type: ignore[return-value]
    raw: Any = stream.file if isinstance(stream, UploadedFile) else stream
    if isinstance(stream, UploadedFile) or raw.seekable():
        raw.seek(0)
        _refuse_other_unicode(raw.read(4))
        raw.seek(0)
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors=_ENCODING_ERRORS, newline="")


def _read_all(stream: IO[bytes] | IO[str] | bytes | str) -> str:
    return _text_stream(stream).read()


def _unstorable(value: Any) -> str | None:
    """What in ``value`` (a string, or lists/dicts of them) PostgreSQL cannot store, in words; else None.

    A NUL character, or a lone surrogate: either a byte of the upload that is
    not UTF-8 (see ``_text_stream``) or a ``\\udXXX`` JSON escape. Iterative:
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
                        return (f"byte 0x{code - 0xDC00:02X}, which is not UTF-8 text; "
                                "save the upload as UTF-8 (not Latin-1, Windows-1252 or UTF-16)")
                    return f"a lone surrogate (\\u{code:04x}), which cannot be stored"
            if "\x00" in current:
                return "a NUL character (\\u0000), which cannot be stored"
        elif isinstance(current, dict):
            stack.extend(current.keys())
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return None


def _header_error(position: int, problem: str) -> ImportValidationError:
    # NULs between the letters of a header are the mark of UTF-16 without a byte-order mark.
    hint = "; is the file UTF-16? save it as UTF-8" if problem.startswith("a NUL") else ""
    return ImportValidationError([RowError(None, None, f"the CSV header (column {position}) contains {problem}{hint}.")])


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
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        number += 1
        problem = _unstorable(line)
        if problem is not None and "\x00" not in line:
            # Undecodable bytes, before any JSON: a NUL is left to the JSON decoder's wording.
            yield number, _Unparseable(f"contains {problem}.")
            continue
        try:
            yield number, jsonlimits.loads(line)
        except json.JSONDecodeError as exc:
            yield number, _Unparseable(f"invalid JSON (column {exc.colno}): {exc.msg}.")
        except ValueError as exc:  # too deep, NaN/Infinity
            yield number, _Unparseable(f"invalid JSON: {exc}")


class _Unparseable(dict):
    """A JSONL line that did not parse; validation reports it as a row error."""

    def __init__(self, message: str, field_name: str | None = None) -> None:
        super().__init__()
        self.message = message
        self.field_name = field_name


def _parse_csv(stream: IO[bytes] | IO[str] | bytes | str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(_text_stream(stream))
    try:
        header = next(reader, None)
        if header is None:
            raise ImportValidationError([RowError(None, None, "the CSV upload is empty; the first line is the header.")])
        header = [name.strip() for name in header]
        for position, name in enumerate(header, start=1):
            problem = _unstorable(name)
            if problem is not None:
                raise _header_error(position, problem)
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
                yield number, _Unparseable(f"has {len(values)} columns; the header has {width}.")
                continue
            yield number, _CsvRow(zip(header, values))
    except csv.Error as exc:
        raise ImportValidationError([RowError(None, None, f"unreadable CSV: {exc}.")]) from None


class _CsvRow(dict):
    """A CSV row: every value is a string and empty cells mean "absent"."""


# --------------------------------------------------------------------------- item validation


@dataclass(frozen=True)
class _Limits:
    """The input limits (settings), read once per import rather than once per row."""

    text: int
    data_bytes: int
    features: int
    depth: int

    @classmethod
    def current(cls) -> _Limits:
        return cls(
            text=settings.ITEM_TEXT_MAX_LENGTH,
            data_bytes=settings.ITEM_DATA_MAX_BYTES,
            features=settings.ITEM_FEATURES_MAX_LENGTH,
            depth=settings.JSON_MAX_DEPTH,
        )


@dataclass
class _ItemContext:
    project: Project
    class_names: frozenset[str]
    allowed_labels: str
    feature_length: int | None
    limits: _Limits = field(default_factory=_Limits.current)
    # Rows decoded here (parse_upload) passed the depth check already; rows
    # handed over as Python objects get their ``data`` walked once.
    depth_checked: bool = False


def _first(row: Mapping[str, Any], keys: Iterable[str]) -> tuple[str | None, Any]:
    for key in keys:
        value = row.get(key)
        if value is not None and value != "":
            return key, value
    return None, None


def _features_too_long(count: int, limit: int) -> str | None:
    if count <= limit:
        return None
    return f"has {count:,} values; at most {limit:,} are allowed (ITEM_FEATURES_MAX_LENGTH)."


def _parse_features(value: Any, *, from_csv: bool, limit: int) -> list[float]:
    if from_csv and isinstance(value, str):
        try:
            value = jsonlimits.loads(value)
        except jsonlimits.JSONTooDeep as exc:
            raise ValueError(str(exc)) from None
        except ValueError:
            raise ValueError("must be a JSON list of numbers, e.g. [0.1, 2, -3.5].") from None
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of numbers.")
    too_long = _features_too_long(len(value), limit)
    if too_long is not None:
        raise ValueError(too_long)
    numbers: list[float] = []
    for position, number in enumerate(value):
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ValueError(f"element {position} is {number!r}; only numbers are allowed.")
        try:
            as_float = float(number)
        except OverflowError:
            raise ValueError(f"element {position} is too large for a float.") from None
        if not math.isfinite(as_float):
            raise ValueError(f"element {position} is not finite.")
        numbers.append(as_float)
    return numbers


def _csv_feature_columns(header: Iterable[str]) -> list[str]:
    columns = sorted(
        (int(match.group(1)), name) for name in header if (match := _FEATURE_COLUMN.match(name)) is not None
    )
    return [name for _, name in columns]


def _validate_item_row(
    number: int, raw: Any, context: _ItemContext, errors: _ErrorCollector, feature_columns: list[str]
) -> dict[str, Any] | None:
    """One upload row as Item field values, or ``None`` after recording errors."""
    if isinstance(raw, _Unparseable):
        errors.add(number, None, raw.message)
        return None
    if not isinstance(raw, dict):
        errors.add(number, None, f"expected an object with item fields, got {type(raw).__name__}.")
        return None
    from_csv = isinstance(raw, _CsvRow)
    before = errors.total
    # PostgreSQL text and jsonb cannot store NUL characters or lone surrogates
    # (which is also how bytes that are not UTF-8 arrive). Features are checked
    # to be numbers below; walking them here would cost a call per value.
    limits = context.limits
    for key, value in raw.items():
        bad_key = None if from_csv else _unstorable(key)  # CSV keys: the header, checked once
        problem = bad_key or (_unstorable(value) if key != "features" else None)
        if problem is not None:
            errors.add(number, None if bad_key else key, f"contains {problem}.")
            return None

    if not from_csv:
        unknown = sorted(set(raw) - _KNOWN_JSON_KEYS)
        if unknown:
            errors.add(
                number,
                unknown[0],
                f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_KNOWN_JSON_KEYS))}"
                " (put anything else under 'data').",
            )

    id_key, external_id = _first(raw, _ID_KEYS)
    if external_id is None:
        errors.add(number, "external_id", "is required (also accepted as 'id' or 'item').")
    elif isinstance(external_id, bool) or not isinstance(external_id, (str, int)):
        errors.add(number, id_key, "must be a string or an integer.")
        external_id = None
    else:
        external_id = str(external_id).strip()
        if not external_id or len(external_id) > 255:
            errors.add(number, id_key, "must be 1–255 characters.")
            external_id = None

    text = raw.get("text") or ""
    if not isinstance(text, str):
        errors.add(number, "text", "must be a string.")
        text = ""
    elif len(text) > limits.text:
        errors.add(
            number,
            "text",
            f"is {len(text):,} characters long; at most {limits.text:,} are allowed (ITEM_TEXT_MAX_LENGTH).",
        )

    url = ""
    url_kind: str | None = None
    _, image_url = _first(raw, _IMAGE_KEYS)
    _, audio_url = _first(raw, _AUDIO_KEYS)
    _, plain_url = _first(raw, ("url",))
    given = [(name, value) for name, value in (("image_url", image_url), ("audio_url", audio_url), ("url", plain_url)) if value is not None]
    if len(given) > 1:
        errors.add(number, given[1][0], f"give only one of image_url, audio_url or url (got {', '.join(n for n, _ in given)}).")
    elif given:
        name, value = given[0]
        if not isinstance(value, str) or len(value) > 2000:
            errors.add(number, name, "must be an http(s) URL of at most 2000 characters.")
        else:
            try:
                _url_validator(value)
            except ValidationError:
                errors.add(number, name, f"{value[:80]!r} is not an http(s) URL.")
            else:
                url = value
                if name == "image_url":
                    url_kind = ItemKind.IMAGE
                elif name == "audio_url":
                    url_kind = ItemKind.AUDIO
                else:
                    path = value.split("?", 1)[0].lower()
                    url_kind = ItemKind.AUDIO if path.endswith(_AUDIO_SUFFIXES) else ItemKind.IMAGE

    data: Any = None
    if from_csv:
        extras = {
            key: value
            for key, value in raw.items()
            if key not in _KNOWN_JSON_KEYS and not _FEATURE_COLUMN.match(key) and value != ""
        }
        raw_data = raw.get("data") or ""
        if raw_data:
            try:
                data = jsonlimits.loads(raw_data)
            except jsonlimits.JSONTooDeep as exc:
                errors.add(number, "data", str(exc))
                data = {}
            except ValueError:
                errors.add(number, "data", "must be a JSON object, e.g. {\"source\": \"web\"}.")
                data = {}
            if not isinstance(data, dict):
                errors.add(number, "data", "must be a JSON object.")
                data = {}
            data = {**extras, **data}
        elif extras:
            data = extras
    else:
        data = raw.get("data")
        if data is not None and not isinstance(data, dict):
            errors.add(number, "data", "must be a JSON object.")
            data = None

    data_json = (
        _data_json(number, data, errors, limits, walk=not (from_csv or context.depth_checked))
        if data is not None
        else None
    )

    features: list[float] | None = None
    if from_csv and feature_columns and _features_too_long(len(feature_columns), limits.features):
        errors.add(
            number, "features", f"{feature_columns[0]}.. columns: {_features_too_long(len(feature_columns), limits.features)}"
        )
    elif from_csv and feature_columns:
        if raw.get("features"):
            errors.add(number, "features", f"give features either as {feature_columns[0]}.. columns or as 'features', not both.")
        else:
            try:
                features = [float(raw[name]) for name in feature_columns]
            except ValueError:
                bad = next(name for name in feature_columns if not _is_float(raw[name]))
                errors.add(number, bad, f"{raw[bad]!r} is not a number.")
            else:
                if not all(math.isfinite(value) for value in features):
                    errors.add(number, "features", "all feature values must be finite.")
                    features = None
    elif raw.get("features") not in (None, ""):
        try:
            features = _parse_features(raw["features"], from_csv=from_csv, limit=limits.features)
        except ValueError as exc:
            errors.add(number, "features", str(exc))
    if features is not None:
        if context.feature_length is None:
            context.feature_length = len(features)
        elif len(features) != context.feature_length:
            errors.add(
                number,
                "features",
                f"has {len(features)} values; this project's feature vectors have {context.feature_length}.",
            )

    gold = raw.get("gold")
    if gold in ("", None):
        gold = None
    elif not isinstance(gold, str) or gold not in context.class_names:
        errors.add(number, "gold", f"{gold!r} is not a class of this project; allowed: {context.allowed_labels}.")
        gold = None

    kind = raw.get("kind") or None
    if kind is not None and kind not in ItemKind.values:
        errors.add(number, "kind", f"{kind!r} is not a kind; allowed: {', '.join(ItemKind.values)}.")
        kind = None
    elif kind is None:
        if url_kind is not None:
            kind = url_kind
        elif text:
            kind = ItemKind.TEXT
        elif data is not None or features is not None:
            kind = ItemKind.JSON
        else:
            errors.add(
                number, None, "has no content; give text, image_url, audio_url, url, data or features."
            )
    elif kind in (ItemKind.IMAGE, ItemKind.AUDIO) and not url:
        errors.add(number, "kind", f"kind {kind!r} needs a URL (image_url or audio_url); upload files one at a time.")
    elif kind == ItemKind.TEXT and not text:
        errors.add(number, "text", "kind 'text' needs a non-empty text.")

    if errors.total != before:
        return None
    return {
        "external_id": external_id,
        "kind": str(kind),
        "text": text,
        "url": url,
        "data": data,
        "data_json": data_json,
        "features": features,
        "gold_label": gold,
    }


def _data_json(number: int, data: Any, errors: _ErrorCollector, limits: _Limits, *, walk: bool = True) -> str | None:
    """``data`` as the JSON text that is stored (serialised once, here), or None after an error.

    ``walk``: check the nesting first (json.dumps recurses), for data that did
    not come through a depth-checked decoder."""
    if walk and jsonlimits.nesting_exceeds(data, limits.depth):
        errors.add(number, "data", f"nests more than {limits.depth} levels of arrays and objects (JSON_MAX_DEPTH).")
        return None
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    except ValueError:
        errors.add(number, "data", "numbers must be finite: NaN, Infinity and overflowing values such as 1e400 are not JSON.")
        return None
    except TypeError as exc:  # Python callers only: JSON bodies hold nothing else
        errors.add(number, "data", f"must hold only JSON values: {exc}.")
        return None
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > limits.data_bytes:
        errors.add(
            number, "data", f"is {size:,} bytes as JSON; at most {limits.data_bytes:,} are allowed (ITEM_DATA_MAX_BYTES)."
        )
        return None
    return text


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _feature_length(project: Project) -> int | None:
    """The length of this project's existing feature vectors, if any."""
    sample = (
        Item.objects.filter(project=project, features__isnull=False).values_list("features", flat=True).first()
    )
    return len(sample) if isinstance(sample, list) else None


def _item_ids_by_external_id(project: Project, candidates: Iterable[str]) -> dict[str, int]:
    """``{external id: item id}`` for those of ``candidates`` already in the project."""
    candidate_list = list(candidates)
    if not candidate_list:
        return {}
    # One array parameter instead of an IN list: no per-value parameter handling.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT external_id, id FROM projects_item WHERE project_id = %s AND external_id = ANY(%s)",
            [project.pk, candidate_list],
        )
        return dict(cursor.fetchall())


def _existing_external_ids(project: Project, candidates: set[str]) -> set[str]:
    """Which of ``candidates`` already exist in the project."""
    return set(_item_ids_by_external_id(project, candidates))


@transaction.atomic
def items_import(
    *,
    project: Project,
    rows: Iterable[Any] | None = None,
    stream: IO[bytes] | IO[str] | bytes | str | None = None,
    fmt: str = "json",
) -> ImportResult:
    """Import up to ``MAX_ITEMS_PER_REQUEST`` items, all or nothing.

    Give either ``rows`` (already parsed objects, e.g. a JSON request body) or
    ``stream`` plus ``fmt`` (``json``, ``jsonl`` or ``csv``).
    """
    if (rows is None) == (stream is None):
        raise ValueError("items_import: give exactly one of rows= or stream=.")
    numbered: Iterable[tuple[int, Any]] = (
        enumerate(rows, start=1) if rows is not None else parse_upload(stream, fmt)  # type: ignore[arg-type]
    )
    class_names = project.class_names
    context = _ItemContext(
        project=project,
        class_names=frozenset(class_names),
        allowed_labels=", ".join(class_names),
        feature_length=_feature_length(project),
        depth_checked=rows is None,
    )
    errors = _ErrorCollector()
    items: list[dict[str, Any]] = []
    first_row_of: dict[str, int] = {}
    row_of_item: list[int] = []
    feature_columns: list[str] | None = None
    count = 0
    for number, raw in numbered:
        count = number
        if number > MAX_ITEMS_PER_REQUEST:
            raise ImportValidationError(
                [RowError(None, None, f"too many rows: at most {MAX_ITEMS_PER_REQUEST} items per request.")]
            )
        if feature_columns is None:
            feature_columns = _csv_feature_columns(raw.keys()) if isinstance(raw, _CsvRow) else []
        item = _validate_item_row(number, raw, context, errors, feature_columns)
        if item is None:
            continue
        external_id = item["external_id"]
        earlier = first_row_of.get(external_id)
        if earlier is not None:
            errors.add(number, "external_id", f"{external_id!r} repeats row {earlier}; external ids are unique.")
            continue
        first_row_of[external_id] = number
        items.append(item)
        row_of_item.append(number)
    if count == 0 and not errors.total:
        raise ImportValidationError([RowError(None, None, "the upload has no rows.")])
    for external_id in sorted(_existing_external_ids(project, set(first_row_of)), key=first_row_of.__getitem__):
        errors.add(
            first_row_of[external_id], "external_id", f"{external_id!r} already exists in this project."
        )
    errors.raise_if_any()
    _insert_items(project=project, items=items, conflict_field="external_id")
    kinds: dict[str, int] = defaultdict(int)
    for item in items:
        kinds[item["kind"]] += 1
    return ImportResult(created=len(items), kinds=dict(sorted(kinds.items())))


# --------------------------------------------------------------------------- fast inserts
#
# Validated rows go in with COPY ... FROM STDIN on PostgreSQL: no model
# instance or per-value field preparation per row, which is what dominates
# bulk_create at 100k rows. Other databases (and a model whose columns
# changed under us) take bulk_create.

_ITEM_COLUMNS = (
    "project_id", "external_id", "kind", "text", "image", "url", "data", "features", "gold_label",
    "n_annotations", "created_at",
)
_ANNOTATION_COLUMNS = (
    "project_id", "item_id", "annotator_id", "label", "source", "time_spent_ms", "created_at", "updated_at",
)


def _copy_ready(model: type[Any], columns: tuple[str, ...]) -> bool:
    concrete = {field.column for field in model._meta.concrete_fields if not field.primary_key}
    return concrete == set(columns)


def _copy_rows(model: type[Any], columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> None:
    table = connection.ops.quote_name(model._meta.db_table)
    column_list = ", ".join(connection.ops.quote_name(column) for column in columns)
    with connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, allow_nan=False)


def _features_json(values: list[float] | None) -> str | None:
    # Validated finite floats: repr() is their JSON spelling, ~3x faster than json.dumps.
    return None if values is None else "[" + ",".join(map(repr, values)) + "]"


def _insert_items(*, project: Project, items: list[dict[str, Any]], conflict_field: str) -> None:
    """Insert validated item rows; a concurrent insert of the same ids is a clean 400."""
    try:
        # A savepoint so that a unique violation does not break the caller's transaction.
        with transaction.atomic():
            if _copy_ready(Item, _ITEM_COLUMNS):
                now = timezone.now()
                _copy_rows(
                    Item,
                    _ITEM_COLUMNS,
                    (
                        (
                            project.pk, item["external_id"], item["kind"], item.get("text", ""), "",
                            item.get("url", ""),
                            item["data_json"] if "data_json" in item else _json_or_none(item.get("data")),
                            _features_json(item.get("features")),
                            item.get("gold_label"), item.get("n_annotations", 0), now,
                        )
                        for item in items
                    ),
                )
            else:
                Item.objects.bulk_create(
                    (
                        Item(project=project, **{name: value for name, value in item.items() if name != "data_json"})
                        for item in items
                    ),
                    batch_size=BATCH_SIZE,
                )
    except IntegrityError:
        raise ImportValidationError(
            [RowError(None, conflict_field, "another upload created some of these items at the same time; retry.")]
        ) from None


def _insert_annotations(*, project: Project, rows: list[tuple[int, int, str]]) -> None:
    """Insert (item id, annotator id, label) rows as imported annotations."""
    try:
        with transaction.atomic():
            if _copy_ready(Annotation, _ANNOTATION_COLUMNS):
                now = timezone.now()
                _copy_rows(
                    Annotation,
                    _ANNOTATION_COLUMNS,
                    (
                        (project.pk, item_id, annotator_id, label, AnnotationSource.IMPORT.value, None, now, now)
                        for item_id, annotator_id, label in rows
                    ),
                )
            else:
                Annotation.objects.bulk_create(
                    (
                        Annotation(
                            project=project, item_id=item_id, annotator_id=annotator_id, label=label,
                            source=AnnotationSource.IMPORT,
                        )
                        for item_id, annotator_id, label in rows
                    ),
                    batch_size=BATCH_SIZE,
                )
    except IntegrityError:
        raise ImportValidationError(
            [RowError(None, None, "some of these annotations were stored at the same time by another request; retry.")]
        ) from None


@transaction.atomic
def item_create_with_file(
    *,
    project: Project,
    external_id: str,
    image: UploadedFile,
    text: str = "",
    gold: str | None = None,
    data: dict[str, Any] | None = None,
) -> Item:
    """Create one image item from an uploaded file (the bulk import takes URLs).

    The same limits as the bulk import: every problem is a row-1 error naming the field.
    The file must be a PNG, JPEG, GIF or WebP image *by its bytes* (Pillow
    reads it); the client's declared content type and file name are ignored,
    and the file is stored under a name of the server's choosing with the
    extension of the verified type (``front.views.item_media`` serves it).
    """
    errors = _ErrorCollector()
    limits = _Limits.current()
    external_id = (external_id or "").strip() if isinstance(external_id, str) else ""
    problem = _unstorable(external_id)
    if not external_id or len(external_id) > 255 or problem:
        errors.add(1, "external_id", f"contains {problem}." if problem else "is required, 1–255 characters.")
    text = text or ""
    problem = _unstorable(text)
    if problem:
        errors.add(1, "text", f"contains {problem}.")
    elif len(text) > limits.text:
        errors.add(
            1, "text", f"is {len(text):,} characters long; at most {limits.text:,} are allowed (ITEM_TEXT_MAX_LENGTH)."
        )
    if data is not None:
        problem = _unstorable(data)
        if problem:
            errors.add(1, "data", f"contains {problem}.")
        else:
            _data_json(1, data, errors, limits)
    if gold not in (None, "") and gold not in project.class_names:
        errors.add(1, "gold", f"{gold!r} is not a class of this project; allowed: {', '.join(project.class_names)}.")
    errors.raise_if_any()
    try:
        kind = image_type_of(image)
    except ImageRejected as rejected:
        raise ImportValidationError(
            [RowError(1, "image", f"the uploaded file {rejected}; allowed types: {ALLOWED_IMAGE_LABELS} (SVG is not accepted).")]
        ) from None
    if Item.objects.filter(project=project, external_id=external_id).exists():
        raise ImportValidationError([RowError(1, "external_id", f"{external_id!r} already exists in this project.")])
    item = Item(
        project=project,
        external_id=external_id,
        kind=ItemKind.IMAGE,
        text=text,
        gold_label=gold or None,
        data=data,
    )
    # A random name: nothing of the client's name reaches the disk or the URL.
    item.image.save(f"{uuid.uuid4().hex}{kind.extension}", image, save=False)
    item.save()
    return item


# --------------------------------------------------------------------------- crowd import

_CROWD_HEADERS: dict[tuple[str, str, str], str] = {
    ("item", "annotator", "label"): "item,annotator,label",
    ("task", "worker", "label"): "task,worker,label (crowd-kit)",
}


def crowd_username(*, project: Project, annotator: str) -> str:
    """The account name of an imported crowd worker.

    Namespaced by project (``p<project id>-<worker id>``) so that an import can
    never attach labels to an existing person who happens to share a worker id,
    and two requesters' crowds never merge.
    """
    return f"p{project.pk}-{annotator}"


@transaction.atomic
def crowd_import(*, project: Project, stream: IO[bytes] | IO[str] | bytes | str) -> CrowdImportResult:
    """Import existing crowd labels from CSV ``item,annotator,label`` (or ``task,worker,label``).

    * Labels must be class names of the project (the error names the allowed ones).
    * Unknown items are created with only their external id (kind ``json``,
      no content) so that a crowd can arrive before its items' content; a later
      item import of the same ids then fails as duplicates, so bring items first
      when you have them.
    * Workers become accounts named by ``crowd_username`` with an unusable
      password, and members of the project.
    * A row equal to a stored annotation (or to an earlier row) is skipped; the
      same item and worker with a *different* label is an error.
    """
    class_names = project.class_names
    allowed = frozenset(class_names)
    allowed_text = ", ".join(class_names)
    errors = _ErrorCollector()
    reader = csv.reader(_text_stream(stream))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ImportValidationError([RowError(None, None, f"unreadable CSV: {exc}.")]) from None
    for position, name in enumerate(header or (), start=1):
        problem = _unstorable(name)
        if problem is not None:
            raise _header_error(position, problem)
    normalised = tuple(name.strip().lower() for name in header or ())
    if normalised not in _CROWD_HEADERS:
        raise ImportValidationError(
            [
                RowError(
                    None,
                    None,
                    f"the CSV header is {','.join(header or []) or 'missing'}; expected one of: "
                    + "; ".join(_CROWD_HEADERS.values())
                    + ".",
                )
            ]
        )
    item_field, annotator_field, _ = normalised

    # (item external id, worker id) -> (label, first row)
    wanted: dict[tuple[str, str], tuple[str, int]] = {}
    duplicates = 0
    try:
        for number, values in enumerate(reader, start=1):
            if not values:
                continue
            if len(values) != 3:
                errors.add(number, None, f"has {len(values)} columns; expected 3 ({','.join(normalised)}).")
                continue
            external_id, worker, label = (value.strip() for value in values)
            unstorable = [
                (name, problem)
                for name, value in zip(normalised, (external_id, worker, label))
                if (problem := _unstorable(value)) is not None
            ]
            if unstorable:
                name, problem = unstorable[0]
                errors.add(number, name, f"contains {problem}.")
                continue
            bad = False
            if not external_id or len(external_id) > 255:
                errors.add(number, item_field, "must be 1–255 characters.")
                bad = True
            if not worker or len(worker) > 100 or not _USERNAME_CHARS.match(worker):
                errors.add(
                    number, annotator_field, f"{worker!r}: use 1–100 letters, digits or . @ + - _ for worker ids."
                )
                bad = True
            if label not in allowed:
                errors.add(number, "label", f"{label!r} is not a class of this project; allowed: {allowed_text}.")
                bad = True
            if bad:
                continue
            key = (external_id, worker)
            earlier = wanted.get(key)
            if earlier is None:
                wanted[key] = (label, number)
            elif earlier[0] == label:
                duplicates += 1
            else:
                errors.add(
                    number,
                    "label",
                    f"{worker!r} labelled {external_id!r} as {earlier[0]!r} in row {earlier[1]}; "
                    f"conflicting label {label!r}.",
                )
    except csv.Error as exc:
        raise ImportValidationError([RowError(None, None, f"unreadable CSV: {exc}.")]) from None
    if not wanted and not errors.total:
        raise ImportValidationError([RowError(None, None, "the upload has no rows.")])

    # Items: existing ones by external id, the rest to create.
    external_ids = {external_id for external_id, _ in wanted}
    item_ids = _item_ids_by_external_id(project, external_ids)

    # Accounts: existing ones by namespaced username.
    User = get_user_model()
    usernames = {worker: crowd_username(project=project, annotator=worker) for worker in {w for _, w in wanted}}
    too_long = [worker for worker, name in usernames.items() if len(name) > 150]
    for worker in too_long:
        errors.add(None, annotator_field, f"worker id {worker[:40]!r}… is too long for an account name.")
    user_ids: dict[str, int] = dict(
        User.objects.filter(username__in=list(usernames.values())).values_list("username", "id")
    )

    # Stored annotations of these workers on these items: duplicates or conflicts.
    stored: dict[tuple[int, int], str] = {}
    known_users = [user_ids[name] for name in usernames.values() if name in user_ids]
    if known_users and item_ids:
        stored = {
            (item_id, annotator_id): label
            for item_id, annotator_id, label in Annotation.objects.filter(
                project=project, annotator_id__in=known_users
            ).values_list("item_id", "annotator_id", "label")
        }
    to_create: list[tuple[str, str, str]] = []
    for (external_id, worker), (label, number) in wanted.items():
        item_id = item_ids.get(external_id)
        user_id = user_ids.get(usernames[worker])
        previous = stored.get((item_id, user_id)) if item_id is not None and user_id is not None else None
        if previous is None:
            to_create.append((external_id, worker, label))
        elif previous == label:
            duplicates += 1
        else:
            errors.add(
                number,
                "label",
                f"{worker!r} already labelled {external_id!r} as {previous!r} in this project; "
                f"conflicting label {label!r} (change it through the annotation API, which keeps history).",
            )
    errors.raise_if_any()

    # Write: items, accounts, memberships, annotations, counters.
    new_ids = sorted(external_ids - set(item_ids))
    labels_per_item: dict[str, int] = defaultdict(int)
    for external_id, _, _ in to_create:
        labels_per_item[external_id] += 1
    # New items are written with their final count: no second pass over them.
    _insert_items(
        project=project,
        items=[
            {"external_id": external_id, "kind": ItemKind.JSON.value, "n_annotations": labels_per_item[external_id]}
            for external_id in new_ids
        ],
        conflict_field=item_field,
    )
    created_item_ids = set(new_ids)
    item_ids.update(_item_ids_by_external_id(project, new_ids))

    missing_users = sorted(name for name in usernames.values() if name not in user_ids)
    unusable = make_password(None)  # one unusable hash is enough: nobody can log in with it
    User.objects.bulk_create(
        [User(username=name, password=unusable, is_active=True) for name in missing_users],
        batch_size=BATCH_SIZE,
        ignore_conflicts=True,
    )
    if missing_users:
        user_ids.update(User.objects.filter(username__in=missing_users).values_list("username", "id"))

    members_before = Membership.objects.filter(project=project).count()
    Membership.objects.bulk_create(
        [Membership(project=project, user_id=user_ids[name]) for name in usernames.values()],
        batch_size=BATCH_SIZE,
        ignore_conflicts=True,
    )
    members_added = Membership.objects.filter(project=project).count() - members_before

    annotation_rows = [
        (item_ids[external_id], user_ids[usernames[worker]], label) for external_id, worker, label in to_create
    ]
    _insert_annotations(project=project, rows=annotation_rows)

    # Increment (not recount) so that labels submitted concurrently are not lost.
    per_item: dict[int, int] = defaultdict(int)
    for external_id, count in labels_per_item.items():
        if external_id not in created_item_ids:
            per_item[item_ids[external_id]] += count
    by_delta: dict[int, list[int]] = defaultdict(list)
    for item_id, delta in per_item.items():
        by_delta[delta].append(item_id)
    for delta, ids in by_delta.items():
        for start in range(0, len(ids), 10_000):
            Item.objects.filter(pk__in=ids[start : start + 10_000]).update(n_annotations=F("n_annotations") + delta)

    # Live inference (issue 4), through labelling's listener: after commit,
    # start a run if N new annotations arrived.
    hooks.annotations_stored(project_id=project.pk)
    return CrowdImportResult(
        annotations_created=len(annotation_rows),
        duplicates_skipped=duplicates,
        items_created=len(new_ids),
        annotators_created=len(missing_users),
        members_added=members_added,
        annotator_usernames=usernames,
    )


# --------------------------------------------------------------------------- dataset folders


@dataclass
class DatasetImportResult:
    project: Project
    project_created: bool
    items: ImportResult
    crowd: CrowdImportResult
    test_items: int

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.crowd.as_dict(),
            # After the crowd's counts: items the crowd import created (ids
            # seen only in annotations.csv) add to those of the item files.
            "project_id": self.project.pk,
            "project_created": self.project_created,
            "items_created": self.items.created + self.crowd.items_created,
            "test_items_created": self.test_items,
        }


def _read_utf8(path: Any) -> str:
    """A dataset file's text; a byte that is not UTF-8 is a ValueError naming the file, line and byte."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1].hex().upper()
        raise ValueError(f"{path}, line {line}: byte 0x{bad} is not UTF-8 text; save the file as UTF-8.") from None


def _read_csv_dicts(path: Any) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(_read_utf8(path), newline="")))


def _require_columns(path: Any, rows: list[dict[str, str]], columns: tuple[str, ...]) -> None:
    if rows and not set(columns) <= set(rows[0]):
        raise ValueError(f"{path}: expected the columns {', '.join(columns)}; found {', '.join(rows[0])}.")


def dataset_classes(directory: Any) -> list[dict[str, Any]]:
    """Classes of a dataset folder: the sorted labels of gold.csv and annotations.csv, keys 1..9."""
    from pathlib import Path

    directory = Path(directory)
    labels: set[str] = set()
    for name in ("gold.csv", "annotations.csv"):
        path = directory / name
        if path.exists():
            rows = _read_csv_dicts(path)
            _require_columns(path, rows, ("label",))
            labels.update(row["label"].strip() for row in rows if row["label"].strip())
    return [{"name": name, "key": str(index + 1) if index < 9 else None} for index, name in enumerate(sorted(labels))]


def dataset_import(
    *, directory: Any, project: Project, project_created: bool = False, with_test: bool = False
) -> DatasetImportResult:
    """Import a dataset folder (the layout of ``shared/datasets/*``) into ``project``.

    Files: ``annotations.csv`` (item,annotator,label; required), ``gold.csv``
    (item,label), ``features.npy`` + ``items.txt`` (row k ↔ line k), ``texts.csv``
    (item,text). ``test_*`` files hold items no crowd labelled; with
    ``with_test`` they become items ``test-<row>`` marked ``data.split = "test"``
    (with their gold label, to score the classifier), otherwise they are ignored.

    Idempotent: items already in the project are left as they are and crowd
    labels already stored are skipped.
    """
    from pathlib import Path

    import numpy as np

    directory = Path(directory)
    annotations_path = directory / "annotations.csv"
    if not annotations_path.exists():
        raise ValueError(f"{directory}: annotations.csv (item,annotator,label) is required.")
    allowed = set(project.class_names)
    rows: dict[str, dict[str, Any]] = {}

    def row_for(external_id: str) -> dict[str, Any]:
        return rows.setdefault(external_id, {"external_id": external_id})

    if (directory / "features.npy").exists():
        items_path = directory / "items.txt"
        if not items_path.exists():
            raise ValueError(f"{directory}: features.npy needs items.txt (one item id per line, row k ↔ line k).")
        item_ids = [line.strip() for line in _read_utf8(items_path).splitlines() if line.strip()]
        features = np.load(directory / "features.npy", allow_pickle=False)
        if features.ndim != 2 or features.shape[0] != len(item_ids):
            raise ValueError(
                f"{directory}: features.npy has shape {features.shape}; expected {len(item_ids)} rows (items.txt)."
            )
        for external_id, vector in zip(item_ids, features.astype(float).tolist()):
            row_for(external_id)["features"] = vector
    if (directory / "texts.csv").exists():
        texts = _read_csv_dicts(directory / "texts.csv")
        _require_columns(directory / "texts.csv", texts, ("item", "text"))
        for text_row in texts:
            row_for(text_row["item"])["text"] = text_row["text"]
    if (directory / "gold.csv").exists():
        gold_rows = _read_csv_dicts(directory / "gold.csv")
        _require_columns(directory / "gold.csv", gold_rows, ("item", "label"))
        for gold_row in gold_rows:
            if gold_row["label"] not in allowed:
                raise ValueError(
                    f"gold.csv: label {gold_row['label']!r} is not a class of project {project.name!r}; "
                    f"allowed: {', '.join(project.class_names)}."
                )
            row_for(gold_row["item"])["gold"] = gold_row["label"]

    test_rows: dict[str, dict[str, Any]] = {}
    if with_test:
        test_gold: dict[str, str] = {}
        if (directory / "test_gold.csv").exists():
            for gold_row in _read_csv_dicts(directory / "test_gold.csv"):
                test_gold[gold_row["row"]] = gold_row["label"]
        if (directory / "test_features.npy").exists():
            test_features = np.load(directory / "test_features.npy", allow_pickle=False)
            for index, vector in enumerate(test_features.astype(float).tolist()):
                test_rows[f"test-{index}"] = {
                    "external_id": f"test-{index}",
                    "features": vector,
                    "data": {"split": "test"},
                    "gold": test_gold.get(str(index)),
                }
        if (directory / "test_texts.csv").exists():
            for text_row in _read_csv_dicts(directory / "test_texts.csv"):
                test_rows[f"test-{text_row['row']}"] = {
                    "external_id": f"test-{text_row['row']}",
                    "text": text_row["text"],
                    "data": {"split": "test"},
                    "gold": text_row.get("label") or test_gold.get(text_row["row"]),
                }
        for test_row in test_rows.values():
            if test_row["gold"] is not None and test_row["gold"] not in allowed:
                test_row["gold"] = None  # a test class no crowd item has: keep the item, drop the score label

    with transaction.atomic():
        existing = set(Item.objects.filter(project=project).values_list("external_id", flat=True))
        new_rows = [row for key, row in rows.items() if key not in existing]
        new_rows += [row for key, row in test_rows.items() if key not in existing]
        created = ImportResult(created=0)
        for start in range(0, len(new_rows), MAX_ITEMS_PER_REQUEST):
            batch = items_import(project=project, rows=new_rows[start : start + MAX_ITEMS_PER_REQUEST])
            created.created += batch.created
            for kind, count in batch.kinds.items():
                created.kinds[kind] = created.kinds.get(kind, 0) + count
        with open(annotations_path, "rb") as handle:
            crowd = crowd_import(project=project, stream=handle)
    n_test = sum(1 for key in test_rows if key not in existing)
    return DatasetImportResult(
        project=project,
        project_created=project_created,
        items=ImportResult(created=created.created - n_test, kinds=created.kinds),
        crowd=crowd,
        test_items=n_test,
    )
