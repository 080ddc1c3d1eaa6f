"""Reads of assignments and annotations, scoped by who asks."""
from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import QuerySet

from crowdlab.projects.models import Item, Project
from crowdlab.projects.roles import can_manage_project

from .models import Annotation, Assignment


def annotations_visible_to(*, user: AbstractBaseUser, project: Project) -> QuerySet[Annotation]:
    """Owner/admin: every annotation of the project; anyone else: only their own."""
    queryset = Annotation.objects.filter(project=project).select_related("item", "annotator").order_by("id")
    if can_manage_project(user, project):
        return queryset
    return queryset.filter(annotator=user)


def annotation_get_own(*, user: AbstractBaseUser, project: Project, annotation_id: int) -> Annotation | None:
    return Annotation.objects.filter(project=project, annotator=user, pk=annotation_id).first()


def assignment_get_own(*, user: AbstractBaseUser, project: Project, assignment_id: int) -> Assignment | None:
    return Assignment.objects.filter(project=project, annotator=user, pk=assignment_id).select_related("item").first()


def item_get_by_external_id(*, project: Project, external_id: str) -> Item | None:
    # Raw SQL on the (project, external_id) unique index: submit's hot path.
    found = list(
        Item.objects.raw("SELECT * FROM projects_item WHERE project_id = %s AND external_id = %s", [project.pk, external_id])
    )
    if not found:
        return None
    item = found[0]
    item.project = project  # reuse the caller's instance: no join, no second query
    return item


def annotator_progress(*, user: AbstractBaseUser, project: Project) -> int:
    """How many items ``user`` labelled in ``project`` (their own progress only)."""
    return Annotation.objects.filter(project=project, annotator=user).count()


@dataclass(frozen=True)
class AnnotatorStats:
    annotator_id: int
    username: str
    n_annotations: int
    # Share of the annotator's labels equal to the aggregate, over the items
    # where an aggregate exists (majority vote: items with ≥ 2 labels).
    agreement: float | None
    n_compared: int
    learned_accuracy: float | None
    aggregate_source: str  # "run" (latest published run) or "majority_vote"
    run_id: int | None


_STATS_WITH_RUN_SQL = """
SELECT a.annotator_id, u.username, count(*) AS n,
       count(*) FILTER (WHERE a.label = agg.label) AS agree,
       count(agg.label) AS compared,
       max(c.learned_accuracy) AS acc
FROM labelling_annotation a
JOIN auth_user u ON u.id = a.annotator_id
LEFT JOIN results_aggregatedlabel agg ON agg.item_id = a.item_id AND agg.run_id = %(run)s
LEFT JOIN results_annotatorconfusion c ON c.annotator_id = a.annotator_id AND c.run_id = %(run)s
WHERE a.project_id = %(project)s
GROUP BY a.annotator_id, u.username
ORDER BY a.annotator_id
"""

# Majority vote per item; ties go to the class listed first in the project.
_STATS_MV_SQL = """
WITH counts AS (
    SELECT item_id, label, count(*) AS c, sum(count(*)) OVER (PARTITION BY item_id) AS total
    FROM labelling_annotation WHERE project_id = %(project)s GROUP BY item_id, label
), mv AS (
    SELECT DISTINCT ON (item_id) item_id, label
    FROM counts WHERE total >= 2
    ORDER BY item_id, c DESC, array_position(%(classes)s::text[], label)
)
SELECT a.annotator_id, u.username, count(*) AS n,
       count(*) FILTER (WHERE a.label = mv.label) AS agree,
       count(mv.label) AS compared,
       NULL::double precision AS acc
FROM labelling_annotation a
JOIN auth_user u ON u.id = a.annotator_id
LEFT JOIN mv ON mv.item_id = a.item_id
WHERE a.project_id = %(project)s
GROUP BY a.annotator_id, u.username
ORDER BY a.annotator_id
"""


def latest_published_run_id(*, project: Project) -> int | None:
    from crowdlab.results.models import InferenceRun, RunStatus

    return (
        InferenceRun.objects.filter(project=project, status=RunStatus.PUBLISHED)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )


def annotator_statistics(*, project: Project) -> list[AnnotatorStats]:
    """Per annotator: count, agreement with the aggregate (latest published run,
    or majority vote before any run) and the run's learned accuracy."""
    run_id = latest_published_run_id(project=project)
    with connection.cursor() as cursor:
        if run_id is not None:
            cursor.execute(_STATS_WITH_RUN_SQL, {"project": project.pk, "run": run_id})
        else:
            cursor.execute(_STATS_MV_SQL, {"project": project.pk, "classes": project.class_names})
        rows = cursor.fetchall()
    return [
        AnnotatorStats(
            annotator_id=annotator_id,
            username=username,
            n_annotations=n,
            agreement=(agree / compared) if compared else None,
            n_compared=compared,
            learned_accuracy=acc,
            aggregate_source="run" if run_id is not None else "majority_vote",
            run_id=run_id,
        )
        for annotator_id, username, n, agree, compared, acc in rows
    ]
