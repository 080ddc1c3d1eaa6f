"""Reads of inference results.

Readers always go through ``latest_published_run`` and then read only that
run's rows: a run's rows are complete before it is flipped to published (in
one transaction), so a reader sees the old results or the new, never a mix.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet

from crowdlab.projects.models import Project

from .models import (
    AggregatedLabel,
    AnnotatorConfusion,
    CommonConfusion,
    GeneratedAnnotation,
    InferenceRun,
    RunStatus,
)

ACTIVE_STATUSES = (RunStatus.PENDING, RunStatus.RUNNING)


def runs_for_project(*, project: Project) -> QuerySet[InferenceRun]:
    """All runs of a project, newest first, without the checkpoint bytes
    (``has_checkpoint_`` tells whether one is stored)."""
    return (
        InferenceRun.objects.filter(project=project)
        .defer("checkpoint")
        .annotate(has_checkpoint_=ExpressionWrapper(Q(checkpoint__isnull=False), output_field=BooleanField()))
        .order_by("-id")
    )


def latest_published_run(project: Project | int) -> InferenceRun | None:
    """The newest published run (highest id) or None before the first one."""
    project_id = project if isinstance(project, int) else project.pk
    return (
        InferenceRun.objects.filter(project_id=project_id, status=RunStatus.PUBLISHED)
        .defer("checkpoint")
        .order_by("-id")
        .first()
    )


def active_run(*, project_id: int) -> InferenceRun | None:
    """The pending or running run of a project (at most one exists)."""
    return InferenceRun.objects.filter(project_id=project_id, status__in=ACTIVE_STATUSES).defer("checkpoint").first()


def last_snapshot_annotation_id(*, project_id: int) -> int | None:
    """The annotation id up to which the newest useful run has read.

    Failed and discarded runs do not count: what they read was never (or is no
    longer) reflected in published results, so their annotations are still new.
    """
    return (
        InferenceRun.objects.filter(project_id=project_id, status=RunStatus.PUBLISHED)
        .order_by("-id")
        .values_list("snapshot_annotation_id", flat=True)
        .first()
    )


def project_max_annotation_id(*, project_id: int) -> int:
    """The newest annotation id of a project (0 without any): what a run that
    stops now has "seen", for the back-off of automatic runs."""
    with connection.cursor() as cursor:
        # Index-only on annotation_project_idx (project_id, id).
        cursor.execute("SELECT COALESCE(MAX(id), 0) FROM labelling_annotation WHERE project_id = %s", [project_id])
        return int(cursor.fetchone()[0])


def automatic_runs_held_by(*, project_id: int) -> InferenceRun | None:
    """The failed or cancelled run that holds automatic runs back, or None.

    Such a run set ``retry_after_annotation_id``: the threshold and the timer
    count only newer annotations (``live.triggers``). It no longer matters once
    a newer run published (that run read at least as far).
    """
    holder = (
        InferenceRun.objects.filter(
            project_id=project_id,
            status__in=(RunStatus.FAILED, RunStatus.CANCELLED),
            retry_after_annotation_id__isnull=False,
        )
        .defer("checkpoint")
        .order_by("-id")
        .first()
    )
    if holder is None:
        return None
    if InferenceRun.objects.filter(project_id=project_id, status=RunStatus.PUBLISHED, id__gt=holder.pk).exists():
        return None
    return holder


def warm_start_run(*, project_id: int, model: str) -> InferenceRun | None:
    """The newest published run of the same model that left a checkpoint."""
    return (
        InferenceRun.objects.filter(
            project_id=project_id, status=RunStatus.PUBLISHED, model=model, checkpoint__isnull=False
        )
        .order_by("-id")
        .first()
    )


def labels_for_run(
    *,
    run: InferenceRun,
    label: str | None = None,
    source: str | None = None,
    min_confidence: float | None = None,
    max_confidence: float | None = None,
) -> QuerySet[AggregatedLabel]:
    qs = AggregatedLabel.objects.filter(run=run).select_related("item").order_by("item_id")
    if label is not None:
        qs = qs.filter(label=label)
    if source is not None:
        qs = qs.filter(source=source)
    if min_confidence is not None:
        qs = qs.filter(confidence__gte=min_confidence)
    if max_confidence is not None:
        qs = qs.filter(confidence__lte=max_confidence)
    return qs


def confusions_for_run(*, run: InferenceRun) -> QuerySet[AnnotatorConfusion]:
    return AnnotatorConfusion.objects.filter(run=run).select_related("annotator").order_by("annotator_id")


def common_confusion_for_run(*, run: InferenceRun) -> CommonConfusion | None:
    return CommonConfusion.objects.filter(run=run).first()


def generated_for_run(
    *,
    run: InferenceRun,
    item_external_id: str | None = None,
    annotator_id: int | None = None,
    label: str | None = None,
) -> QuerySet[GeneratedAnnotation]:
    """CrowdInG's generated annotations of one run (never human annotations)."""
    qs = (
        GeneratedAnnotation.objects.filter(run=run)
        .select_related("item", "annotator")
        .order_by("item_id", "annotator_id", "id")
    )
    if item_external_id is not None:
        qs = qs.filter(item__external_id=item_external_id)
    if annotator_id is not None:
        qs = qs.filter(annotator_id=annotator_id)
    if label is not None:
        qs = qs.filter(label=label)
    return qs


def generated_for_item(*, item_id: int, runs: int = 3) -> QuerySet[GeneratedAnnotation]:
    """An item's generated annotations from the newest ``runs`` published runs (newest first)."""
    run_ids = list(
        InferenceRun.objects.filter(project__items__id=item_id, status=RunStatus.PUBLISHED)
        .order_by("-id")
        .values_list("id", flat=True)[: max(1, runs)]
    )
    return (
        GeneratedAnnotation.objects.filter(item_id=item_id, run_id__in=run_ids)
        .select_related("annotator", "run")
        .order_by("-run_id", "annotator_id")
    )


# Per-annotator statistics: here rather than in ``labelling.selectors`` because
# the agreement is measured against the latest published run (``results``).
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
