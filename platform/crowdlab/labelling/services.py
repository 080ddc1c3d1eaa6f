"""Assignment (leasing items to annotators) and annotation writes.

Invariants, enforced here and by the unique constraints on
``Assignment(item, annotator)`` and ``Annotation(item, annotator)``:

* an item collects ``k`` *distinct* annotators and never more: a new lease is
  only granted while ``done annotations + active unexpired leases by others < k``;
* nobody labels an item twice;
* expired leases are free slots again;
* ``Item.n_annotations`` counts human annotations and is only changed with
  in-SQL increments (``n = n + 1``, ``F()``) so concurrent submits never lose one.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from crowdlab.db import model_from_row, prepared_cursor
from crowdlab.projects.models import Item, Membership, Project

from . import hooks
from .models import (
    Annotation,
    AnnotationRevision,
    AnnotationSource,
    Assignment,
    AssignmentStatus,
)

# One next-task locks one candidate at a time: locking more would hide them
# from concurrent annotators (SKIP LOCKED) who might then wrongly hear
# "nothing left". A rejected candidate (filled meanwhile) costs one more round.
MAX_SCAN_ROUNDS = 8


class AnnotationConflict(Exception):
    """A different label for an item the annotator already labelled (→ HTTP 409)."""

    def __init__(self, annotation: Annotation, label: str) -> None:
        self.annotation = annotation
        self.label = label
        super().__init__(
            f"You already labelled this item as {annotation.label!r}; to change it to {label!r} "
            f"use the explicit update (PATCH the annotation {annotation.pk})."
        )


_CANDIDATES_SQL = """
SELECT i.id
FROM projects_item i
WHERE i.project_id = %(project)s
  AND i.n_annotations < %(k)s
  AND NOT (i.id = ANY(%(exclude)s))
  AND NOT EXISTS (
      SELECT 1 FROM labelling_assignment own
      WHERE own.item_id = i.id AND own.annotator_id = %(annotator)s
        AND (own.status <> 'active' OR own.expires_at > %(now)s)
  )
  AND NOT EXISTS (
      SELECT 1 FROM labelling_annotation mine
      WHERE mine.item_id = i.id AND mine.annotator_id = %(annotator)s
  )
  AND i.n_annotations + (
      SELECT count(*) FROM labelling_assignment l
      WHERE l.item_id = i.id AND l.status = 'active' AND l.expires_at > %(now)s
        AND l.annotator_id <> %(annotator)s
  ) < %(k)s
ORDER BY i.n_annotations DESC, i.id
LIMIT 1
FOR UPDATE OF i {skip_locked}
"""

# Re-check and lease in one *new* statement, under the item's row lock: in
# READ COMMITTED each statement takes a fresh snapshot, so leases committed by
# others after the candidate scan started are counted here (the scan's own
# snapshot may predate them). No row comes back when the slot is gone. An
# expired lease of this annotator on the item is renewed in place (one row per
# item and annotator); done or skipped rows are never revived.
# Wrapped in a CTE that also returns the item's displayable columns, so the
# response needs no second query (nor the ORM's compile cost).
_ITEM_TASK_FIELDS = ("id", "project_id", "external_id", "kind", "text", "image", "url", "data")
_ITEM_TASK_MODEL_FIELDS = [Item._meta.get_field(name) for name in _ITEM_TASK_FIELDS]
_LEASE_SQL = """
WITH leased AS (
INSERT INTO labelling_assignment (project_id, item_id, annotator_id, status, created_at, expires_at)
SELECT i.project_id, i.id, %(annotator)s, 'active', %(now)s, %(expires)s
FROM projects_item i
WHERE i.id = %(item)s
  AND i.n_annotations + (
      SELECT count(*) FROM labelling_assignment l
      WHERE l.item_id = i.id AND l.status = 'active' AND l.expires_at > %(now)s
        AND l.annotator_id <> %(annotator)s
  ) < %(k)s
ON CONFLICT (item_id, annotator_id) DO UPDATE
    SET status = 'active', expires_at = EXCLUDED.expires_at
    WHERE labelling_assignment.status = 'active'
RETURNING id, item_id, created_at, expires_at
)
SELECT leased.id, leased.created_at, leased.expires_at, {item_columns}
FROM leased JOIN projects_item i ON i.id = leased.item_id
""".replace("{item_columns}", ", ".join(f"i.{name}" for name in _ITEM_TASK_FIELDS))

# The membership row lock and the current lease in one round trip.
# The caller's active unexpired lease in the project of membership row ``m``
# (a subquery for the statement that locks ``m``; also used by api.hot).
CURRENT_LEASE_SQL = """(
    SELECT a.id FROM labelling_assignment a
    WHERE a.project_id = m.project_id AND a.annotator_id = m.user_id
      AND a.status = 'active' AND a.expires_at > %(now)s
    -- Not "ORDER BY a.id": the planner would walk the primary key of the
    -- whole table (60 ms at 1M rows) instead of the annotator's index.
    ORDER BY a.expires_at DESC LIMIT 1
)"""

_MEMBER_LEASE_SQL = f"""
SELECT m.id, {CURRENT_LEASE_SQL}
FROM projects_membership m
WHERE m.project_id = %(project)s AND m.user_id = %(annotator)s
FOR UPDATE OF m
"""


@transaction.atomic
def membership_remove(*, project: Project, user: User) -> None:
    """Remove ``user`` from ``project``. Their annotations stay; their open leases are released.

    Here rather than in ``projects.services``: it writes leases, which
    ``projects`` (below ``labelling``) does not know."""
    deleted, _ = Membership.objects.filter(project=project, user=user).delete()
    if not deleted:
        raise ValidationError({"user": f"{user} is not a member of this project."})
    Assignment.objects.filter(project=project, annotator=user, status=AssignmentStatus.ACTIVE).update(
        status=AssignmentStatus.SKIPPED
    )


@transaction.atomic
def next_task(*, project: Project, annotator: User) -> Assignment | None:
    """The annotator's current lease, or a new one on the unfinished item closest
    to completion; ``None`` when nothing is left (or the project is paused).

    Raises ``PermissionDenied`` when ``annotator`` is not a member.
    """
    # Locking the membership row serialises one annotator's concurrent
    # requests, so they hold at most one active lease per project.
    now = timezone.now()
    with prepared_cursor() as cursor:
        cursor.execute(_MEMBER_LEASE_SQL, {"project": project.pk, "annotator": annotator.pk, "now": now})
        row = cursor.fetchone()
    if row is None:
        raise PermissionDenied("Only annotators who are members of this project may get tasks.")
    assignment = next_task_for_locked_member(
        project=project, annotator_id=annotator.pk, current_assignment_id=row[1], now=now
    )
    if assignment is not None:
        assignment.annotator = annotator  # the caller's object: no query on access
    return assignment


def next_task_for_locked_member(
    *, project: Project, annotator_id: int, current_assignment_id: int | None, now: dt.datetime
) -> Assignment | None:
    """The rest of ``next_task`` for a caller that has, in the current
    transaction, locked the annotator's membership row (``FOR UPDATE``) and
    looked up their active unexpired lease (``current_assignment_id``), as
    ``_MEMBER_LEASE_SQL`` does. Split out so the API's token fast path can do
    that lock in the same statement as authentication."""
    if not connection.in_atomic_block:
        raise RuntimeError("next_task_for_locked_member must run inside the transaction that holds the lock")
    if not project.is_active:
        return None
    if current_assignment_id is not None:
        return Assignment.objects.select_related("item").get(pk=current_assignment_id)
    params: dict[str, Any] = {
        "project": project.pk,
        "k": project.k,
        "annotator": annotator_id,
        "now": now,
        "expires": now + dt.timedelta(seconds=project.lease_seconds),
    }
    rejected: list[int] = []
    with prepared_cursor() as cursor:
        for _ in range(MAX_SCAN_ROUNDS):
            params["exclude"] = rejected
            # Fast path: skip rows other annotators are leasing right now.
            cursor.execute(_CANDIDATES_SQL.format(skip_locked="SKIP LOCKED"), params)
            row = cursor.fetchone()
            if row is None:
                # Every candidate may merely be locked by a concurrent lease
                # that will not use it: wait for the lock rather than answer
                # "nothing left" while slots are still free.
                cursor.execute(_CANDIDATES_SQL.format(skip_locked=""), params)
                row = cursor.fetchone()
                if row is None:
                    return None
            item_id = row[0]
            cursor.execute(_LEASE_SQL, {**params, "item": item_id})
            leased = cursor.fetchone()
            if leased is not None:
                assignment_id, created_at, expires_at, *item_values = leased
                # from_db: the other columns stay deferred (loaded on access).
                item = model_from_row(Item, _ITEM_TASK_MODEL_FIELDS, item_values)
                item.project = project
                return Assignment(
                    id=assignment_id,
                    project=project,
                    item=item,
                    annotator_id=annotator_id,
                    status=AssignmentStatus.ACTIVE,
                    created_at=created_at,
                    expires_at=expires_at,
                )
            rejected.append(item_id)
    return None


@transaction.atomic
def assignment_skip(*, assignment: Assignment, annotator: User) -> Assignment:
    """Give the item back; the annotator will not be offered it again."""
    if assignment.annotator_id != annotator.pk:
        raise PermissionDenied("You can only skip your own assignments.")
    if assignment.status != AssignmentStatus.ACTIVE:
        raise ValidationError(
            {"assignment": f"this assignment is {assignment.status}, only active ones can be skipped."}
        )
    assignment.status = AssignmentStatus.SKIPPED
    assignment.save(update_fields=["status"])
    return assignment


def validate_label(*, project: Project, label: object) -> str:
    allowed = project.class_names
    if not isinstance(label, str) or label not in allowed:
        raise ValidationError(
            {"label": f"{label!r} is not a class of this project; allowed labels: {', '.join(allowed)}."}
        )
    return label


# Insert the annotation, count it on the item and close the lease, atomically
# in one statement; nothing is written when the (item, annotator) row exists.
_SUBMIT_SQL = """
WITH ins AS (
    INSERT INTO labelling_annotation (project_id, item_id, annotator_id, label, source, time_spent_ms,
                                      created_at, updated_at)
    VALUES (%(project)s, %(item)s, %(annotator)s, %(label)s, 'web', %(time_spent_ms)s, %(now)s, %(now)s)
    ON CONFLICT (item_id, annotator_id) DO NOTHING
    RETURNING id
), counted AS (
    UPDATE projects_item SET n_annotations = n_annotations + 1
    WHERE id = %(item)s AND EXISTS (SELECT 1 FROM ins)
), closed AS (
    UPDATE labelling_assignment SET status = 'done'
    WHERE id = %(assignment)s AND EXISTS (SELECT 1 FROM ins)
)
SELECT id FROM ins
"""


@transaction.atomic
def annotation_submit(*, item: Item, annotator: User, label: str, time_spent_ms: int | None = None) -> Annotation:
    """Store the annotator's label for an item they hold an assignment for.

    Same label again → the existing row (idempotent). A different label →
    ``AnnotationConflict``; use ``annotation_update``. The returned annotation
    carries ``was_created`` (True for a new row) so the API can say 201 or 200.
    """
    project = item.project
    validate_label(project=project, label=label)
    if time_spent_ms is not None and (not isinstance(time_spent_ms, int) or time_spent_ms < 0):
        raise ValidationError({"time_spent_ms": "must be a non-negative integer (milliseconds)."})

    # No row lock here: next-task locks the item before the assignment, and
    # taking them in the other order could deadlock; the unique constraint on
    # annotations is what guards against duplicates.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, status, expires_at FROM labelling_assignment WHERE item_id = %s AND annotator_id = %s",
            [item.pk, annotator.pk],
        )
        row = cursor.fetchone()
    assignment = Assignment(id=row[0], status=row[1], expires_at=row[2]) if row else None
    if assignment is None or assignment.status != AssignmentStatus.ACTIVE:
        # Resubmits (and imported labels, which carry no assignment) land here.
        existing = Annotation.objects.filter(item=item, annotator=annotator).first()
        if existing is not None:
            return _same_or_conflict(existing, label)
        raise PermissionDenied("This item is not assigned to you; ask for a task with next-task first.")
    now = timezone.now()
    if assignment.expires_at <= now:
        # The lease lapsed: the slot may have gone to someone else meanwhile.
        # Take the item's row lock (next-task holds it while leasing) and only
        # accept the label while it still fits within k.
        locked = Item.objects.select_for_update().only("id", "n_annotations").get(pk=item.pk)
        others = (
            Assignment.objects.filter(item=item, status=AssignmentStatus.ACTIVE, expires_at__gt=now)
            .exclude(annotator=annotator)
            .count()
        )
        if locked.n_annotations + others >= project.k:
            raise PermissionDenied("Your lease on this item expired and it went to other annotators; get a new task.")

    # One round trip for the three writes (the hot path of the platform).
    with connection.cursor() as cursor:
        cursor.execute(
            _SUBMIT_SQL,
            {
                "project": item.project_id,
                "item": item.pk,
                "annotator": annotator.pk,
                "label": label,
                "time_spent_ms": time_spent_ms,
                "now": now,
                "assignment": assignment.pk,
            },
        )
        row = cursor.fetchone()
    if row is None:
        # A racing duplicate request of the same annotator won; answer like it.
        existing = Annotation.objects.get(item=item, annotator=annotator)
        return _same_or_conflict(existing, label)
    return annotation_inserted(
        annotation_id=row[0],
        project_id=item.project_id,
        item=item,
        item_id=item.pk,
        annotator=annotator,
        label=label,
        time_spent_ms=time_spent_ms,
        now=now,
    )


# The whole happy path of a submit in ONE statement (added for issue 3's load
# target): find the item by external id, check the caller holds an active,
# unexpired lease on it, insert the label, count it and close the lease. No row
# is written unless every condition holds; ``inserted`` is then NULL and the
# caller takes the general path (404/403, idempotent duplicate, 409, lapsed
# lease), which re-reads everything.
def submit_leased_sql(*, annotator: str = "%(annotator)s", prefix: str = "", extra: str = "") -> str:
    """The one-statement submit of ``annotation_submit_leased``.

    ``annotator`` is the SQL for the annotator's id (a parameter, or a
    subquery over ``prefix``: extra CTEs such as the API fast path's token
    lookup, each ending with a comma); ``extra`` adds result columns. The
    statement returns (new annotation id or NULL, item id or NULL, *extra).
    """
    return f"""
WITH {prefix} it AS (
    SELECT id FROM projects_item WHERE project_id = %(project)s AND external_id = %(external_id)s
), lease AS (
    SELECT a.id, a.item_id FROM labelling_assignment a JOIN it ON a.item_id = it.id
    WHERE a.annotator_id = {annotator} AND a.status = 'active' AND a.expires_at > %(now)s
), ins AS (
    INSERT INTO labelling_annotation (project_id, item_id, annotator_id, label, source, time_spent_ms,
                                      created_at, updated_at)
    SELECT %(project)s, lease.item_id, {annotator}, %(label)s, 'web', %(time_spent_ms)s, %(now)s, %(now)s
    FROM lease
    ON CONFLICT (item_id, annotator_id) DO NOTHING
    RETURNING id, item_id
), counted AS (
    UPDATE projects_item SET n_annotations = n_annotations + 1 WHERE id = (SELECT item_id FROM ins)
), closed AS (
    UPDATE labelling_assignment SET status = 'done'
    WHERE id = (SELECT id FROM lease) AND EXISTS (SELECT 1 FROM ins)
)
SELECT (SELECT id FROM ins), (SELECT id FROM it){extra}
"""


@functools.cache
def _submit_fast_sql(listener: hooks.AnnotationListener | None) -> str:
    """``annotation_submit_leased``'s statement with the listener's "work to
    do?" column (``hooks.due_sql``). Built on first use and cached per listener,
    not at import: ``live`` registers its listener in ``ready()``, possibly
    after this module was imported."""
    return submit_leased_sql(extra=", " + hooks.due_sql(inserted_id="(SELECT id FROM ins)", listener=listener))


def annotation_submit_leased(
    *, project: Project, external_id: str, annotator: User, label: str, time_spent_ms: int | None = None
) -> Annotation | None:
    """The common case of a submit in one round trip: a new label for an item
    the annotator holds an active, unexpired lease on.

    Returns the new annotation (``was_created`` True, ``item`` without its
    content, ``item_external_id`` set), or ``None`` when that is not the case
    and nothing was written; the caller then looks the item up and calls
    ``annotation_submit``, which decides between 404/403, idempotent
    duplicate, 409 and a lapsed lease. Label and ``time_spent_ms`` are
    validated here exactly as there.

    Not ``@transaction.atomic`` on purpose: the work is one statement, which
    PostgreSQL runs atomically on its own, and BEGIN/COMMIT would double the
    round trips of the platform's hottest request. Inside a caller's
    transaction it simply joins it (and the trigger waits for that commit).
    """
    validate_label(project=project, label=label)
    if time_spent_ms is not None and (not isinstance(time_spent_ms, int) or time_spent_ms < 0):
        raise ValidationError({"time_spent_ms": "must be a non-negative integer (milliseconds)."})
    now = timezone.now()
    with prepared_cursor() as cursor:
        cursor.execute(
            _submit_fast_sql(hooks.listener()),
            {
                "project": project.pk,
                "external_id": external_id,
                "annotator": annotator.pk,
                "label": label,
                "time_spent_ms": time_spent_ms,
                "now": now,
            },
        )
        annotation_id, item_id, threshold_due = cursor.fetchone()
    if annotation_id is None:
        return None
    annotation = annotation_inserted(
        annotation_id=annotation_id,
        project_id=project.pk,
        item=None,
        item_id=item_id,
        annotator=annotator,
        label=label,
        time_spent_ms=time_spent_ms,
        now=now,
        threshold_due=threshold_due,
    )
    annotation.item_external_id = external_id  # type: ignore[attr-defined]
    return annotation


def annotation_inserted(
    *,
    annotation_id: int,
    project_id: int,
    item: Item | None,
    item_id: int,
    annotator: User,
    label: str,
    time_spent_ms: int | None,
    now: dt.datetime,
    threshold_due: bool | None = None,
) -> Annotation:
    """The Annotation a raw INSERT just wrote (no re-read), marked ``was_created``,
    with the annotation listener told (``hooks.annotations_stored``: live
    inference checks its threshold after commit) when the statement's own
    column (``hooks.due_sql``) said so, or always when the statement had none
    (``threshold_due=None``)."""
    annotation = Annotation(
        id=annotation_id,
        project_id=project_id,
        item_id=item_id,
        annotator=annotator,
        label=label,
        source=AnnotationSource.WEB,
        time_spent_ms=time_spent_ms,
        created_at=now,
        updated_at=now,
    )
    if item is not None:
        annotation.item = item
    if threshold_due is None or threshold_due:
        hooks.annotations_stored(project_id=project_id)
    annotation.was_created = True
    return annotation


def _same_or_conflict(existing: Annotation, label: str) -> Annotation:
    if existing.label != label:
        raise AnnotationConflict(existing, label)
    existing.was_created = False
    return existing


@transaction.atomic
def annotation_update(*, annotation: Annotation, label: str, annotator: User | None = None) -> Annotation:
    """Change a label explicitly; the previous one is kept as an ``AnnotationRevision``."""
    if annotator is not None and annotation.annotator_id != annotator.pk:
        raise PermissionDenied("You can only change your own annotations.")
    annotation = Annotation.objects.select_for_update().select_related("project").get(pk=annotation.pk)
    validate_label(project=annotation.project, label=label)
    if annotation.label == label:
        return annotation
    AnnotationRevision.objects.create(annotation=annotation, old_label=annotation.label, new_label=label)
    annotation.label = label
    annotation.save(update_fields=["label", "updated_at"])
    return annotation


# Added by "front" (issue 6): the labelling page's U key.
UNDO_GRACE_SECONDS = 10


@transaction.atomic
def annotation_undo(*, project: Project, annotator: User, grace_seconds: int = UNDO_GRACE_SECONDS) -> Assignment:
    """Take back the annotator's newest web annotation in ``project`` if it is
    younger than ``grace_seconds``, and hand its item back to them.

    The annotation row (and any revision) is deleted, ``Item.n_annotations`` is
    decremented with ``F()``, and the item's assignment becomes the annotator's
    active lease again; any other lease they held (the item shown after the
    submit) is expired so it returns to the pool and ``next_task`` answers the
    undone item. Returns that assignment. ``ValidationError`` naming
    ``annotation`` when there is nothing to undo.
    """
    # Serialise with next_task/submit of the same annotator (next_task locks the membership row).
    Membership.objects.select_for_update().filter(project=project, user=annotator).only("id").first()
    now = timezone.now()
    annotation = (
        Annotation.objects.select_for_update()
        .filter(project=project, annotator=annotator, source="web")
        .order_by("-created_at", "-id")
        .first()
    )
    if annotation is None:
        raise ValidationError({"annotation": "you have no label in this project to undo."})
    if annotation.created_at < now - dt.timedelta(seconds=grace_seconds):
        raise ValidationError(
            {"annotation": f"your last label is older than {grace_seconds} s and can no longer be undone here."}
        )
    item_id = annotation.item_id
    annotation.delete()
    Item.objects.filter(pk=item_id).update(n_annotations=F("n_annotations") - 1)
    Assignment.objects.filter(project=project, annotator=annotator, status=AssignmentStatus.ACTIVE).exclude(
        item_id=item_id
    ).update(expires_at=now)
    assignment, _ = Assignment.objects.update_or_create(
        item_id=item_id,
        annotator=annotator,
        defaults={
            "project": project,
            "status": AssignmentStatus.ACTIVE,
            "expires_at": now + dt.timedelta(seconds=project.lease_seconds),
        },
    )
    return Assignment.objects.select_related("item").get(pk=assignment.pk)
