"""Streamed export of a project's labels as CSV, JSON or JSONL.

One row per item, in item id order:

* ``item``: the item's external id;
* ``label``, ``confidence`` and per-class ``probabilities``;
* ``n_annotations``: the item's current number of human annotations;
* ``run_id`` and ``source`` (``crowd``: aggregated from human labels,
  ``predicted``: the classifier's guess for an item nobody labelled).

Where the labels come from: the newest *published* inference run. Items that
run does not cover (every item before the first run; items added or first
labelled since) fall back to a **majority vote** of their human labels, with
``run_id`` null, the vote shares as probabilities and ties broken by the
project's class order. Items with neither stay with a null label.

**Generated annotations** (``generated=True``, ``?generated=1`` in the API,
``--generated`` in ``manage.py export_labels``): CrowdInG's generated
annotations of the same run follow the item rows, one row each. Every row then
carries ``kind``: ``aggregated`` for the item rows, ``generated`` for the
others, which have the item, the (chosen) ``annotator``'s username, the
generated ``label`` and its ``probability`` and no confidence, class
probabilities or ``n_annotations`` (they are not human labels). Without the flag
the format is unchanged.

**CSV cells of user text are defused** against formula injection (OWASP's
rule): an item id, a label (class names are the requester's text) or an
annotator's username that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return gets a leading ``'``, so a spreadsheet shows it as text instead
of running it. Numbers (confidence, probabilities, counts, ids) and crowdlab's
own words (``source``, ``kind``) are never user text and stay as they are.
JSON and JSONL are verbatim.

PostgreSQL renders every format itself and streams it with ``COPY … TO
STDOUT`` (one query, one snapshot), so memory is flat in the number of rows.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any, Literal

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.http import StreamingHttpResponse
from django.utils.text import slugify

from crowdlab.projects.models import Project

from .models import InferenceRun, RunStatus

ExportFormat = Literal["csv", "json", "jsonl"]
EXPORT_CONTENT_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "jsonl": "application/x-ndjson",
}
EXPORT_FORMATS: tuple[str, ...] = tuple(EXPORT_CONTENT_TYPES)


# A spreadsheet reads a cell starting with one of these as a formula (OWASP,
# "CSV Injection"); tab and carriage return can hide one behind whitespace.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def latest_published_run(*, project: Project) -> InferenceRun | None:
    return (
        InferenceRun.objects.filter(project=project, status=RunStatus.PUBLISHED)
        .order_by("-id")
        .only("id", "project_id", "status")
        .first()
    )


def csv_header(class_names: list[str], *, generated: bool = False) -> list[str]:
    header = [
        "item",
        "label",
        "confidence",
        *(f"p:{name}" for name in class_names),
        "n_annotations",
        "run_id",
        "source",
    ]
    if generated:
        # ``kind`` first, so no consumer can read a generated row as a human-backed label.
        return ["kind", *header, "annotator", "probability"]
    return header


# --------------------------------------------------------------------------- PostgreSQL fast path
#
# The same rows, rendered by PostgreSQL itself and streamed with COPY ... TO
# STDOUT: one query (one snapshot), no per-row Python objects or float
# formatting, and the server sends rows as it produces them, so memory stays
# flat. A row-by-row Python rendering of the same format lives with the tests
# (tests/platform/results/reference_export.py), which check that both agree.

# Items in id order (an in-memory sort, done first), then per item one index probe
# for the run's label (aggregated_unique) and, only where the run has none and
# people labelled the item, one probe of its annotations for the majority
# vote. Nested loops keep the id order, so the first rows leave at once and
# the plan does not depend on how fresh the planner's statistics are.
_ROWS_SQL = """
WITH project_items AS MATERIALIZED (
    -- Materialised, then sorted: the project's rows come from its own index
    -- whatever the planner thinks of a filtered primary-key scan (which reads
    -- the whole table for a small project).
    SELECT id, external_id, n_annotations FROM projects_item WHERE project_id = {project}
),
export_rows AS (
    SELECT i.id, i.external_id, i.n_annotations,
           COALESCE(g.label, mv.label) AS label,
           COALESCE(g.confidence, mv.confidence) AS confidence,
           CASE WHEN g.label IS NOT NULL THEN {run} END AS run_id,
           CASE WHEN g.label IS NOT NULL THEN g.source WHEN mv.label IS NOT NULL THEN 'crowd' END AS source,
           g.probabilities AS run_probs, mv.counts, mv.total
    FROM (SELECT id, external_id, n_annotations FROM project_items ORDER BY id) i
    LEFT JOIN LATERAL (
        SELECT label, confidence, probabilities, source FROM results_aggregatedlabel
        WHERE run_id = {run} AND item_id = i.id
        LIMIT 1
    ) g ON true
    LEFT JOIN LATERAL (
        SELECT (array_agg(v.label ORDER BY v.n DESC,
                          COALESCE(array_position({classes}::text[], v.label), 2147483647), v.label))[1] AS label,
               max(v.n)::float8 / sum(v.n)::float8 AS confidence,
               jsonb_object_agg(v.label, v.n) AS counts,
               sum(v.n)::float8 AS total
        FROM (
            SELECT a.label, count(*) AS n FROM labelling_annotation a
            WHERE a.item_id = i.id AND g.label IS NULL AND i.n_annotations > 0
            GROUP BY a.label
        ) v
        HAVING count(*) > 0
    ) mv ON true
)
"""

_JSON_ROW_SQL = """
'{{{kind}"item":' || to_json(external_id)::text
|| ',"label":' || COALESCE(to_json(label)::text, 'null')
|| ',"confidence":' || COALESCE(confidence::text, 'null')
|| ',"probabilities":' || CASE
       WHEN run_probs IS NOT NULL THEN {run_object}
       WHEN counts IS NOT NULL THEN {vote_object}
       ELSE 'null' END
|| ',"n_annotations":' || n_annotations
|| ',"run_id":' || COALESCE(run_id::text, 'null')
|| ',"source":' || COALESCE(to_json(source)::text, 'null') || '}}'
"""


# ``csv_text`` in SQL, for the COPY renderer. ``ascii()`` is the code of the
# first character (0 for an empty string; NULL stays NULL, an empty cell): it
# allocates nothing and cost half of ``left(…, 1) IN (…)`` per cell (measured
# on 2M rows), which keeps the CSV export's cost within a few per cent.
_SQL_TRIGGER_CODES = ", ".join(str(ord(trigger)) for trigger in FORMULA_TRIGGERS)


def _sql_csv_text(column: str) -> str:
    return f"CASE WHEN ascii({column}) IN ({_SQL_TRIGGER_CODES}) THEN '''' || {column} ELSE {column} END"


def _copy_statement(*, fmt: str, n_classes: int, generated: bool = False) -> tuple[str, str]:
    """The COPY statement (with pyformat placeholders) and its options."""
    base = _ROWS_SQL.format(classes="%(classes)s", project="%(project)s", run="%(run)s::bigint")
    if fmt == "csv":
        probability_columns = ", ".join(
            f"CASE WHEN run_probs IS NOT NULL THEN run_probs->>{rank} "
            f"WHEN counts IS NOT NULL THEN (COALESCE((counts->>%(class{rank})s)::float8, 0) / total)::text END"
            for rank in range(n_classes)
        )
        kind, extra = ("'aggregated', ", ", NULL, NULL") if generated else ("", "")
        select = (
            f"SELECT {kind}{_sql_csv_text('external_id')}, {_sql_csv_text('label')}, confidence, {probability_columns}, "
            f"n_annotations, run_id, source{extra} "
            "FROM export_rows ORDER BY id"
        )
        return f"COPY ({base} {select}) TO STDOUT WITH (FORMAT csv)", "csv"
    # JSON text never holds raw control characters (to_json escapes them), so a
    # CSV COPY whose quote and delimiter are control characters passes it verbatim.
    # The probability objects are spelt out class by class (keys JSON-encoded
    # in Python and bound as literals) rather than aggregated in a per-row
    # subquery, which would cost a sub-plan per row.
    run_object = " || ',' || ".join(
        f"%(key{rank})s || COALESCE(run_probs->>{rank}, 'null')" for rank in range(n_classes)
    )
    vote_object = " || ',' || ".join(
        f"%(key{rank})s || (COALESCE((counts->>%(class{rank})s)::float8, 0) / total)::text" for rank in range(n_classes)
    )
    row = _JSON_ROW_SQL.format(
        kind='"kind":"aggregated",' if generated else "",
        run_object=f"'{{' || {run_object} || '}}'",
        vote_object=f"'{{' || {vote_object} || '}}'",
    )
    select = f"SELECT {row} FROM export_rows ORDER BY id"
    return f"COPY ({base} {select}) TO STDOUT WITH (FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e')", "json"


_GENERATED_FROM_SQL = """
FROM results_generatedannotation g
JOIN projects_item i ON i.id = g.item_id
JOIN {users} u ON u.id = g.annotator_id
WHERE g.run_id = %(run)s::bigint
ORDER BY g.item_id, g.annotator_id, g.id
"""


def _generated_copy_statement(*, fmt: str, n_classes: int) -> str:
    """COPY of the run's generated annotations, in the export's format."""
    from_sql = _GENERATED_FROM_SQL.format(users=connection.ops.quote_name(get_user_model()._meta.db_table))
    if fmt == "csv":
        empties = "NULL, " * (n_classes + 2)  # confidence, p:<class>..., n_annotations
        select = (
            f"SELECT 'generated', {_sql_csv_text('i.external_id')}, {_sql_csv_text('g.label')}, {empties}g.run_id, "
            f"'generated', {_sql_csv_text('u.username')}, g.probability "
            f"{from_sql}"
        )
        return f"COPY ({select}) TO STDOUT WITH (FORMAT csv)"
    row = (
        '\'{"kind":"generated","item":\' || to_json(i.external_id)::text'
        " || ',\"annotator\":' || to_json(u.username)::text"
        " || ',\"label\":' || to_json(g.label)::text"
        " || ',\"probability\":' || g.probability::text"
        " || ',\"run_id\":' || g.run_id::text || '}'"
    )
    return f"COPY (SELECT {row} {from_sql}) TO STDOUT WITH (FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e')"


def _postgres_export(*, project: Project, fmt: str, generated: bool = False) -> Iterator[bytes]:
    class_names = project.class_names
    run = latest_published_run(project=project)
    statement, _ = _copy_statement(fmt=fmt, n_classes=len(class_names), generated=generated)
    statements = [statement]
    if generated and run is not None:
        # The same run id as the item rows: its generated rows never change once published.
        statements.append(_generated_copy_statement(fmt=fmt, n_classes=len(class_names)))
    params: dict[str, Any] = {
        "classes": class_names,
        "project": project.pk,
        "run": run.pk if run is not None else None,
        **{f"class{rank}": name for rank, name in enumerate(class_names)},
        **{f"key{rank}": json.dumps(name, ensure_ascii=False) + ":" for rank, name in enumerate(class_names)},
    }
    if fmt == "csv":
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(csv_header(class_names, generated=generated))
        yield header.getvalue().encode("utf-8")
    elif fmt == "json":
        yield b"[\n"
    buffer: list[bytes] = []
    size = 0
    tail = b""
    # One transaction around the COPY so that SET LOCAL ends with it, also when
    # the client goes away mid-download (the generator is closed, the
    # transaction rolls back). Parallel workers only delay the first row of a
    # streamed, index-probing plan, and the id sort should stay in memory.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cursor.execute("SET LOCAL work_mem = '64MB'")
        for current in statements:
            with cursor.cursor.copy(current, params) as copy:
                for block in copy:
                    # JSON: every row ends in "\n"; making that ",\n" turns the
                    # lines into array elements (the very last ",\n" is dropped).
                    data = bytes(block).replace(b"\n", b",\n") if fmt == "json" else bytes(block)
                    buffer.append(data)
                    size += len(data)
                    # COPY sends one message per row; join them into ~64 KiB chunks.
                    if size >= 1 << 16:
                        chunk = tail + b"".join(buffer)
                        buffer.clear()
                        size = 0
                        if fmt == "json":
                            chunk, tail = chunk[:-2], chunk[-2:]
                        yield chunk
    chunk = tail + b"".join(buffer)
    if fmt == "json":
        yield chunk[:-2] + (b"\n]\n" if chunk else b"]\n")
    elif chunk:
        yield chunk


def export_stream(*, project: Project, fmt: str, generated: bool = False) -> Iterator[bytes]:
    """The export as UTF-8 byte chunks, streamed by PostgreSQL's COPY."""
    if fmt not in EXPORT_CONTENT_TYPES:
        raise ValueError(f"export format {fmt!r} is not supported; allowed: {', '.join(EXPORT_FORMATS)}.")
    return _postgres_export(project=project, fmt=fmt, generated=generated)


def export_filename(*, project: Project, fmt: str) -> str:
    return f"{slugify(project.name) or 'project'}-{project.pk}-labels.{fmt}"


def export_response(*, project: Project, fmt: str, generated: bool = False) -> StreamingHttpResponse:
    """A streamed download of the export (the caller checked permissions)."""
    response = StreamingHttpResponse(
        export_stream(project=project, fmt=fmt, generated=generated), content_type=EXPORT_CONTENT_TYPES[fmt]
    )
    response["Content-Disposition"] = f'attachment; filename="{export_filename(project=project, fmt=fmt)}"'
    # Proxies (nginx) must not buffer a long download into memory or disk.
    response["X-Accel-Buffering"] = "no"
    response["Cache-Control"] = "no-store"
    return response


def export_to_file(*, project: Project, fmt: str, out: Any, generated: bool = False) -> int:
    """Write the export to a text file object; returns the number of bytes."""
    written = 0
    for chunk in export_stream(project=project, fmt=fmt, generated=generated):
        # Chunks end on row boundaries, so each one decodes on its own.
        out.write(chunk.decode("utf-8"))
        written += len(chunk)
    return written
