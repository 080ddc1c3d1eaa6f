"""The export's format, rendered row by row in Python: the reference that the
COPY statements of ``crowdlab.results.export`` are checked against.

It was crowdlab's second export path while SQLite was supported; production
now has only PostgreSQL's COPY, so this lives with the tests (issue 15).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any, TypedDict

from django.db.models import Count, FilteredRelation, Q, QuerySet

from crowdlab.labelling.models import Annotation
from crowdlab.projects.models import Item, Project
from crowdlab.results.export import (
    EXPORT_CONTENT_TYPES,
    EXPORT_FORMATS,
    FORMULA_TRIGGERS,
    csv_header,
    latest_published_run,
)
from crowdlab.results.models import AggregatedLabel, GeneratedAnnotation, InferenceRun, LabelSource

CHUNK_SIZE = 2_000  # rows fetched per server-side cursor round trip
ROWS_PER_WRITE = 500  # rows joined into one chunk
AGGREGATED_KIND = "aggregated"
GENERATED_KIND = "generated"


class ExportRow(TypedDict):
    item: str
    label: str | None
    confidence: float | None
    # None for a class the run's probability vector does not reach.
    probabilities: dict[str, float | None] | None
    n_annotations: int
    run_id: int | None
    source: str | None


class GeneratedExportRow(TypedDict):
    kind: str
    item: str
    annotator: str
    label: str
    probability: float
    run_id: int


def csv_text(value: str) -> str:
    """A user-text cell as the CSV export writes it: ``'`` before a formula trigger."""
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value


_LATEST = object()  # export_rows(run=...) default: look the newest published run up


def _vote_counts(*, project: Project, run: InferenceRun | None) -> Iterator[tuple[int, str, int]]:
    """(item id, label, votes) ordered by item id, for items the run does not cover."""
    annotations = Annotation.objects.filter(project=project)
    if run is not None:
        annotations = annotations.exclude(item_id__in=AggregatedLabel.objects.filter(run=run).values("item_id"))
    return (
        annotations.values("item_id", "label")
        .annotate(votes=Count("id"))
        .order_by("item_id", "label")
        .values_list("item_id", "label", "votes")
        .iterator(chunk_size=CHUNK_SIZE)
    )


def _item_rows(*, project: Project, run: InferenceRun | None) -> QuerySet[Item, tuple[Any, ...]]:
    """(id, external_id, n_annotations) of each item in id order and, with a run, that
    run's (label, confidence, probabilities, source) for it: all None where it has none."""
    items = Item.objects.filter(project=project).order_by("id")
    if run is None:
        return items.values_list("id", "external_id", "n_annotations")
    return items.annotate(
        agg=FilteredRelation("aggregated_labels", condition=Q(aggregated_labels__run_id=run.pk))
    ).values_list(
        "id", "external_id", "n_annotations", "agg__label", "agg__confidence", "agg__probabilities", "agg__source"
    )


def export_rows(*, project: Project, run: Any = _LATEST) -> Iterator[ExportRow]:
    """Every item of ``project`` with its exported label, streamed.

    ``run`` pins the run (None: majority votes only); by default the newest published one.
    """
    class_names = project.class_names
    class_rank = {name: rank for rank, name in enumerate(class_names)}
    if run is _LATEST:
        run = latest_published_run(project=project)
    run_id = run.pk if run is not None else None

    rows = _item_rows(project=project, run=run)
    votes = _vote_counts(project=project, run=run)
    pending = next(votes, None)
    for values in rows.iterator(chunk_size=CHUNK_SIZE):
        item_id, external_id, n_annotations = values[0], values[1], values[2]
        if run is not None and values[3] is not None:
            probabilities = values[5] or []
            yield {
                "item": external_id,
                "label": values[3],
                "confidence": values[4],
                "probabilities": {
                    name: probabilities[rank] if rank < len(probabilities) else None
                    for rank, name in enumerate(class_names)
                },
                "n_annotations": n_annotations,
                "run_id": run_id,
                "source": values[6],
            }
            continue
        # Majority vote over this item's human labels, if it has any.
        counts: dict[str, int] = {}
        while pending is not None and pending[0] <= item_id:
            if pending[0] == item_id:
                counts[pending[1]] = pending[2]
            pending = next(votes, None)
        if not counts:
            yield {
                "item": external_id,
                "label": None,
                "confidence": None,
                "probabilities": None,
                "n_annotations": n_annotations,
                "run_id": None,
                "source": None,
            }
            continue
        total = sum(counts.values())
        # Most votes first; ties go to the class listed first in the project.
        label = min(counts, key=lambda name: (-counts[name], class_rank.get(name, len(class_rank)), name))
        yield {
            "item": external_id,
            "label": label,
            "confidence": counts[label] / total,
            "probabilities": {name: counts.get(name, 0) / total for name in class_names},
            "n_annotations": n_annotations,
            "run_id": None,
            "source": LabelSource.CROWD.value,
        }


def generated_export_rows(*, run: InferenceRun | None) -> Iterator[GeneratedExportRow]:
    """The run's generated annotations in (item id, annotator id) order, streamed."""
    if run is None:
        return
    rows = (
        GeneratedAnnotation.objects.filter(run_id=run.pk)
        .order_by("item_id", "annotator_id", "id")
        .values_list("item__external_id", "annotator__username", "label", "probability")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    for external_id, username, label, probability in rows:
        yield {
            "kind": GENERATED_KIND,
            "item": external_id,
            "annotator": username,
            "label": label,
            "probability": probability,
            "run_id": run.pk,
        }


def _chunked(lines: Iterator[str]) -> Iterator[str]:
    buffer: list[str] = []
    for line in lines:
        buffer.append(line)
        if len(buffer) >= ROWS_PER_WRITE:
            yield "".join(buffer)
            buffer.clear()
    if buffer:
        yield "".join(buffer)


def render_csv(
    rows: Iterator[ExportRow],
    class_names: list[str],
    generated: Iterator[GeneratedExportRow] | None = None,
) -> Iterator[str]:
    """CSV with one ``p:<class>`` column per class; empty cells for nulls.

    With ``generated`` (even empty), the ``kind`` column and the generated rows are added.
    """
    out = io.StringIO()
    # Rows end in "\r\n" in the writer so that it quotes every cell holding a
    # carriage return (with "\n" alone it leaves a bare \r in an unquoted cell,
    # which no CSV reader reads back); each row's own "\r\n" becomes "\n", as COPY writes.
    writer = csv.writer(out, lineterminator="\r\n")
    with_kind = generated is not None

    def row_text(cells: list[Any]) -> str:
        writer.writerow(cells)
        # Drained after every row so the buffer never grows with the export.
        text = out.getvalue()
        out.seek(0)
        out.truncate()
        return text[:-2] + "\n"

    def lines() -> Iterator[str]:
        yield row_text(csv_header(class_names, generated=with_kind))
        for row in rows:
            probabilities = row["probabilities"]
            cells = [
                csv_text(row["item"]),
                csv_text(row["label"]) if row["label"] is not None else "",
                row["confidence"] if row["confidence"] is not None else "",
                *(
                    (probabilities.get(name, "") for name in class_names)
                    if probabilities is not None
                    else ("" for _ in class_names)
                ),
                row["n_annotations"],
                row["run_id"] if row["run_id"] is not None else "",
                row["source"] or "",
            ]
            yield row_text([AGGREGATED_KIND, *cells, "", ""] if with_kind else cells)
        for g in generated or ():
            yield row_text(
                [
                    GENERATED_KIND,
                    csv_text(g["item"]),
                    csv_text(g["label"]),
                    "",
                    *("" for _ in class_names),
                    "",
                    g["run_id"],
                    GENERATED_KIND,
                    csv_text(g["annotator"]),
                    g["probability"],
                ]
            )

    return _chunked(lines())


def _with_kind(rows: Iterator[ExportRow], generated: Iterator[GeneratedExportRow] | None) -> Iterator[dict[str, Any]]:
    """Without generated rows: the rows as they are. With them: ``kind`` on every row."""
    if generated is None:
        yield from rows  # type: ignore[misc]
        return
    for row in rows:
        yield {"kind": AGGREGATED_KIND, **row}
    yield from generated  # type: ignore[misc]


def render_jsonl(rows: Iterator[Any]) -> Iterator[str]:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    return _chunked(dumps(row) + "\n" for row in rows)


def render_json(rows: Iterator[Any]) -> Iterator[str]:
    """A JSON array written element by element: valid JSON once the stream ends."""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def lines() -> Iterator[str]:
        yield "["
        first = True
        for row in rows:
            yield ("\n" if first else ",\n") + dumps(row)
            first = False
        yield "\n]\n"

    return _chunked(lines())


def render_export(*, project: Project, fmt: str, generated: bool = False) -> Iterator[str]:
    """The export of ``project`` in ``fmt`` as text chunks, built in Python: the reference that the
    COPY statements (``export_stream``) are tested against, row for row."""
    if fmt not in EXPORT_CONTENT_TYPES:
        raise ValueError(f"export format {fmt!r} is not supported; allowed: {', '.join(EXPORT_FORMATS)}.")
    if not generated:
        rows = export_rows(project=project)
        gen_rows: Iterator[GeneratedExportRow] | None = None
    else:
        # One run for both parts, so the generated rows belong to the labels shown.
        run = latest_published_run(project=project)
        rows = export_rows(project=project, run=run)
        gen_rows = generated_export_rows(run=run)
    if fmt == "csv":
        return render_csv(rows, project.class_names, gen_rows)
    if fmt == "jsonl":
        return render_jsonl(_with_kind(rows, gen_rows))
    return render_json(_with_kind(rows, gen_rows))
