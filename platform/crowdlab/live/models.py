"""Stored sentence embeddings of text items (computed once, read by every run)."""

from __future__ import annotations

from django.db import models

from crowdlab.projects.models import Item


class ItemEmbedding(models.Model):
    """One item's text embedding under one model, as little-endian float32 bytes.

    Its own table rather than a column of ``projects_item``: the labelling hot
    path scans items, and 1.5 kB of vector per row would widen every page of it.
    Keyed by the model's host-independent name, so changing
    ``TEXT_EMBEDDING_MODEL`` embeds again instead of mixing two vector spaces.
    """

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=200)
    vector = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "model"], name="item_embedding_one_per_model")]

    def __str__(self) -> str:
        return f"embedding of item {self.item_id} ({self.model})"
