"""The crowd import: existing crowd labels (CSV ``item,annotator,label``) become annotations.

Labelling's, not projects': it writes annotations and accounts, and tells live
inference through labelling's hook. Rows are parsed and checked with the item
import's parsing and row rules (``crowdlab.projects.importing``), and written
with COPY in one transaction: all or nothing, errors by row number.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import IO, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from crowdlab.db import copy_rows
from crowdlab.projects.importing.errors import ErrorCollector, ImportValidationError, RowError
from crowdlab.projects.importing.parsing import header_error, text_stream, unstorable
from crowdlab.projects.importing.rows import EXTERNAL_ID_MAX_LENGTH, EXTERNAL_ID_RULE
from crowdlab.projects.importing.services import (
    BATCH_SIZE,
    copy_ready,
    insert_items,
    item_ids_by_external_id,
)
from crowdlab.projects.models import Item, ItemKind, Membership, Project

from . import hooks
from .models import Annotation, AnnotationSource

_USERNAME_CHARS = re.compile(r"^[\w.@+-]+\Z")


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


_ANNOTATION_COLUMNS = (
    "project_id",
    "item_id",
    "annotator_id",
    "label",
    "source",
    "time_spent_ms",
    "created_at",
    "updated_at",
)


def _insert_annotations(*, project: Project, rows: list[tuple[int, int, str]]) -> None:
    """Insert (item id, annotator id, label) rows as imported annotations."""
    try:
        with transaction.atomic():
            if copy_ready(Annotation, _ANNOTATION_COLUMNS):
                now = timezone.now()
                copy_rows(
                    Annotation._meta.db_table,
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
                            project=project,
                            item_id=item_id,
                            annotator_id=annotator_id,
                            label=label,
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
                for name, value in zip(normalised, (external_id, worker, label), strict=True)
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
    item_ids = item_ids_by_external_id(project, external_ids)

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
    insert_items(
        project=project,
        items=[
            {"external_id": external_id, "kind": ItemKind.JSON.value, "n_annotations": labels_per_item[external_id]}
            for external_id in new_ids
        ],
        conflict_field=item_field,
    )
    created_item_ids = set(new_ids)
    item_ids.update(item_ids_by_external_id(project, new_ids))

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
