"""Reads the web UI needs on top of the apps' own selectors.

Everything here takes a project the caller has already authorised (through
``projects.selectors.project_get_for_owner`` / ``project_get_for_annotator``);
these functions only shape data for pages and charts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Count, F, FloatField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Cast, TruncDay, TruncHour

from crowdlab.labelling.models import Annotation
from crowdlab.projects.models import Item, Project
from crowdlab.results.models import AggregatedLabel, AnnotatorConfusion, InferenceRun
from crowdlab.results.selectors import (
    annotator_statistics,
    common_confusion_for_run,
    confusions_for_run,
    generated_for_run,
    latest_published_run,
)

# ---------------------------------------------------------------------------- progress


def items_by_label_count(*, project: Project) -> dict[str, list[Any]]:
    """Histogram of items by number of human labels: 0, 1, ..., max(k, observed)."""
    counts = dict(Item.objects.filter(project=project).values_list("n_annotations").annotate(n=Count("id")).order_by())
    top = max([project.k, *counts.keys()]) if counts else project.k
    return {"labels": [str(n) for n in range(top + 1)], "values": [counts.get(n, 0) for n in range(top + 1)]}


def annotations_over_time(*, project: Project) -> dict[str, Any]:
    """Annotations per hour (spans up to 3 days) or per day, as a chart series."""
    annotations = Annotation.objects.filter(project=project)
    bounds = annotations.order_by("created_at").values_list("created_at", flat=True)
    first = bounds.first()
    if first is None:
        return {"labels": [], "values": [], "unit": "day"}
    last = annotations.order_by("-created_at").values_list("created_at", flat=True).first()
    hourly = last is not None and last - first <= timedelta(days=3)
    trunc = TruncHour("created_at") if hourly else TruncDay("created_at")
    rows = annotations.annotate(bucket=trunc).values("bucket").annotate(n=Count("id")).order_by("bucket")
    fmt = "%Y-%m-%d %H:00" if hourly else "%Y-%m-%d"
    return {
        "labels": [row["bucket"].strftime(fmt) for row in rows],
        "values": [row["n"] for row in rows],
        "unit": "hour" if hourly else "day",
    }


@dataclass(frozen=True)
class ProjectProgress:
    n_items: int
    n_complete: int
    n_annotations: int
    n_annotators: int

    @property
    def percent_complete(self) -> float:
        return 100.0 * self.n_complete / self.n_items if self.n_items else 0.0


def project_progress(*, project: Project) -> ProjectProgress:
    items = Item.objects.filter(project=project).aggregate(
        n=Count("id"), complete=Count("id", filter=Q(n_annotations__gte=project.k))
    )
    annotations = Annotation.objects.filter(project=project).aggregate(
        n=Count("id"), people=Count("annotator_id", distinct=True)
    )
    return ProjectProgress(
        n_items=items["n"],
        n_complete=items["complete"],
        n_annotations=annotations["n"],
        n_annotators=annotations["people"],
    )


def annotator_project_progress(*, user: User, projects: QuerySet[Project]) -> list[dict[str, Any]]:
    """For the annotator's home page: their own count per project, nothing about others."""
    own = dict(
        Annotation.objects.filter(annotator=user, project__in=projects)
        .values_list("project_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    return [{"project": project, "done": own.get(project.pk, 0)} for project in projects]


# ---------------------------------------------------------------------------- results table


def results_table(
    *,
    run: InferenceRun,
    label: str | None = None,
    max_confidence: float | None = None,
    max_agreement: float | None = None,
    disagreement: bool = False,
    source: str | None = None,
) -> QuerySet[AggregatedLabel]:
    """The run's labels with ``n_agree`` (human labels equal to the aggregate)
    and ``agreement`` (their share), filtered for the results page.

    ``disagreement`` keeps items where at least one annotator gave another
    label; ``max_agreement`` keeps items whose agreement is at most that share.
    """
    agree = (
        Annotation.objects.filter(item_id=OuterRef("item_id"), label=OuterRef("label"))
        .order_by()
        .values("item_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    qs = (
        AggregatedLabel.objects.filter(run=run)
        .select_related("item")
        .annotate(n_agree=Subquery(agree[:1]), n_human=F("item__n_annotations"))
        .order_by("item_id")
    )
    if label:
        qs = qs.filter(label=label)
    if source:
        qs = qs.filter(source=source)
    if max_confidence is not None:
        qs = qs.filter(confidence__lte=max_confidence)
    if disagreement:
        qs = qs.filter(n_human__gt=0).filter(Q(n_agree__isnull=True) | Q(n_agree__lt=F("n_human")))
    if max_agreement is not None:
        qs = (
            qs.filter(n_human__gt=0)
            .annotate(agreement_share=Cast(F("n_agree"), FloatField()) / Cast(F("n_human"), FloatField()))
            .filter(Q(n_agree__isnull=True) | Q(agreement_share__lte=max_agreement))
        )
    return qs


def generated_by_item(*, run: InferenceRun, item_ids: list[int]) -> dict[int, list[Any]]:
    """The run's CrowdInG-generated annotations of these items (one page), by item id."""
    grouped: dict[int, list[Any]] = {}
    for generated in generated_for_run(run=run).filter(item_id__in=item_ids):
        grouped.setdefault(generated.item_id, []).append(generated)
    return grouped


# ---------------------------------------------------------------------------- dashboards


@dataclass
class AnnotatorRow:
    annotator_id: int
    username: str
    n_annotations: int
    learned_accuracy: float | None
    agreement: float | None
    mean_omega: float | None
    gold_accuracy: float | None
    n_gold: int


SORT_KEYS = ("username", "n_annotations", "learned_accuracy", "agreement", "mean_omega", "gold_accuracy")


def annotator_table(*, project: Project, sort: str = "-n_annotations") -> list[AnnotatorRow]:
    """One row per annotator with labels given, learned accuracy, agreement with
    the aggregate, mean ω and accuracy on gold; sorted by ``sort`` (a name of
    ``SORT_KEYS``, ``-`` for descending; missing values always last)."""
    run = latest_published_run(project)
    omegas: dict[int, float | None] = {}
    if run is not None:
        omegas = dict(AnnotatorConfusion.objects.filter(run=run).values_list("annotator_id", "omega"))
    gold = {
        row["annotator_id"]: (row["n"], row["correct"])
        for row in Annotation.objects.filter(project=project, item__gold_label__isnull=False)
        .exclude(item__gold_label="")
        .values("annotator_id")
        .annotate(n=Count("id"), correct=Count("id", filter=Q(label=F("item__gold_label"))))
        .order_by()
    }
    rows = []
    for stats in annotator_statistics(project=project):
        n_gold, correct = gold.get(stats.annotator_id, (0, 0))
        rows.append(
            AnnotatorRow(
                annotator_id=stats.annotator_id,
                username=stats.username,
                n_annotations=stats.n_annotations,
                learned_accuracy=stats.learned_accuracy,
                agreement=stats.agreement,
                mean_omega=omegas.get(stats.annotator_id),
                gold_accuracy=(correct / n_gold) if n_gold else None,
                n_gold=n_gold,
            )
        )
    key = sort.lstrip("-")
    if key not in SORT_KEYS:
        raise ValueError(f"sort: {sort!r} is not a column; allowed: {', '.join(SORT_KEYS)} (prefix - to reverse).")
    descending = sort.startswith("-")
    present = [row for row in rows if getattr(row, key) is not None]
    missing = [row for row in rows if getattr(row, key) is None]
    present.sort(key=lambda row: (getattr(row, key), row.username), reverse=descending)
    return present + missing


@dataclass
class CommonConfusionView:
    matrix: list[list[float]] | None
    learned: bool  # True: the model's common confusion; False: mean of annotator confusions
    pairs: list[tuple[str, str, float]] = field(default_factory=list)


def common_confusion(*, project: Project, run: InferenceRun, top: int = 8) -> CommonConfusionView:
    """The run's common confusion (CoNAL); for models without one, the
    annotation-weighted mean of the annotators' confusions, labelled as such."""
    common = common_confusion_for_run(run=run)
    if common is not None:
        matrix, learned = common.matrix, True
    else:
        confusions = list(confusions_for_run(run=run).values_list("matrix", "n_annotations"))
        total = sum(n for _, n in confusions)
        if not confusions or total == 0:
            return CommonConfusionView(matrix=None, learned=False)
        size = len(confusions[0][0])
        matrix = [[sum(m[i][j] * n for m, n in confusions) / total for j in range(size)] for i in range(size)]
        learned = False
    names = project.class_names
    pairs = [
        (names[i], names[j], float(matrix[i][j]))
        for i in range(min(len(names), len(matrix)))
        for j in range(min(len(names), len(matrix[i])))
        if i != j
    ]
    pairs.sort(key=lambda pair: -pair[2])
    return CommonConfusionView(matrix=matrix, learned=learned, pairs=pairs[:top])


def dashboard_annotator_get(*, project: Project, annotator_id: int) -> User | None:
    """The user if they labelled in (or are a member of) ``project``."""
    return (
        User.objects.filter(pk=annotator_id)
        .filter(Q(annotations__project=project) | Q(memberships__project=project))
        .distinct()
        .first()
    )


def raw_counts(*, project: Project, annotator: User, run: InferenceRun) -> list[list[int]]:
    """counts[i][j]: the annotator's labels j on items the run aggregated as i."""
    names = project.class_names
    index = {name: i for i, name in enumerate(names)}
    aggregate = AggregatedLabel.objects.filter(run=run, item_id=OuterRef("item_id")).values("label")[:1]
    rows = (
        Annotation.objects.filter(project=project, annotator=annotator)
        .annotate(agg=Subquery(aggregate))
        .values_list("agg", "label")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts = [[0] * len(names) for _ in names]
    for agg, given, n in rows:
        if agg in index and given in index:
            counts[index[agg]][index[given]] += n
    return counts


def omega_histogram(omegas: list[float] | None, bins: int = 10) -> dict[str, list[Any]]:
    """Counts of per-annotation ω in ``bins`` equal bins over [0, 1]."""
    counts = [0] * bins
    for value in omegas or []:
        position = min(bins - 1, max(0, int(float(value) * bins)))
        counts[position] += 1
    return {
        "labels": [f"{i / bins:.1f}–{(i + 1) / bins:.1f}" for i in range(bins)],
        "values": counts,
    }


def recent_labels(*, project: Project, annotator: User, run: InferenceRun | None, limit: int = 20) -> list[Any]:
    qs = (
        Annotation.objects.filter(project=project, annotator=annotator)
        .select_related("item")
        .order_by("-created_at", "-id")
    )
    if run is not None:
        qs = qs.annotate(
            agg=Subquery(AggregatedLabel.objects.filter(run=run, item_id=OuterRef("item_id")).values("label")[:1])
        )
    return list(qs[:limit])


def run_history(*, project: Project) -> dict[str, Any]:
    """Loss curves and accuracy figures of the project's finished runs, oldest first."""
    runs = list(
        InferenceRun.objects.filter(project=project)
        .defer("checkpoint")
        .order_by("id")
        .values(
            "id",
            "model",
            "status",
            "loss_history",
            "metrics",
            "final_loss",
            "timings",
            "created_at",
            "n_annotations",
            "fit_mode",
            "fit_reason",
            "features",
            "warm_start_from",
            "cold_refit",
            "trigger",
        )
    )
    published = [run for run in runs if run["status"] == "published"]
    return {
        "runs": runs,
        "loss": [
            {"label": f"run {run['id']} ({run['model']})", "data": list(run["loss_history"] or [])}
            for run in published
            if run["loss_history"]
        ],
        "accuracy": {
            "labels": [f"run {run['id']}" for run in published],
            "agreement_with_mv": [run["metrics"].get("agreement_with_mv") for run in published],
            "gold_accuracy": [run["metrics"].get("gold_accuracy") for run in published],
        },
    }
