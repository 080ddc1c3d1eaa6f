"""Token fast paths for the two requests annotators make most: submit a label
and lease the next item (issue 3's load targets).

Each fast path answers only the common success case and answers it exactly as
the DRF view does (same status, keys and formats; ``tests/platform/api``
compares them): authentication, membership, the label check and the write run
in ONE SQL statement (submit) or in the statement that locks the membership
(next task), without DRF's request/negotiation/permission machinery, which cost
more CPU than the database work. Anything else (session auth, an unknown token,
an inactive user, an outsider, an invalid label, an item without the caller's
lease, a duplicate, a body the serializer would word an error for or trim)
makes the fast path return ``None`` having written nothing, and the request
goes on to the DRF view, which applies the full rules and words the error.
So the rules have one home, and the fast path can only ever say yes to what
the DRF view would also accept.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from rest_framework.authentication import get_authorization_header
from rest_framework.authtoken.models import Token

from crowdlab import jsonlimits
from crowdlab.db import model_from_row, prepared_cursor, select_columns
from crowdlab.labelling import hooks
from crowdlab.labelling import services as labelling_services
from crowdlab.projects.models import Membership, Project

from .payloads import annotation_payload, plain_submit, task_payload
from .serializers import TaskSerializer

View = Callable[..., HttpResponse]
# A plain submit body is under 1 KB (an item id of at most 255 characters, a
# label, a number); anything larger is left to the DRF view.
_MAX_FAST_BODY = 16 * 1024

_USER = get_user_model()
_PROJECT_FIELDS = list(Project._meta.concrete_fields)

# The caller: an active user holding the token who is a member of the project
# (``u``, ``m`` and the project row ``p``).
_MEMBER_BY_TOKEN = f"""
    FROM {Token._meta.db_table} t
    JOIN {_USER._meta.db_table} u ON u.{_USER._meta.pk.column} = t.user_id
    JOIN {Membership._meta.db_table} m ON m.user_id = u.{_USER._meta.pk.column} AND m.project_id = %(project)s
    JOIN {Project._meta.db_table} p ON p.id = m.project_id
    WHERE t.key = %(key)s AND u.is_active"""

# Label membership in the project's classes is checked here too, so an invalid
# label writes nothing and the DRF view words the 400.
_WHO_SUBMIT = f"""
who AS (
    SELECT u.id, u.username {_MEMBER_BY_TOKEN}
      AND p.classes @> jsonb_build_array(jsonb_build_object('name', %(label)s::text))
),"""


@functools.cache
def _submit_sql(listener: hooks.AnnotationListener | None) -> str:
    """The fast submit's statement, with the annotation listener's "work to do?"
    column (``labelling.hooks``; live inference's threshold check). Cached per
    listener, like ``labelling.services``' own one-statement submit."""
    return labelling_services.submit_leased_sql(
        annotator="(SELECT id FROM who)",
        prefix=_WHO_SUBMIT,
        extra=", (SELECT id FROM who), (SELECT username FROM who), "
        + hooks.due_sql(inserted_id="(SELECT id FROM ins)", listener=listener),
    )


# Authentication, the project row and next_task's membership lock + current
# lease (``labelling.services._MEMBER_LEASE_SQL``) in one statement.
_NEXT_SQL = f"""
SELECT u.{_USER._meta.pk.column}, {labelling_services.CURRENT_LEASE_SQL},
       {select_columns("p", _PROJECT_FIELDS)}
{_MEMBER_BY_TOKEN}
FOR UPDATE OF m
"""


def _token(request: HttpRequest) -> str | None:
    """The key of an ``Authorization: Token <key>`` header, or None for anything
    else (then DRF's ``TokenAuthentication`` parses the header and words errors)."""
    # The stub asks for DRF's Request; the function reads only request.META, which HttpRequest has.
    parts = get_authorization_header(request).split()  # type: ignore[arg-type]
    if len(parts) != 2 or parts[0].lower() != b"token":
        return None
    try:
        return parts[1].decode()
    except UnicodeError:
        return None


def _json(payload: dict[str, Any], status: int) -> HttpResponse:
    # DRF's JSONRenderer defaults: compact, UTF-8 (not ASCII-escaped).
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return HttpResponse(body, status=status, content_type="application/json")


def submit_fast(request: HttpRequest, project_pk: int) -> HttpResponse | None:
    """POST /api/projects/{id}/annotations/ for a new label on a leased item."""
    key = _token(request)
    if key is None or request.content_type != "application/json":
        return None
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > min(
        _MAX_FAST_BODY, settings.DATA_UPLOAD_MAX_MEMORY_SIZE or _MAX_FAST_BODY
    ):
        return None  # not a plain submit: the DRF view reads it (and answers 413 past the upload limit)
    try:
        # Depth-checked before decoding: a hostile body falls through to DRF,
        # whose parser words the 400, instead of recursing here.
        data = plain_submit(jsonlimits.loads(request.body))
    except ValueError:
        return None
    if data is None:
        return None
    now = timezone.now()
    with prepared_cursor() as cursor:
        cursor.execute(
            _submit_sql(hooks.listener()),
            {
                "key": key,
                "project": project_pk,
                "external_id": data["item"],
                "label": data["label"],
                "time_spent_ms": data["time_spent_ms"],
                "now": now,
            },
        )
        annotation_id, item_id, annotator_id, username, threshold_due = cursor.fetchone()
    if annotation_id is None:
        return None
    annotation = labelling_services.annotation_inserted(
        annotation_id=annotation_id,
        project_id=project_pk,
        item=None,
        item_id=item_id,
        annotator=_USER(pk=annotator_id, username=username),
        label=data["label"],
        time_spent_ms=data["time_spent_ms"],
        now=now,
        threshold_due=threshold_due,
    )
    return _json(annotation_payload(annotation, external_id=data["item"], username=username), 201)


def next_task_fast(request: HttpRequest, project_pk: int) -> HttpResponse | None:
    """POST /api/projects/{id}/next-task/ for a member with a token."""
    key = _token(request)
    if key is None:
        return None
    now = timezone.now()
    with transaction.atomic():
        with prepared_cursor() as cursor:
            cursor.execute(_NEXT_SQL, {"key": key, "project": project_pk, "now": now})
            row = cursor.fetchone()
        if row is None:
            return None
        annotator_id, current_assignment_id, *project_values = row
        project = model_from_row(Project, _PROJECT_FIELDS, project_values)
        assignment = labelling_services.next_task_for_locked_member(
            project=project, annotator_id=annotator_id, current_assignment_id=current_assignment_id, now=now
        )
    if assignment is None:
        return HttpResponse(status=204)
    if assignment.item.image:
        # Absolute file URLs need the request: the serializer builds them.
        return _json(TaskSerializer(assignment, context={"request": request}).data, 200)
    return _json(task_payload(assignment), 200)


def with_fast_path(fast: Callable[[HttpRequest, int], HttpResponse | None], view: View) -> View:
    """``view`` (a DRF ``as_view()``) with ``fast`` tried first for POST.

    ``wraps`` keeps the DRF view's attributes (``cls``, ``initkwargs``,
    ``csrf_exempt``) so URL reversing, CSRF handling and the OpenAPI schema
    see the DRF view. CSRF exemption is right for the fast path: it only
    serves token-authenticated requests, which carry no ambient credentials.
    """

    @wraps(view)
    def dispatch(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            response = fast(request, kwargs["project_pk"])
            if response is not None:
                return response
        return view(request, *args, **kwargs)

    return dispatch
