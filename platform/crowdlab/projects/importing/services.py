"""The item import services: all-or-nothing bulk item import and one-file item upload.

The crowd import (annotations) is labelling's: ``crowdlab.labelling.importing``.

Every row is validated first (``rows``), with a handful of set-based queries,
never one per row; only a clean upload is written, in one transaction, with
COPY. A rejected upload raises ``ImportValidationError``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from crowdlab.db import copy_rows

from ..images import ALLOWED_IMAGE_LABELS, ImageRejected, image_type_of
from ..models import Item, ItemKind, Project
from .errors import ErrorCollector, ImportValidationError, RowError
from .parsing import CsvRow, parse_upload, unstorable
from .rows import (
    ItemContext,
    ItemLimits,
    checked_data_json,
    csv_feature_columns,
    external_id_problem,
    gold_problem,
    text_problem,
    validate_item_row,
)

MAX_ITEMS_PER_REQUEST = 100_000
BATCH_SIZE = 5_000
_USERNAME_CHARS = re.compile(r"^[\w.@+-]+\Z")


@dataclass
class ImportResult:
    created: int
    kinds: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"created": self.created, "kinds": self.kinds}


def _feature_length(project: Project) -> int | None:
    """The length of this project's existing feature vectors, if any."""
    sample = Item.objects.filter(project=project, features__isnull=False).values_list("features", flat=True).first()
    return len(sample) if isinstance(sample, list) else None


def item_ids_by_external_id(project: Project, candidates: Iterable[str]) -> dict[str, int]:
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
    return set(item_ids_by_external_id(project, candidates))


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
    context = ItemContext(
        project=project,
        class_names=frozenset(class_names),
        allowed_labels=", ".join(class_names),
        feature_length=_feature_length(project),
        depth_checked=rows is None,
    )
    errors = ErrorCollector()
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
            feature_columns = csv_feature_columns(raw.keys()) if isinstance(raw, CsvRow) else []
        item = validate_item_row(number, raw, context, errors, feature_columns)
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
        errors.add(first_row_of[external_id], "external_id", f"{external_id!r} already exists in this project.")
    errors.raise_if_any()
    insert_items(project=project, items=items, conflict_field="external_id")
    kinds: dict[str, int] = defaultdict(int)
    for item in items:
        kinds[item["kind"]] += 1
    return ImportResult(created=len(items), kinds=dict(sorted(kinds.items())))


# --------------------------------------------------------------------------- fast inserts
#
# Validated rows go in with COPY ... FROM STDIN on PostgreSQL: no model
# instance or per-value field preparation per row, which is what dominates
# bulk_create at 100k rows. A model whose columns changed under us (a
# migration this list has not caught up with) takes bulk_create.


_ITEM_COLUMNS = (
    "project_id",
    "external_id",
    "kind",
    "text",
    "image",
    "url",
    "data",
    "features",
    "gold_label",
    "n_annotations",
    "created_at",
)


def copy_ready(model: type[Any], columns: tuple[str, ...]) -> bool:
    """Whether ``columns`` are exactly ``model``'s concrete columns (so COPY can fill every one)."""
    concrete = {field.column for field in model._meta.concrete_fields if not field.primary_key}
    return concrete == set(columns)


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, allow_nan=False)


def _features_json(values: list[float] | None) -> str | None:
    # Validated finite floats: repr() is their JSON spelling, ~3x faster than json.dumps.
    return None if values is None else "[" + ",".join(map(repr, values)) + "]"


def insert_items(*, project: Project, items: list[dict[str, Any]], conflict_field: str) -> None:
    """Insert validated item rows; a concurrent insert of the same ids is a clean 400."""
    try:
        # A savepoint so that a unique violation does not break the caller's transaction.
        with transaction.atomic():
            if copy_ready(Item, _ITEM_COLUMNS):
                now = timezone.now()
                copy_rows(
                    Item._meta.db_table,
                    _ITEM_COLUMNS,
                    (
                        (
                            project.pk,
                            item["external_id"],
                            item["kind"],
                            item.get("text", ""),
                            "",
                            item.get("url", ""),
                            item["data_json"] if "data_json" in item else _json_or_none(item.get("data")),
                            _features_json(item.get("features")),
                            item.get("gold_label"),
                            item.get("n_annotations", 0),
                            now,
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
    errors = ErrorCollector()
    limits = ItemLimits.current()
    external_id = (external_id or "").strip() if isinstance(external_id, str) else ""
    if (problem := external_id_problem(external_id)) is not None:
        errors.add(1, "external_id", problem)
    text = text or ""
    if (problem := text_problem(text, limits)) is not None:
        errors.add(1, "text", problem)
    if data is not None:
        problem = unstorable(data)
        if problem:
            errors.add(1, "data", f"contains {problem}.")
        else:
            checked_data_json(1, data, errors, limits)
    class_names = project.class_names
    if gold not in (None, "") and (problem := gold_problem(gold, class_names, ", ".join(class_names))) is not None:
        errors.add(1, "gold", problem)
    errors.raise_if_any()
    try:
        kind = image_type_of(image)
    except ImageRejected as rejected:
        raise ImportValidationError(
            [
                RowError(
                    1,
                    "image",
                    f"the uploaded file {rejected}; allowed types: {ALLOWED_IMAGE_LABELS} (SVG is not accepted).",
                )
            ]
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
