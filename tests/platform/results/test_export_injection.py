"""Issue 14, item 2: CSV/formula injection in the export.

In every CSV export (API, web download, ``manage.py export_labels``; PostgreSQL
COPY and the Python renderer alike) a user-text cell that starts with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``: item ids,
labels (class names are the requester's text) and annotators' usernames.
Numbers and crowdlab's own words are untouched, and JSON/JSONL stay verbatim.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from crowdlab.projects.models import Item, Project
from crowdlab.projects.services import project_create
from crowdlab.results.export import export_stream
from crowdlab.results.models import AggregatedLabel, LabelSource
from tests.platform.factories import AnnotationFactory, UserFactory, publish_with_generated
from tests.platform.results.reference_export import csv_text, render_export

pytestmark = pytest.mark.django_db

# What a spreadsheet would run, and what it would not (a trigger inside is fine).
FORMULA_IDS = ['=HYPERLINK("http://evil.example/","open")', "+1+2", "-2+3", "@SUM(A1)", "\t=1+1", "\r=1+1"]
PLAIN_IDS = ["plain", "a=b", "x-1", "mail@example.org"]
FORMULA_CLASSES = ["=cmd|' /C calc'!A0", "-neg", "safe"]
FORMULA_USER = "@mallory"  # Django's username rules allow a leading @, + or -


@pytest.fixture
def hostile_project(requester: Any) -> Project:
    """Item ids, class names and a username that a spreadsheet would run as formulas,
    with a published run (aggregated labels and CrowdInG-generated rows) and a
    majority-vote item."""
    project = project_create(owner=requester, name="Hostile", classes=[{"name": name} for name in FORMULA_CLASSES])
    items = {
        external_id: Item.objects.create(project=project, external_id=external_id, text="t")
        for external_id in FORMULA_IDS + PLAIN_IDS
    }
    mallory = UserFactory(username=FORMULA_USER)
    run = publish_with_generated(project, [(items["+1+2"], mallory, "=cmd|' /C calc'!A0", 0.75)])
    for external_id in FORMULA_IDS[:3] + PLAIN_IDS[:2]:
        AggregatedLabel.objects.create(
            run=run,
            item=items[external_id],
            label="=cmd|' /C calc'!A0",
            confidence=0.5,
            probabilities=[0.5, 0.25, 0.25],
            source=LabelSource.CROWD,
        )
    # Not covered by the run: a majority vote of human labels.
    AnnotationFactory(item=items["@SUM(A1)"], annotator=mallory, label="-neg")
    return project


def _table(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _check_defused(table: list[dict[str, str]]) -> None:
    """Every user cell is the original with ``'`` before a trigger; numbers untouched."""
    aggregated = [row for row in table if row.get("kind", "aggregated") == "aggregated"]
    by_id = {row["item"]: row for row in aggregated}
    assert len(by_id) == len(aggregated)
    assert set(by_id) == {*("'" + value for value in FORMULA_IDS), *PLAIN_IDS}
    assert by_id['\'=HYPERLINK("http://evil.example/","open")']["label"] == "'=cmd|' /C calc'!A0"
    assert by_id["a=b"]["label"] == "'=cmd|' /C calc'!A0"
    assert by_id["'@SUM(A1)"]["label"] == "'-neg"  # the majority vote's label
    assert by_id["'@SUM(A1)"]["source"] == "crowd"
    # Probabilities and confidences are numbers, never prefixed.
    assert by_id["a=b"]["confidence"] == "0.5" and by_id["a=b"]["p:safe"] == "0.25"
    assert by_id["'@SUM(A1)"]["p:-neg"] in ("1", "1.0")
    for row in table:
        for column, value in row.items():
            if value.startswith("'"):
                assert column in ("item", "label", "annotator"), (column, value)
            else:
                assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (column, value)


@pytest.mark.parametrize("renderer", ["postgres-copy", "python"])
def test_csv_export_defuses_user_text_in_both_renderers(hostile_project: Project, renderer: str) -> None:
    if renderer == "python":
        text = "".join(render_export(project=hostile_project, fmt="csv", generated=True))
    else:
        text = b"".join(export_stream(project=hostile_project, fmt="csv", generated=True)).decode("utf-8")
    table = _table(text)
    _check_defused(table)
    [generated] = [row for row in table if row["kind"] == "generated"]
    assert generated["item"] == "'+1+2"
    assert generated["label"] == "'=cmd|' /C calc'!A0"
    assert generated["annotator"] == "'@mallory"
    assert generated["probability"] == "0.75" and generated["source"] == "generated"


def test_csv_export_without_generated_rows_is_defused_too(hostile_project: Project) -> None:
    table = _table(b"".join(export_stream(project=hostile_project, fmt="csv")).decode("utf-8"))
    assert "kind" not in table[0]
    _check_defused(table)


def test_api_web_and_command_csv_exports_are_defused(
    hostile_project: Project,
    requester: Any,
    client_for: Callable[[Any], Any],
    tmp_path: Path,
) -> None:
    api = client_for(requester).get(
        reverse("api:project-export", kwargs={"project_pk": hostile_project.pk}), {"as": "csv"}
    )
    assert api.status_code == 200
    web = Client()
    web.force_login(requester)
    page = web.get(reverse("front:export", args=[hostile_project.pk, "csv"]))
    assert page.status_code == 200
    out = tmp_path / "labels.csv"
    call_command("export_labels", "--project", hostile_project.name, "--format", "csv", "--output", str(out))

    for text in (
        b"".join(api.streaming_content).decode(),
        b"".join(page.streaming_content).decode(),
        out.read_bytes().decode("utf-8"),
    ):  # bytes: text mode would turn \r into \n
        _check_defused(_table(text))


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_exports_stay_verbatim(hostile_project: Project, fmt: str) -> None:
    for text in (
        b"".join(export_stream(project=hostile_project, fmt=fmt, generated=True)).decode("utf-8"),
        "".join(render_export(project=hostile_project, fmt=fmt, generated=True)),
    ):
        rows = json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines()]
        ids = {row["item"] for row in rows if row["kind"] == "aggregated"}
        assert ids == {*FORMULA_IDS, *PLAIN_IDS}
        [generated] = [row for row in rows if row["kind"] == "generated"]
        assert generated["annotator"] == FORMULA_USER and generated["label"] == "=cmd|' /C calc'!A0"
        labels = {row["item"]: row["label"] for row in rows if row["kind"] == "aggregated"}
        assert labels["@SUM(A1)"] == "-neg" and labels["a=b"] == "=cmd|' /C calc'!A0"


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@a", "'@a"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=1", "a=1"),
        ("", ""),
        (" =1", " =1"),
        ("'=1", "'=1"),
    ],
)
def test_csv_text_rule(value: str, written: str) -> None:
    assert csv_text(value) == written
