"""The import services: all-or-nothing bulk item import, one-file item upload, crowd import.

Every row is validated first (``rows``), with a handful of set-based queries,
never one per row; only a clean upload is written, in one transaction, with
COPY. A rejected upload raises ``ImportValidationError``.
"""
from __future__ import annotations

import csv
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from crowdlab.labelling import hooks
from crowdlab.labelling.models import Annotation, AnnotationSource

from ..images import ALLOWED_IMAGE_LABELS, ImageRejected, image_type_of
from ..models import Item, ItemKind, Membership, Project
from .errors import ErrorCollector, ImportValidationError, RowError
from .parsing import CsvRow, header_error, parse_upload, text_stream, unstorable
from .rows import (
    EXTERNAL_ID_MAX_LENGTH,
    EXTERNAL_ID_RULE,
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
# bulk_create at 100k rows. A model whose columns changed under us (a
# migration this list has not caught up with) takes bulk_create.

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
    errors = ErrorCollector()
    reader = csv.reader(text_stream(stream))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ImportValidationError([RowError(None, None, f"unreadable CSV: {exc}.")]) from None
    for position, name in enumerate(header or (), start=1):
        problem = unstorable(name)
        if problem is not None:
            raise header_error(position, problem)
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
            bad_cells = [
                (name, problem)
                for name, value in zip(normalised, (external_id, worker, label))
                if (problem := unstorable(value)) is not None
            ]
            if bad_cells:
                name, problem = bad_cells[0]
                errors.add(number, name, f"contains {problem}.")
                continue
            bad = False
            if not external_id or len(external_id) > EXTERNAL_ID_MAX_LENGTH:
                errors.add(number, item_field, f"must be {EXTERNAL_ID_RULE}.")
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
