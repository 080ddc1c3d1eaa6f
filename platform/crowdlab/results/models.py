"""Inference runs and what they publish.

A run's rows are written before the run is flipped to ``published`` in the
same transaction, and never changed afterwards; readers pick the newest
published run and read only its rows, so they see old or new results, never a mix.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from crowdlab.projects.models import InferenceModel, Item, Project


class RunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    PUBLISHED = "published", "Published"
    FAILED = "failed", "Failed"
    DISCARDED = "discarded", "Discarded (a newer run published first)"
    # Stopped on request (API, project page, admin): never publishes. Not active,
    # so the partial unique index below lets a new run start at once.
    CANCELLED = "cancelled", "Cancelled"


class RunTrigger(models.TextChoices):
    THRESHOLD = "threshold", "New annotations"
    TIMER = "timer", "Timer"
    MANUAL = "manual", "Run now"
    SETTLE = "settle", "Labels settled: cold refit after a warm run"


class FitMode(models.TextChoices):
    COLD = "cold", "Cold (trained from scratch)"
    WARM = "warm", "Warm (fine-tuned from an earlier run)"


class InferenceRun(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    model = models.CharField(max_length=16, choices=InferenceModel.choices)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.PENDING)
    trigger = models.CharField(max_length=10, choices=RunTrigger.choices, default=RunTrigger.MANUAL)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    warm_start_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # How the model was trained and why (set when the run publishes): a warm refit
    # only while the labels differ little from those of the last cold fit.
    fit_mode = models.CharField(max_length=4, choices=FitMode.choices, blank=True)
    fit_reason = models.TextField(blank=True)
    # What the items' features came from ("numeric", "text: all-MiniLM-L6-v2 ...",
    # "text: tfidf-svd", "none"), set when the run publishes.
    features = models.CharField(max_length=255, blank=True)
    cold_refit = models.BooleanField(
        default=False, help_text="Requested as a full cold refit: ignore every earlier run's checkpoint."
    )
    # Snapshot: the largest annotation id the run read, and the counts it saw.
    snapshot_annotation_id = models.BigIntegerField(null=True, blank=True)
    n_items = models.PositiveIntegerField(default=0)
    n_annotations = models.PositiveIntegerField(default=0)
    n_annotators = models.PositiveIntegerField(default=0)
    progress_epoch = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    loss_history = models.JSONField(default=list, blank=True)
    final_loss = models.FloatField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True, help_text="Seconds per phase.")
    error = models.TextField(blank=True)
    # Hyper-parameters passed to ``inference.make_model`` on top of the defaults.
    params = models.JSONField(default=dict, blank=True)
    # Who claimed the run: "hostname/pid" of the worker process and the Celery
    # task id; a restarted worker fails the runs its previous life left running.
    worker = models.CharField(max_length=255, blank=True)
    task_id = models.CharField(max_length=255, blank=True)
    checkpoint = models.BinaryField(null=True, blank=True, editable=False)
    # Back-off of automatic runs: a run that failed on its data with the project's
    # own settings (e.g. every label is one class) would fail again on the same
    # labels, and a cancelled run was stopped on purpose; the threshold and the
    # timer then count only annotations newer than this id (``live.triggers``).
    retry_after_annotation_id = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Automatic runs wait for annotations newer than this id (set when this run failed on its data "
        "or was cancelled); 'Run now' is not held back.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["project", "status", "-id"], name="run_project_status_idx")]
        constraints = [
            # At most one active run per project: creating a second pending run
            # fails at the database, so concurrent triggers cannot both start one.
            models.UniqueConstraint(
                fields=["project"],
                condition=models.Q(status__in=["pending", "running"]),
                name="run_one_active_per_project",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.model}, {self.status})"


class LabelSource(models.TextChoices):
    CROWD = "crowd", "Aggregated from crowd labels"
    PREDICTED = "predicted", "Predicted by the classifier (no human label)"


class AggregatedLabel(models.Model):
    run = models.ForeignKey(InferenceRun, on_delete=models.CASCADE, related_name="labels")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="aggregated_labels")
    label = models.CharField(max_length=100)
    confidence = models.FloatField()
    probabilities = models.JSONField(help_text="Class probabilities in the project's class order.")
    source = models.CharField(max_length=10, choices=LabelSource.choices, default=LabelSource.CROWD)
    n_annotations = models.PositiveIntegerField(default=0)
    # Not a column: the web UI's results page sets it on the rows it shows (the
    # run's CrowdInG-generated annotations of the row's item) for its template.
    generated_list: list[GeneratedAnnotation]

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "item"], name="aggregated_unique")]

    def __str__(self) -> str:
        return f"run {self.run_id}: item {self.item_id} → {self.label} ({self.confidence:.2f})"


class AnnotatorConfusion(models.Model):
    run = models.ForeignKey(InferenceRun, on_delete=models.CASCADE, related_name="confusions")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="confusions")
    matrix = models.JSONField(help_text="C×C, row = true class, row-stochastic.")
    omega = models.FloatField(null=True, blank=True, help_text="Mean ω: share of noise from the common confusion.")
    omegas = models.JSONField(null=True, blank=True, help_text="Per-annotation ω values (for the histogram).")
    n_annotations = models.PositiveIntegerField(default=0)
    learned_accuracy = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "annotator"], name="confusion_unique")]

    def __str__(self) -> str:
        return f"run {self.run_id}: confusion of annotator {self.annotator_id}"


class CommonConfusion(models.Model):
    run = models.OneToOneField(InferenceRun, on_delete=models.CASCADE, related_name="common_confusion")
    matrix = models.JSONField()

    def __str__(self) -> str:
        return f"run {self.run_id}: common confusion"


class GeneratedAnnotation(models.Model):
    """An annotation CrowdInG generated for a sparse item: never human work."""

    run = models.ForeignKey(InferenceRun, on_delete=models.CASCADE, related_name="generated")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="generated_annotations")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    label = models.CharField(max_length=100)
    probability = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["run", "item"], name="generated_run_item_idx")]

    def __str__(self) -> str:
        return f"run {self.run_id}: generated {self.label} on item {self.item_id}"
