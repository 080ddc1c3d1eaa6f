"""Streamed export (results.export): majority vote fallback and published runs."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from crowdlab.projects.models import Item, Project
from crowdlab.results.export import csv_header, export_stream, export_to_file
from crowdlab.results.models import AggregatedLabel, InferenceRun, LabelSource, RunStatus
from tests.platform.factories import AnnotationFactory, UserFactory
from tests.platform.results.reference_export import export_rows, render_export

pytestmark = pytest.mark.django_db


def _label(project: Project, external_id: str, labels: list[str]) -> None:
    item = Item.objects.get(project=project, external_id=external_id)
    for index, label in enumerate(labels):
        AnnotationFactory(item=item, annotator=UserFactory(username=f"w-{external_id}-{index}"), label=label)


def _publish(
    project: Project, labels: dict[str, tuple[str, list[float], str]], *, status: str = RunStatus.PUBLISHED
) -> InferenceRun:
    run = InferenceRun.objects.create(project=project, model=project.model, status=status)
    for external_id, (label, probabilities, source) in labels.items():
        AggregatedLabel.objects.create(
            run=run,
            item=Item.objects.get(project=project, external_id=external_id),
            label=label,
            confidence=max(probabilities),
            probabilities=probabilities,
            source=source,
        )
    return run


def test_majority_vote_before_any_run(project: Project) -> None:
    _label(project, "a0", ["dog", "dog", "cat"])
    _label(project, "a1", ["bird", "cat"])  # tie: cat comes first in the class order
    rows = {row["item"]: row for row in export_rows(project=project)}
    assert list(rows) == ["a0", "a1", "a2", "a3", "a4"]
    assert rows["a0"] == {
        "item": "a0",
        "label": "dog",
        "confidence": pytest.approx(2 / 3),
        "probabilities": {"cat": pytest.approx(1 / 3), "dog": pytest.approx(2 / 3), "bird": 0.0},
        "n_annotations": 3,
        "run_id": None,
        "source": "crowd",
    }
    assert rows["a1"]["label"] == "cat" and rows["a1"]["confidence"] == 0.5
    assert rows["a2"] == {
        "item": "a2",
        "label": None,
        "confidence": None,
        "probabilities": None,
        "n_annotations": 0,
        "run_id": None,
        "source": None,
    }


def test_latest_published_run_wins_and_uncovered_items_fall_back(project: Project) -> None:
    _label(project, "a0", ["dog", "dog", "cat"])
    _label(project, "a3", ["bird"])
    _publish(project, {"a0": ("cat", [0.7, 0.2, 0.1], LabelSource.CROWD)})
    newest = _publish(
        project,
        {"a0": ("dog", [0.1, 0.8, 0.1], LabelSource.CROWD), "a1": ("bird", [0.2, 0.2, 0.6], LabelSource.PREDICTED)},
    )
    _publish(project, {"a0": ("bird", [0.0, 0.0, 1.0], LabelSource.CROWD)}, status=RunStatus.FAILED)
    rows = {row["item"]: row for row in export_rows(project=project)}
    assert rows["a0"]["label"] == "dog" and rows["a0"]["run_id"] == newest.pk
    assert rows["a0"]["probabilities"] == {"cat": 0.1, "dog": 0.8, "bird": 0.1}
    assert rows["a0"]["n_annotations"] == 3
    assert rows["a1"] == {
        "item": "a1",
        "label": "bird",
        "confidence": 0.6,
        "probabilities": {"cat": 0.2, "dog": 0.2, "bird": 0.6},
        "n_annotations": 0,
        "run_id": newest.pk,
        "source": "predicted",
    }
    # a3 was labelled but the run does not cover it: majority vote, no run id.
    assert rows["a3"]["label"] == "bird" and rows["a3"]["run_id"] is None and rows["a3"]["source"] == "crowd"
    assert rows["a4"]["label"] is None


def test_three_renderings_agree(project: Project) -> None:
    _label(project, "a0", ["dog", "dog", "cat"])
    run = _publish(project, {"a1": ("bird", [0.2, 0.2, 0.6], LabelSource.PREDICTED)})
    expected = list(export_rows(project=project))

    parsed_json = json.loads("".join(render_export(project=project, fmt="json")))
    assert parsed_json == expected

    lines = "".join(render_export(project=project, fmt="jsonl")).splitlines()
    assert [json.loads(line) for line in lines] == expected

    table = list(csv.reader(io.StringIO("".join(render_export(project=project, fmt="csv")))))
    assert (
        table[0]
        == csv_header(project.class_names)
        == [
            "item",
            "label",
            "confidence",
            "p:cat",
            "p:dog",
            "p:bird",
            "n_annotations",
            "run_id",
            "source",
        ]
    )
    by_item = {row[0]: row for row in table[1:]}
    assert len(by_item) == 5
    assert by_item["a1"] == ["a1", "bird", "0.6", "0.2", "0.2", "0.6", "0", str(run.pk), "predicted"]
    assert by_item["a0"][1] == "dog" and by_item["a0"][-2:] == ["", "crowd"]
    assert by_item["a2"] == ["a2", "", "", "", "", "", "0", "", ""]


def test_unknown_format_is_a_value_error(project: Project) -> None:
    with pytest.raises(ValueError, match="allowed: csv, json, jsonl"):
        render_export(project=project, fmt="xml")


def test_export_reads_in_constant_queries(project: Project, django_assert_max_num_queries: Any) -> None:
    items = [Item(project=project, external_id=f"x{n:05d}", text="t") for n in range(5_000)]
    Item.objects.bulk_create(items)
    out = io.StringIO()
    # Server-side cursors: a fixed handful of queries (declare + fetches) whatever the size.
    with django_assert_max_num_queries(20):
        export_to_file(project=project, fmt="jsonl", out=out)
    assert len(out.getvalue().splitlines()) == 5_005


def _parse(fmt: str, text: str) -> list[Any]:
    if fmt == "json":
        return json.loads(text)
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines()]
    rows = list(csv.reader(io.StringIO(text)))

    # Numbers may be spelt 0 / 0.0: compare cells as floats where they parse.
    def cell(value: str) -> Any:
        try:
            return float(value)
        except ValueError:
            return value

    return [[cell(value) for value in row] for row in rows]


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_postgres_copy_stream_matches_python_renderers(project: Project, fmt: str) -> None:
    # Awkward ids: commas, quotes, newlines, unicode, backslashes, control characters.
    for external_id in ["x,1", 'say "hi"', "two\nlines", "ünïcødé ✓", "back\\slash", "bell\x07"]:
        Item.objects.create(project=project, external_id=external_id, text="t")
    _label(project, "a0", ["dog", "dog", "cat"])
    _label(project, "x,1", ["bird", "cat"])
    _label(project, 'say "hi"', ["dog"])
    _publish(
        project,
        {
            "a1": ("bird", [0.2, 0.2, 0.6], LabelSource.PREDICTED),
            "two\nlines": ("cat", [1 / 3, 0.5, 1 / 6], LabelSource.CROWD),
        },
    )
    python_text = "".join(render_export(project=project, fmt=fmt))
    copy_chunks = list(export_stream(project=project, fmt=fmt))
    assert all(isinstance(chunk, bytes) for chunk in copy_chunks)
    copy_text = b"".join(copy_chunks).decode("utf-8")
    assert _parse(fmt, copy_text) == _parse(fmt, python_text)
    assert len(_parse(fmt, copy_text)) == 11 + (1 if fmt == "csv" else 0)


def test_postgres_json_stream_of_an_empty_project_is_an_empty_array(requester: Any) -> None:
    empty = Project.objects.create(owner=requester, name="Empty", classes=[{"name": "a"}, {"name": "b"}])
    assert json.loads(b"".join(export_stream(project=empty, fmt="json"))) == []
    assert (
        b"".join(export_stream(project=empty, fmt="csv"))
        == b"item,label,confidence,p:a,p:b,n_annotations,run_id,source\n"
    )
