"""CrowdInG's generated annotations on the platform side (issue 5): publish,
retention, apartness from human work, export (Python and COPY paths), admin."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
from django.core.management import call_command
from django.db.models import Sum
from django.test import Client

from crowdlab.labelling.models import Annotation
from crowdlab.live.services import run_execute
from crowdlab.live.triggers import new_annotations_count
from crowdlab.projects.models import Item, Membership, Project
from crowdlab.results.export import export_stream
from crowdlab.results.models import GeneratedAnnotation, InferenceRun, RunStatus
from crowdlab.results.selectors import annotator_statistics, generated_for_item, generated_for_run
from crowdlab.results.services import run_create, runs_purge_old
from tests.platform.factories import AnnotationFactory, UserFactory, publish_with_generated
from tests.platform.results.reference_export import export_rows, render_export

pytestmark = pytest.mark.django_db
torch.set_num_threads(1)

# Small enough to fit in well under a second on a tiny crowd.
FAST_CROWDING = {
    "pretrain_steps": 30,
    "crowding_epochs": 2,
    "gd_pretrain_epochs": 1,
    "inner_steps": 1,
    "hidden": 16,
    "num_threads": 1,
}


def make_sparse_crowd(
    *, owner: Any, n_dense: int = 16, n_sparse: int = 8, n_annotators: int = 6, k: int = 3, seed: int = 0
) -> tuple[Project, list[Item], list[Any]]:
    """``n_dense`` items with k human labels and ``n_sparse`` with one, by distinct annotators."""
    rng = np.random.default_rng(seed)
    classes = ["cat", "dog", "bird"]
    project = Project.objects.create(
        owner=owner,
        name=f"Sparse {seed}",
        classes=[{"name": c} for c in classes],
        k=k,
        model="crowding",
        retrain_every_n=10_000,
        retrain_every_minutes=10_000,
    )
    truth = rng.integers(0, 3, size=n_dense + n_sparse)
    centres = np.eye(3) * 3.0
    items = Item.objects.bulk_create(
        [
            Item(
                project=project,
                external_id=f"s{i:03d}",
                text=f"{classes[truth[i]]} {i}",
                features=(centres[truth[i]] + rng.normal(size=3)).round(4).tolist(),
            )
            for i in range(n_dense + n_sparse)
        ]
    )
    annotators = [UserFactory(username=f"sparse{seed}_ann{r}") for r in range(n_annotators)]
    Membership.objects.bulk_create([Membership(project=project, user=u) for u in annotators])
    for i, item in enumerate(items):
        n_labels = k if i < n_dense else 1
        for r in rng.choice(n_annotators, size=n_labels, replace=False):
            label = truth[i] if rng.random() < 0.85 else (truth[i] + 1) % 3
            AnnotationFactory(item=item, annotator=annotators[int(r)], label=classes[int(label)])
    return project, items, annotators


def test_crowding_run_generates_only_for_sparse_items_and_never_counts_as_human_work(requester: Any) -> None:
    project, items, annotators = make_sparse_crowd(owner=requester)
    humans_before = Annotation.objects.filter(project=project).count()
    per_item_before = dict(Item.objects.filter(project=project).values_list("id", "n_annotations"))
    stats_before = {s.annotator_id: s.n_annotations for s in annotator_statistics(project=project)}
    labelled_by: dict[int, set[int]] = {}
    for item_id, annotator_id in Annotation.objects.filter(project=project).values_list("item_id", "annotator_id"):
        labelled_by.setdefault(item_id, set()).add(annotator_id)

    run = run_create(project=project, params=FAST_CROWDING)
    assert run is not None
    assert run_execute(run_id=run.pk) == RunStatus.PUBLISHED, InferenceRun.objects.get(pk=run.pk).error
    run.refresh_from_db()

    generated = list(GeneratedAnnotation.objects.filter(run=run))
    assert generated, "a crowding run on a sparse crowd must generate annotations"
    assert run.metrics["n_generated"] == len(generated)
    per_item = Counter(g.item_id for g in generated)
    for g in generated:
        n_human = per_item_before[g.item_id]
        assert n_human < project.k  # only sparse items
        assert g.annotator_id not in labelled_by[g.item_id]  # someone who did not label it
        assert g.annotator_id in {a.pk for a in annotators}
        assert g.label in project.class_names
        assert 0.0 < g.probability <= 1.0
    # Up to k labels per sparse item, human + generated.
    for item_id, n in per_item.items():
        assert per_item_before[item_id] + n == project.k
    sparse_ids = {i for i, n in per_item_before.items() if n < project.k}
    assert set(per_item) == sparse_ids

    # Never human work: the annotation table, the counters, the stats, the trigger, the export.
    assert Annotation.objects.filter(project=project).count() == humans_before
    assert dict(Item.objects.filter(project=project).values_list("id", "n_annotations")) == per_item_before
    assert Item.objects.filter(project=project).aggregate(n=Sum("n_annotations"))["n"] == humans_before
    assert {s.annotator_id: s.n_annotations for s in annotator_statistics(project=project)} == stats_before
    assert run.n_annotations == humans_before
    n_new, _active, _n, _is_active = new_annotations_count(project.pk)
    assert n_new == 0
    exported = {row["item"]: row["n_annotations"] for row in export_rows(project=project)}
    assert exported == {it.external_id: per_item_before[it.pk] for it in items}

    # The selectors read them back per run and per item.
    assert generated_for_run(run=run).count() == len(generated)
    some = generated[0].item_id
    for_item = list(generated_for_item(item_id=some))
    assert {g.pk for g in for_item} == {g.pk for g in generated if g.item_id == some}
    assert [g.annotator_id for g in for_item] == sorted(g.annotator_id for g in for_item)


def test_a_ds_run_generates_nothing(requester: Any) -> None:
    project, _items, _annotators = make_sparse_crowd(owner=requester, seed=1)
    project.model = "ds"
    project.save(update_fields=["model"])
    run = run_create(project=project)
    assert run is not None
    assert run_execute(run_id=run.pk) == RunStatus.PUBLISHED
    assert not GeneratedAnnotation.objects.filter(run=run).exists()
    assert "n_generated" not in InferenceRun.objects.get(pk=run.pk).metrics


def test_retention_deletes_generated_annotations_with_their_run(project: Project, outsider: Any) -> None:
    item = project.items.order_by("id").first()
    runs = [publish_with_generated(project, [(item, outsider, "cat", 0.5 + n / 10)]) for n in range(4)]
    assert runs_purge_old(project_id=project.pk, keep=3) == 1
    assert not GeneratedAnnotation.objects.filter(run=runs[0]).exists()
    assert GeneratedAnnotation.objects.filter(run__in=runs[1:]).count() == 3
    assert Annotation.objects.filter(project=project).count() == 0


# --------------------------------------------------------------------------- export


def _parse(fmt: str, text: str) -> list[Any]:
    if fmt == "json":
        return json.loads(text)
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines()]

    def cell(value: str) -> Any:
        try:
            return float(value)
        except ValueError:
            return value

    return [[cell(v) for v in row] for row in csv.reader(io.StringIO(text))]


@pytest.fixture
def published_with_generated(project: Project, annotator: Any, outsider: Any) -> InferenceRun:
    items = {i.external_id: i for i in project.items.all()}
    Item.objects.create(project=project, external_id='odd,"id"\nü', text="t")
    items = {i.external_id: i for i in project.items.all()}
    AnnotationFactory(item=items["a0"], annotator=annotator, label="dog")
    return publish_with_generated(
        project,
        [
            (items["a0"], outsider, "cat", 0.8125),
            (items['odd,"id"\nü'], annotator, "bird", 1 / 3),
            (items["a0"], UserFactory(username='we"ird,name'), "dog", 0.5),
        ],
    )


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_postgres_copy_matches_python_with_generated(project: Project, published_with_generated: Any, fmt: str) -> None:
    python_text = "".join(render_export(project=project, fmt=fmt, generated=True))
    copy_text = b"".join(export_stream(project=project, fmt=fmt, generated=True)).decode("utf-8")
    assert _parse(fmt, copy_text) == _parse(fmt, python_text)
    rows = _parse(fmt, copy_text)
    n_items = project.items.count()
    assert len(rows) == n_items + 3 + (1 if fmt == "csv" else 0)


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_export_without_the_flag_has_no_generated_rows(
    project: Project, published_with_generated: Any, fmt: str
) -> None:
    for text in (
        "".join(render_export(project=project, fmt=fmt)),
        b"".join(export_stream(project=project, fmt=fmt)).decode("utf-8"),
    ):
        rows = _parse(fmt, text)
        if fmt == "csv":
            assert rows[0][0] == "item" and "kind" not in rows[0] and "annotator" not in rows[0]
            assert len(rows) == project.items.count() + 1
        else:
            assert len(rows) == project.items.count()
            assert all("kind" not in row for row in rows)


def test_csv_export_marks_generated_rows(project: Project, published_with_generated: InferenceRun) -> None:
    text = b"".join(export_stream(project=project, fmt="csv", generated=True)).decode("utf-8")
    table = list(csv.DictReader(io.StringIO(text)))
    kinds = Counter(row["kind"] for row in table)
    assert kinds == {"aggregated": project.items.count(), "generated": 3}
    generated = [row for row in table if row["kind"] == "generated"]
    # After the item rows, in (item id, annotator id) order.
    assert [(r["item"], r["annotator"], r["label"]) for r in generated] == [
        ("a0", "outsider", "cat"),
        ("a0", 'we"ird,name', "dog"),
        ('odd,"id"\nü', "annotator", "bird"),
    ]
    assert table[-3:] == generated
    for row in generated:
        # Nothing that reads like a human-backed aggregate.
        assert row["source"] == "generated" and row["confidence"] == "" and row["n_annotations"] == ""
        assert all(row[f"p:{name}"] == "" for name in project.class_names)
        assert int(row["run_id"]) == published_with_generated.pk
        assert 0 < float(row["probability"]) <= 1
    aggregated_a0 = next(r for r in table if r["kind"] == "aggregated" and r["item"] == "a0")
    assert aggregated_a0["n_annotations"] == "1" and aggregated_a0["annotator"] == ""


def test_json_export_marks_generated_rows(project: Project, published_with_generated: InferenceRun) -> None:
    rows = json.loads(b"".join(export_stream(project=project, fmt="json", generated=True)))
    generated = [r for r in rows if r["kind"] == "generated"]
    assert {r["item"] for r in generated} == {"a0", 'odd,"id"\nü'}
    assert set(generated[0]) == {"kind", "item", "annotator", "label", "probability", "run_id"}
    assert all(r["kind"] == "aggregated" and "annotator" not in r for r in rows if r not in generated)


def test_export_labels_command_with_generated(project: Project, published_with_generated: Any, tmp_path: Any) -> None:
    out = tmp_path / "labels.jsonl"
    call_command(
        "export_labels", "--project", str(project.pk), "--format", "jsonl", "--generated", "--output", str(out)
    )
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert Counter(r["kind"] for r in rows) == {"aggregated": project.items.count(), "generated": 3}
    plain = tmp_path / "plain.csv"
    call_command("export_labels", "--project", str(project.pk), "--output", str(plain))
    assert plain.read_text(encoding="utf-8").startswith("item,label,")


# --------------------------------------------------------------------------- admin


def test_admin_lists_filters_and_shows_generated_per_item(
    project: Project, published_with_generated: InferenceRun, admin_user: Any
) -> None:
    # A second run, so the run filter has a choice to offer (one choice is hidden).
    publish_with_generated(project, [(project.items.get(external_id="a1"), admin_user, "cat", 0.75)])
    client = Client()
    client.force_login(admin_user)
    response = client.get("/admin/results/generatedannotation/")
    assert response.status_code == 200
    text = " ".join(response.content.decode().split())
    assert "By run" in text and "By label" in text
    filtered = client.get(
        "/admin/results/generatedannotation/", {"run__id__exact": published_with_generated.pk, "label": "bird"}
    )
    assert filtered.status_code == 200
    assert b"1 generated annotation" in filtered.content
    item = project.items.get(external_id="a0")
    page = client.get(f"/admin/projects/item/{item.pk}/change/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "generated annotations (crowding, not human labels)" in body.lower()
    assert "outsider" in body and "0.8125" in body
    # Read-only: no add and no change.
    assert client.get("/admin/results/generatedannotation/add/").status_code == 403


# --------------------------------------------------------------------------- web UI


def test_results_page_shows_generated_labels_to_the_owner_only(
    project: Project, published_with_generated: InferenceRun, requester: Any, annotator: Any, admin_user: Any
) -> None:
    from crowdlab.results.models import AggregatedLabel

    # The results table lists the run's aggregated labels; give a0 one.
    AggregatedLabel.objects.create(
        run=published_with_generated,
        item=project.items.get(external_id="a0"),
        label="cat",
        confidence=0.9,
        probabilities=[0.9, 0.05, 0.05],
        n_annotations=1,
    )
    url = f"/p/{project.pk}/results/"
    for user in (requester, admin_user):
        client = Client()
        client.force_login(user)
        page = client.get(url)
        assert page.status_code == 200
        body = page.content.decode()
        assert "Generated (CrowdInG, not human)" in body
        assert 'data-testid="generated-a0"' in body and "outsider (0.81)" in body
        assert "?generated=1" in body
        download = client.get(f"/p/{project.pk}/export.csv", {"generated": "1"})
        text = b"".join(download.streaming_content).decode()
        assert text.startswith("kind,item,") and "\ngenerated,a0," in text
    client = Client()
    client.force_login(annotator)
    refused = client.get(url)
    assert refused.status_code in (403, 404)
    assert b"outsider (0.81)" not in refused.content


def test_live_crowding_params_take_the_project_k_and_stay_overridable() -> None:
    from crowdlab.live.services import _model_params

    params = _model_params("crowding", {}, project_k=5)
    assert params["k"] == 5 and params["crowding_epochs"] == 8
    assert _model_params("crowding", {"k": 2, "crowding_epochs": 20}, project_k=5)["k"] == 2
    assert _model_params("crowding", {"crowding_epochs": 20}, project_k=5)["crowding_epochs"] == 20
    assert "k" not in _model_params("ds", {}, project_k=5)
