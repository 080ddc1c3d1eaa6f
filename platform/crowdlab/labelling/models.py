"""Assignments (leases of items to annotators) and human annotations."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from crowdlab.projects.models import Item, Project


class AssignmentStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    DONE = "done", "Done"
    SKIPPED = "skipped", "Skipped"


class Assignment(models.Model):
    """An item leased to an annotator until ``expires_at``.

    Expired active leases count as free slots again; an annotator never gets
    the same item twice (one row per item and annotator).
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="assignments")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    status = models.CharField(max_length=8, choices=AssignmentStatus.choices, default=AssignmentStatus.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "annotator"], name="assignment_unique")]
        indexes = [
            models.Index(fields=["item", "status", "expires_at"], name="assignment_lease_idx"),
            models.Index(fields=["annotator", "project", "status"], name="assignment_annotator_idx"),
        ]

    def __str__(self) -> str:
        return f"item {self.item_id} leased to {self.annotator_id} ({self.status})"


class AnnotationSource(models.TextChoices):
    WEB = "web", "Labelled here"
    IMPORT = "import", "Imported crowd"


class Annotation(models.Model):
    """One human label. Unique per (item, annotator); changes keep history."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="annotations")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="annotations")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="annotations")
    label = models.CharField(max_length=100)
    source = models.CharField(max_length=8, choices=AnnotationSource.choices, default=AnnotationSource.WEB)
    time_spent_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Not a column: set by labelling.services' submits on the annotation they return
    # (True: a new row; False: the same label again), so the API can say 201 or 200.
    was_created: bool

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "annotator"], name="annotation_unique")]
        indexes = [
            models.Index(fields=["project", "id"], name="annotation_project_idx"),
            models.Index(fields=["annotator", "-created_at"], name="annotation_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.annotator_id} → {self.label} on {self.item_id}"


class AnnotationRevision(models.Model):
    """The previous label of an annotation that was explicitly changed."""

    annotation = models.ForeignKey(Annotation, on_delete=models.CASCADE, related_name="revisions")
    old_label = models.CharField(max_length=100)
    new_label = models.CharField(max_length=100)
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["changed_at", "id"]

    def __str__(self) -> str:
        return f"annotation {self.annotation_id}: {self.old_label} → {self.new_label}"
