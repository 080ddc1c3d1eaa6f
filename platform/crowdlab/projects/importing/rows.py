"""The rules of one item row: the single source of truth for what an item may hold.

The bulk import (``services.items_import``), the one-file upload
(``services.item_create_with_file``) and the API's serializers
(``crowdlab.api.serializers``) all check item fields here, so their answers
cannot drift apart: the limits are read from settings when a check runs (not
when a module is imported) and every message is written once.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from crowdlab import jsonlimits

from ..models import ItemKind, Project
from .errors import ErrorCollector
from .parsing import CsvRow, Unparseable, unstorable

#: The longest external id (``Item.external_id`` is a varchar(255)).
EXTERNAL_ID_MAX_LENGTH = 255
#: The longest image/audio URL (``Item.url``).
URL_MAX_LENGTH = 2000
# Accepted spellings of each item field; the first is the canonical one.
ID_KEYS = ("external_id", "id", "item")
IMAGE_KEYS = ("image_url",)
AUDIO_KEYS = ("audio_url",)
KNOWN_FIELDS = frozenset(
    {"external_id", "id", "item", "text", "image_url", "url", "audio_url", "data", "features", "gold", "kind"}
)
FEATURE_COLUMN = re.compile(r"^f(\d+)$")
AUDIO_SUFFIXES = (".mp3", ".wav", ".ogg", ".oga", ".flac", ".m4a", ".aac", ".opus", ".webm")
_url_validator = URLValidator(schemes=["http", "https"])
#: What an external id may be, in the words of the error messages.
EXTERNAL_ID_RULE = f"1–{EXTERNAL_ID_MAX_LENGTH} characters"


# --------------------------------------------------------------------------- item validation


@dataclass(frozen=True)
class ItemLimits:
    """The input limits (settings), read once per import rather than once per row."""

    text: int
    data_bytes: int
    features: int
    depth: int

    @classmethod
    def current(cls) -> ItemLimits:
        return cls(
            text=settings.ITEM_TEXT_MAX_LENGTH,
            data_bytes=settings.ITEM_DATA_MAX_BYTES,
            features=settings.ITEM_FEATURES_MAX_LENGTH,
            depth=settings.JSON_MAX_DEPTH,
        )


@dataclass
class ItemContext:
    project: Project
    class_names: frozenset[str]
    allowed_labels: str
    feature_length: int | None
    limits: ItemLimits = field(default_factory=ItemLimits.current)
    # Rows decoded here (parse_upload) passed the depth check already; rows
    # handed over as Python objects get their ``data`` walked once.
    depth_checked: bool = False


# One check per field, each answering the message of its error (or None). The
# serializers call them too, so the API and the services cannot disagree.


def external_id_problem(external_id: str) -> str | None:
    """An uploaded item's external id (already stripped): what is wrong with it, or None."""
    problem = unstorable(external_id)
    if not external_id or len(external_id) > EXTERNAL_ID_MAX_LENGTH or problem:
        return f"contains {problem}." if problem else f"is required, {EXTERNAL_ID_RULE}."
    return None


def text_problem(text: str, limits: ItemLimits) -> str | None:
    """An item's text: what PostgreSQL cannot store in it, or that it is over ``ITEM_TEXT_MAX_LENGTH``."""
    problem = unstorable(text)
    if problem is not None:
        return f"contains {problem}."
    if len(text) > limits.text:
        return f"is {len(text):,} characters long; at most {limits.text:,} are allowed (ITEM_TEXT_MAX_LENGTH)."
    return None


def gold_problem(gold: Any, class_names: Collection[str], allowed_labels: str) -> str | None:
    """A gold label that is given (not None or ""): None if it is one of the project's classes.

    ``allowed_labels``: the class names as the message lists them, joined once per import."""
    if isinstance(gold, str) and gold in class_names:
        return None
    return f"{gold!r} is not a class of this project; allowed: {allowed_labels}."


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


def csv_feature_columns(header: Iterable[str]) -> list[str]:
    columns = sorted(
        (int(match.group(1)), name) for name in header if (match := FEATURE_COLUMN.match(name)) is not None
    )
    return [name for _, name in columns]


def validate_item_row(
    number: int, raw: Any, context: ItemContext, errors: ErrorCollector, feature_columns: list[str]
) -> dict[str, Any] | None:
    """One upload row as Item field values, or ``None`` after recording errors."""
    if isinstance(raw, Unparseable):
        errors.add(number, None, raw.message)
        return None
    if not isinstance(raw, dict):
        errors.add(number, None, f"expected an object with item fields, got {type(raw).__name__}.")
        return None
    from_csv = isinstance(raw, CsvRow)
    before = errors.total
    # PostgreSQL text and jsonb cannot store NUL characters or lone surrogates
    # (which is also how bytes that are not UTF-8 arrive). Features are checked
    # to be numbers below; walking them here would cost a call per value.
    limits = context.limits
    for key, value in raw.items():
        bad_key = None if from_csv else unstorable(key)  # CSV keys: the header, checked once
        problem = bad_key or (unstorable(value) if key != "features" else None)
        if problem is not None:
            errors.add(number, None if bad_key else key, f"contains {problem}.")
            return None

    if not from_csv:
        unknown = sorted(set(raw) - KNOWN_FIELDS)
        if unknown:
            errors.add(
                number,
                unknown[0],
                f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(KNOWN_FIELDS))}"
                " (put anything else under 'data').",
            )

    id_key, external_id = _first(raw, ID_KEYS)
    if external_id is None:
        errors.add(number, "external_id", "is required (also accepted as 'id' or 'item').")
    elif isinstance(external_id, bool) or not isinstance(external_id, (str, int)):
        errors.add(number, id_key, "must be a string or an integer.")
        external_id = None
    else:
        external_id = str(external_id).strip()
        if not external_id or len(external_id) > EXTERNAL_ID_MAX_LENGTH:
            errors.add(number, id_key, f"must be {EXTERNAL_ID_RULE}.")
            external_id = None

    text = raw.get("text") or ""
    if not isinstance(text, str):
        errors.add(number, "text", "must be a string.")
        text = ""
    elif (problem := text_problem(text, limits)) is not None:
        errors.add(number, "text", problem)

    url = ""
    url_kind: str | None = None
    _, image_url = _first(raw, IMAGE_KEYS)
    _, audio_url = _first(raw, AUDIO_KEYS)
    _, plain_url = _first(raw, ("url",))
    given = [
        (name, value)
        for name, value in (("image_url", image_url), ("audio_url", audio_url), ("url", plain_url))
        if value is not None
    ]
    if len(given) > 1:
        errors.add(
            number, given[1][0], f"give only one of image_url, audio_url or url (got {', '.join(n for n, _ in given)})."
        )
    elif given:
        name, value = given[0]
        if not isinstance(value, str) or len(value) > URL_MAX_LENGTH:
            errors.add(number, name, f"must be an http(s) URL of at most {URL_MAX_LENGTH} characters.")
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
                    url_kind = ItemKind.AUDIO if path.endswith(AUDIO_SUFFIXES) else ItemKind.IMAGE

    data: Any = None
    if from_csv:
        extras = {
            key: value
            for key, value in raw.items()
            if key not in KNOWN_FIELDS and not FEATURE_COLUMN.match(key) and value != ""
        }
        raw_data = raw.get("data") or ""
        if raw_data:
            try:
                data = jsonlimits.loads(raw_data)
            except jsonlimits.JSONTooDeep as exc:
                errors.add(number, "data", str(exc))
                data = {}
            except ValueError:
                errors.add(number, "data", 'must be a JSON object, e.g. {"source": "web"}.')
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
        checked_data_json(number, data, errors, limits, walk=not (from_csv or context.depth_checked))
        if data is not None
        else None
    )

    features: list[float] | None = None
    if from_csv and feature_columns and _features_too_long(len(feature_columns), limits.features):
        errors.add(
            number,
            "features",
            f"{feature_columns[0]}.. columns: {_features_too_long(len(feature_columns), limits.features)}",
        )
    elif from_csv and feature_columns:
        if raw.get("features"):
            errors.add(
                number,
                "features",
                f"give features either as {feature_columns[0]}.. columns or as 'features', not both.",
            )
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
    elif (problem := gold_problem(gold, context.class_names, context.allowed_labels)) is not None:
        errors.add(number, "gold", problem)
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
            errors.add(number, None, "has no content; give text, image_url, audio_url, url, data or features.")
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


def checked_data_json(
    number: int, data: Any, errors: ErrorCollector, limits: ItemLimits, *, walk: bool = True
) -> str | None:
    """``data`` as the JSON text that is stored (serialised once, here), or None after an error.

    ``walk``: check the nesting first (json.dumps recurses), for data that did
    not come through a depth-checked decoder."""
    if walk and jsonlimits.nesting_exceeds(data, limits.depth):
        errors.add(number, "data", f"nests more than {limits.depth} levels of arrays and objects (JSON_MAX_DEPTH).")
        return None
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    except ValueError:
        errors.add(
            number, "data", "numbers must be finite: NaN, Infinity and overflowing values such as 1e400 are not JSON."
        )
        return None
    except TypeError as exc:  # Python callers only: JSON bodies hold nothing else
        errors.add(number, "data", f"must hold only JSON values: {exc}.")
        return None
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > limits.data_bytes:
        errors.add(
            number,
            "data",
            f"is {size:,} bytes as JSON; at most {limits.data_bytes:,} are allowed (ITEM_DATA_MAX_BYTES).",
        )
        return None
    return text


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
