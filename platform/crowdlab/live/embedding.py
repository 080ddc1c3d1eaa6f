"""Text items → stored sentence embeddings, in batches, once per item and model.

The embedding task (``live.tasks.embed_items``, sent after an item import) and
every run (before its snapshot) call :func:`embed_missing_items`; both only
embed items that have no stored vector yet, so a retrain never embeds again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet

from crowdlab.projects.models import Item
from inference.embeddings import TFIDF, SentenceEmbedder, describe_text_model

from .models import ItemEmbedding

logger = logging.getLogger(__name__)

# One loaded model per worker process: loading costs seconds, each task would pay it.
_EMBEDDERS: dict[str, SentenceEmbedder] = {}


def embedding_model_name() -> str | None:
    """The stored vectors' model name, or None when text items use TF-IDF (nothing is stored)."""
    model = settings.TEXT_EMBEDDING_MODEL
    return None if model == TFIDF else describe_text_model(model)


def featurizer_name() -> str:
    """What text items get features from, as runs record it."""
    return describe_text_model(settings.TEXT_EMBEDDING_MODEL)


def items_to_embed(*, project_id: int, model_name: str) -> QuerySet[Item]:
    """Items of the project with text and no stored vector under ``model_name``, oldest first."""
    stored = ItemEmbedding.objects.filter(item_id=OuterRef("pk"), model=model_name)
    return (
        Item.objects.filter(project_id=project_id)
        .exclude(text="")
        .exclude(text__isnull=True)
        .filter(~Exists(stored))
        .order_by("id")
    )


def embedding_counts(*, project_id: int) -> tuple[int, int]:
    """(items with a stored vector, items with text) under the configured model."""
    name = embedding_model_name()
    with_text = Item.objects.filter(project_id=project_id).exclude(text="").exclude(text__isnull=True)
    if name is None:
        return 0, with_text.count()
    done = ItemEmbedding.objects.filter(item__project_id=project_id, model=name).count()
    return done, with_text.count()


@transaction.atomic
def item_embeddings_store(*, model_name: str, item_ids: Sequence[int], vectors: np.ndarray) -> int:
    """Store one batch; a vector another worker stored meanwhile wins (same model, same text)."""
    if len(item_ids) != len(vectors):
        raise ValueError(f"{len(item_ids)} items but {len(vectors)} vectors")
    rows = [
        ItemEmbedding(item_id=item_id, model=model_name, vector=np.asarray(vec, dtype="<f4").tobytes())
        for item_id, vec in zip(item_ids, vectors, strict=True)
    ]
    return len(ItemEmbedding.objects.bulk_create(rows, ignore_conflicts=True))


def embed_missing_items(*, project_id: int, progress: Callable[[int, int], None] | None = None) -> int:
    """Embed and store every text item of the project that has no vector yet; how many it embedded.

    Not one transaction on purpose: each batch commits on its own, so progress
    shows (``embedding_counts``) and a killed worker loses one batch at most.
    """
    name = embedding_model_name()
    if name is None:
        return 0
    pending = items_to_embed(project_id=project_id, model_name=name)
    total = pending.count()
    if total == 0:
        return 0
    model = settings.TEXT_EMBEDDING_MODEL
    embedder = _EMBEDDERS.get(model)
    if embedder is None:
        embedder = _EMBEDDERS[model] = SentenceEmbedder(model)
    done = 0
    batch = settings.TEXT_EMBEDDING_BATCH
    while True:
        # Re-queried each batch (never an offset): items another worker embedded drop out.
        rows = list(pending.values_list("id", "text")[:batch])
        if not rows:
            break
        vectors = embedder.encode([text for _, text in rows])
        item_embeddings_store(model_name=name, item_ids=[pk for pk, _ in rows], vectors=vectors)
        done += len(rows)
        logger.info("project %s: embedded %d/%d text items (%s)", project_id, done, total, name)
        if progress is not None:
            progress(done, total)
    return done
