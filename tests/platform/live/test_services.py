"""run_execute in-process (no worker): snapshot, fit, publish, warm start, faults."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from crowdlab.labelling.models import Annotation
from crowdlab.live import adapter
from crowdlab.live.services import run_execute
from crowdlab.results.models import (
    AggregatedLabel,
    AnnotatorConfusion,
    CommonConfusion,
    InferenceRun,
    LabelSource,
    RunStatus,
)
from crowdlab.results.selectors import latest_published_run
from crowdlab.results.services import run_create

from .conftest import CLASSES, make_crowd_project

pytestmark = pytest.mark.django_db(transaction=True)
torch.set_num_threads(1)


def _accuracy(project: Any, truth: np.ndarray, items: list[Any]) -> float:
    run = latest_published_run(project)
    assert run is not None
    got = dict(AggregatedLabel.objects.filter(run=run).values_list("item_id", "label"))
    names = [c["name"] for c in CLASSES]
    hits = [got[it.pk] == names[truth[i]] for i, it in enumerate(items) if it.pk in got]
    return float(np.mean(hits))


def test_snapshot_reads_every_item_and_annotation(live_owner: Any) -> None:
    project, _truth, _annotators, _items = make_crowd_project(owner=live_owner, n_items=30, n_unlabelled=5)
    snap = adapter.read_snapshot(project_id=project.pk)
    data = snap.data
    assert data.n_items == 35  # unlabelled items included
    assert data.n_annotations == 30 * 4
    assert data.n_annotators == 4
    assert list(data.classes) == [c["name"] for c in CLASSES]
    assert snap.snapshot_annotation_id == Annotation.objects.filter(project=project).latest("id").pk
    # Row i of the arrays is the item with pk items[i]; labels round-trip.
    ann = Annotation.objects.filter(project=project).order_by("id").first()
    assert ann is not None
    i = int(np.flatnonzero(snap.item_pks == ann.item_id)[0])
    first = np.flatnonzero(data.item_idx == i)
    assert ann.label in {data.classes[data.label_idx[j]] for j in first}
    # Text items without vectors get text features, one row per item.
    assert snap.feature_kind == "text"
    assert data.features is not None and data.features.shape[0] == 35


def test_run_publishes_correct_labels_and_warm_starts(live_owner: Any) -> None:
    project, truth, annotators, items = make_crowd_project(
        owner=live_owner, n_items=60, accuracy=(0.95, 0.9, 0.85, 0.6, 0.5)
    )
    first = run_create(project=project)
    assert first is not None
    assert run_execute(run_id=first.pk) == RunStatus.PUBLISHED
    first.refresh_from_db()
    assert first.n_annotations == 300 and first.n_items == 60 and first.n_annotators == 5
    assert first.warm_start_from_id is None and first.checkpoint is not None
    assert (first.fit_mode, first.fit_reason) == ("cold", "no earlier published ds run with a checkpoint")
    assert set(first.timings) >= {"snapshot", "fit", "publish", "prepare"}
    assert first.progress_total > 0
    assert _accuracy(project, truth, items) >= 0.9
    assert AnnotatorConfusion.objects.filter(run=first).count() == 5
    best = AnnotatorConfusion.objects.get(run=first, annotator=annotators[0])
    worst = AnnotatorConfusion.objects.get(run=first, annotator=annotators[4])
    assert best.learned_accuracy > worst.learned_accuracy
    assert np.allclose(np.asarray(best.matrix).sum(axis=1), 1.0, atol=1e-4)
    assert 0.0 <= first.metrics["agreement_with_mv"] <= 1.0

    # A small crowd refits cold by default, and the run says why.
    second = run_create(project=project)
    assert second is not None
    assert run_execute(run_id=second.pk) == RunStatus.PUBLISHED
    second.refresh_from_db()
    assert second.warm_start_from_id is None and second.metrics["warm_start"] is False
    assert (second.fit_mode, second.fit_reason) == ("cold", "300 annotations: below 50000, every refit is cold")

    # Where warm refits are allowed, the next run starts from the newest checkpoint.
    third = run_create(project=project, params={"warm_min_annotations": 0})
    assert third is not None
    assert run_execute(run_id=third.pk) == RunStatus.PUBLISHED
    third.refresh_from_db()
    assert third.warm_start_from_id == second.pk
    assert third.metrics["warm_start"] is True and third.fit_mode == "warm"
    assert "0.0% since the last cold fit (300 -> 300)" in third.fit_reason
    assert latest_published_run(project).pk == third.pk

    # "Run now" as a full cold refit ignores every checkpoint, whatever the params allow.
    fourth = run_create(project=project, params={"warm_min_annotations": 0}, cold=True)
    assert fourth is not None and fourth.cold_refit
    assert run_execute(run_id=fourth.pk) == RunStatus.PUBLISHED
    fourth.refresh_from_db()
    assert fourth.warm_start_from_id is None and fourth.metrics["warm_start"] is False
    assert (fourth.fit_mode, fourth.fit_reason) == ("cold", "a full cold refit was requested")


def test_conal_run_publishes_omega_common_confusion_and_predictions(live_owner: Any) -> None:
    project, truth, annotators, items = make_crowd_project(
        owner=live_owner,
        n_items=80,
        n_unlabelled=10,
        model="conal",
        features=True,
        accuracy=(0.9, 0.85, 0.8, 0.7),
    )
    run = run_create(project=project, params={"epochs": 15, "num_threads": 1})
    assert run is not None
    assert run_execute(run_id=run.pk) == RunStatus.PUBLISHED, InferenceRun.objects.get(pk=run.pk).error
    run.refresh_from_db()
    assert run.metrics["feature_kind"] == "numeric"
    common = CommonConfusion.objects.get(run=run)
    assert len(common.matrix) == 3 and all(len(row) == 3 for row in common.matrix)
    conf = AnnotatorConfusion.objects.get(run=run, annotator=annotators[0])
    assert conf.omega is not None and 0.0 <= conf.omega <= 1.0
    assert conf.omegas is not None and len(conf.omegas) == conf.n_annotations == 80
    predicted = AggregatedLabel.objects.filter(run=run, source=LabelSource.PREDICTED)
    assert predicted.count() == 10
    assert all(row.n_annotations == 0 for row in predicted)
    assert AggregatedLabel.objects.filter(run=run, source=LabelSource.CROWD).count() == 80
    assert _accuracy(project, truth, items[:80]) >= 0.85


def test_no_annotations_fails_readably(live_owner: Any) -> None:
    project, *_ = make_crowd_project(owner=live_owner, n_items=0, n_unlabelled=5)
    run = run_create(project=project)
    assert run is not None
    assert run_execute(run_id=run.pk) == RunStatus.FAILED
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "no annotations" in run.error
    assert latest_published_run(project) is None


def test_single_class_crowd_fails_readably(live_owner: Any) -> None:
    project, _truth, _annotators, _items = make_crowd_project(owner=live_owner, n_items=10)
    Annotation.objects.filter(project=project).update(label="cat")
    run = run_create(project=project)
    assert run is not None
    assert run_execute(run_id=run.pk) == RunStatus.FAILED
    run.refresh_from_db()
    assert "single class 'cat'" in run.error


def test_bad_hyper_parameters_fail_readably(live_owner: Any) -> None:
    project, *_ = make_crowd_project(owner=live_owner, n_items=10)
    run = run_create(project=project, params={"n_iter": 0})
    assert run is not None
    assert run_execute(run_id=run.pk) == RunStatus.FAILED
    run.refresh_from_db()
    assert "n_iter" in run.error


def test_a_claimed_run_is_not_executed_twice(live_owner: Any) -> None:
    project, *_ = make_crowd_project(owner=live_owner, n_items=10)
    run = run_create(project=project)
    assert run is not None
    assert run_execute(run_id=run.pk) == RunStatus.PUBLISHED
    # A duplicate message for the same run finds it published and does nothing.
    assert run_execute(run_id=run.pk) == "skipped"
    assert AggregatedLabel.objects.filter(run=run).count() == 10


def test_labels_that_are_not_classes_fail_readably(live_owner: Any) -> None:
    project, *_ = make_crowd_project(owner=live_owner, n_items=6)
    Annotation.objects.filter(project=project, item__external_id="it00002").update(label="horse")
    run = run_create(project=project)
    assert run is not None
    assert run_execute(run_id=run.pk) == RunStatus.FAILED
    run.refresh_from_db()
    assert "['horse']" in run.error and "allowed: ['cat', 'dog', 'bird']" in run.error


def test_numeric_features_round_trip_and_bad_vectors_fail_readably(live_owner: Any) -> None:
    from crowdlab.projects.models import Item

    project, _truth, _annotators, items = make_crowd_project(owner=live_owner, n_items=8, features=True)
    snap = adapter.read_snapshot(project_id=project.pk)
    assert snap.feature_kind == "numeric" and snap.data.features is not None
    raw = np.asarray([it.features for it in Item.objects.filter(project=project).order_by("id")])
    expected = (raw - raw.mean(axis=0)) / raw.std(axis=0)
    assert np.allclose(snap.data.features, expected, atol=1e-3)
    Item.objects.filter(pk=items[3].pk).update(features=[1, 2, 3, 4, 5, "x"])
    with pytest.raises(ValueError, match="item features must be lists of numbers"):
        adapter.read_snapshot(project_id=project.pk)


def test_numeric_feature_cache_follows_changes(live_owner: Any) -> None:
    from crowdlab.projects.models import Item

    project, _truth, _annotators, items = make_crowd_project(owner=live_owner, n_items=6, features=True)
    first = adapter.read_snapshot(project_id=project.pk).data.features
    again = adapter.read_snapshot(project_id=project.pk).data.features
    assert first is not None and again is not None and np.array_equal(first, again)
    again[:] = 0  # callers get copies: the cache is not affected
    assert np.array_equal(adapter.read_snapshot(project_id=project.pk).data.features, first)
    Item.objects.filter(pk=items[0].pk).update(features=[100.0] * 6)
    changed = adapter.read_snapshot(project_id=project.pk).data.features
    assert changed is not None and not np.array_equal(changed, first)
