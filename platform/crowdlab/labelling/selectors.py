"""Reads of assignments and annotations, scoped by who asks."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db.models import Count, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from crowdlab.projects.models import Item, Membership, Project
from crowdlab.projects.roles import can_manage_project
from crowdlab.projects.selectors import UserLike, projects_visible_to

from .models import Annotation, Assignment


def annotations_visible_to(*, user: User, project: Project) -> QuerySet[Annotation]:
    """Owner/admin: every annotation of the project; anyone else: only their own."""
    queryset = Annotation.objects.filter(project=project).select_related("item", "annotator").order_by("id")
    if can_manage_project(user, project):
        return queryset
    return queryset.filter(annotator=user)


def annotation_get_own(*, user: User, project: Project, annotation_id: int) -> Annotation | None:
    return Annotation.objects.filter(project=project, annotator=user, pk=annotation_id).first()


def assignment_get_own(*, user: User, project: Project, assignment_id: int) -> Assignment | None:
    return Assignment.objects.filter(project=project, annotator=user, pk=assignment_id).select_related("item").first()


def item_get_by_external_id(*, project: Project, external_id: str) -> Item | None:
    # Raw SQL on the (project, external_id) unique index: submit's hot path.
    found = list(
        Item.objects.raw(
            "SELECT * FROM projects_item WHERE project_id = %s AND external_id = %s", [project.pk, external_id]
        )
    )
    if not found:
        return None
    item = found[0]
    item.project = project  # reuse the caller's instance: no join, no second query
    return item


def annotator_progress(*, user: User, project: Project) -> int:
    """How many items ``user`` labelled in ``project`` (their own progress only)."""
    return Annotation.objects.filter(project=project, annotator=user).count()


def projects_with_counts(*, user: UserLike) -> QuerySet[Project]:
    """``projects_visible_to`` annotated with the counts the API shows:
    ``n_items``, ``n_annotations`` (from the denormalised per-item counters, so
    no annotation rows are counted), ``n_members`` and ``my_annotations``
    (the asking user's own labels: the only count annotators see).

    Here rather than in ``projects.selectors`` because it counts annotations,
    which ``projects`` (below ``labelling``) does not know."""

    def per_project(queryset: QuerySet[Any], aggregate: Any) -> Coalesce:
        return Coalesce(Subquery(queryset.values("project").annotate(v=aggregate).values("v")), Value(0))

    items = Item.objects.filter(project=OuterRef("pk"))
    return (
        projects_visible_to(user)
        .select_related("owner")
        .annotate(
            n_items=per_project(items, Count("id")),
            n_annotations=per_project(items, Sum("n_annotations")),
            n_members=per_project(Membership.objects.filter(project=OuterRef("pk")), Count("id")),
            my_annotations=per_project(
                Annotation.objects.filter(project=OuterRef("pk"), annotator_id=user.pk), Count("id")
            ),
        )
        .order_by("-created_at", "-id")
    )
