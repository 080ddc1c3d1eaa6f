"""Projects, their members and their items."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


class InferenceModel(models.TextChoices):
    MAJORITY_VOTE = "mv", "Majority vote"
    DAWID_SKENE = "ds", "Dawid–Skene"
    CONAL = "conal", "CoNAL"
    CROWDING = "crowding", "CrowdInG"


def _json_position(index: int, field: str | None) -> str:
    return f"classes[{index}]" + (f".{field}" if field else "")


# Reserved on the labelling page: S skips, U undoes, ? opens the shortcuts help.
RESERVED_KEYS = frozenset({"s", "u", "?"})


def validate_classes(value: object, *, where: Callable[[int, str | None], str] = _json_position) -> None:
    """``classes`` is an ordered list of ``{"name": str, "key": str | None}``.

    ``where(index, field)`` words the position in error messages:
    ``classes[2].name`` by default (the JSON an API client sent); the project
    form passes one that says "line 3", the line the requester typed.
    """
    if not isinstance(value, list) or len(value) < 2:
        raise ValidationError("classes: give at least 2 classes as a list of {name, key}.")
    names: set[str] = set()
    keys: set[str] = set()
    for index, entry in enumerate(value):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValidationError(f"{where(index, None)}: expected an object with a string 'name'.")
        name = entry["name"].strip()
        if not name or len(name) > 100:
            raise ValidationError(f"{where(index, 'name')}: must be 1–100 characters.")
        if name in names:
            raise ValidationError(f"{where(index, 'name')}: duplicate class {name!r}.")
        names.add(name)
        key = entry.get("key")
        if key not in (None, ""):
            if not isinstance(key, str) or len(key) != 1 or key.lower() in RESERVED_KEYS or key == "\n":
                raise ValidationError(
                    f"{where(index, 'key')}: a single character other than S and U (reserved for skip and undo)"
                    " and ? (opens the list of shortcuts)."
                )
            if key.lower() in keys:
                raise ValidationError(f"{where(index, 'key')}: key {key!r} is used twice.")
            keys.add(key.lower())
        unknown = set(entry) - {"name", "key"}
        if unknown:
            raise ValidationError(f"{where(index, None)}: unknown fields {sorted(unknown)}; allowed: name, key.")


class Project(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_projects")
    name = models.CharField(max_length=200)
    instructions = models.TextField(blank=True, help_text="Markdown shown to annotators.")
    classes = models.JSONField(validators=[validate_classes], help_text='Ordered [{"name": ..., "key": ...}].')
    k = models.PositiveSmallIntegerField(default=3, help_text="Distinct annotators wanted per item.")
    model = models.CharField(max_length=16, choices=InferenceModel.choices, default=InferenceModel.CONAL)
    retrain_every_n = models.PositiveIntegerField(
        default=50, help_text="Start a run after this many new human annotations."
    )
    retrain_every_minutes = models.PositiveIntegerField(
        default=10, help_text="Or after this many minutes when any new annotation arrived."
    )
    require_confirmation = models.BooleanField(default=False, help_text="Annotators confirm each label with Enter.")
    lease_seconds = models.PositiveIntegerField(default=600, help_text="How long an assignment stays reserved.")
    is_active = models.BooleanField(default=True, help_text="Paused projects hand out no tasks.")
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="member_projects", blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="project_unique_name_per_owner"),
            models.CheckConstraint(condition=models.Q(k__gte=1), name="project_k_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def class_names(self) -> list[str]:
        return [entry["name"] for entry in self.classes]


class Membership(models.Model):
    """An annotator who may label a project's items."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project}"


class ItemKind(models.TextChoices):
    TEXT = "text", "Text"
    IMAGE = "image", "Image"
    AUDIO = "audio", "Audio"
    JSON = "json", "JSON"


class Item(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="items")
    external_id = models.CharField(max_length=255)
    kind = models.CharField(max_length=8, choices=ItemKind.choices, default=ItemKind.TEXT)
    text = models.TextField(blank=True)
    image = models.FileField(upload_to="items/%Y/%m/", blank=True)
    url = models.URLField(max_length=2000, blank=True, help_text="Image or audio URL.")
    data = models.JSONField(null=True, blank=True, help_text="Arbitrary JSON content.")
    features = models.JSONField(null=True, blank=True, help_text="Optional numeric feature vector.")
    # NULL is "no gold label" (filters and the dashboard test isnull); making it
    # '' would need a data migration on every deployment for no gain.
    gold_label = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001 - see above
    # Denormalised count of human annotations; kept by the labelling services so
    # that next-task can skip full items without counting rows.
    n_annotations = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "external_id"], name="item_unique_external_id"),
        ]
        # next-task scans one project's unfinished items, fullest first, then by id.
        indexes = [models.Index(fields=["project", "-n_annotations", "id"], name="item_next_task_idx")]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.external_id}"
