"""Serializers of the core API. Annotator-facing ones never carry gold labels,
other annotators' labels, counts of others or aggregates."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from labelling.models import Annotation, AnnotationRevision, Assignment
from projects.models import InferenceModel, Item, Project, validate_classes
from projects.services import EDITABLE_FIELDS

MODEL_CHOICES_TEXT = ", ".join(InferenceModel.values)


class ProjectClassSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    key = serializers.CharField(max_length=1, allow_null=True, allow_blank=True, required=False)


class ProjectSerializer(serializers.ModelSerializer):
    """The owner's / admin's view of a project (``access`` = ``manage``)."""

    access = serializers.SerializerMethodField()
    owner = serializers.CharField(source="owner.username", read_only=True)
    classes = ProjectClassSerializer(many=True)
    model = serializers.ChoiceField(
        choices=InferenceModel.choices,
        required=False,
        error_messages={"invalid_choice": f'"{{input}}" is not a model; allowed: {MODEL_CHOICES_TEXT}.'},
    )
    k = serializers.IntegerField(
        min_value=1,
        max_value=1000,
        required=False,
        error_messages={"min_value": "k must be ≥ 1 (distinct annotators per item)."},
    )
    instructions = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=settings.PROJECT_INSTRUCTIONS_MAX_LENGTH,
        help_text="Markdown shown to annotators.",
        error_messages={
            "max_length": "at most {max_length} characters are allowed (PROJECT_INSTRUCTIONS_MAX_LENGTH)."
        },
    )
    n_items = serializers.IntegerField(read_only=True, default=0)
    n_annotations = serializers.IntegerField(read_only=True, default=0)
    n_members = serializers.IntegerField(read_only=True, default=0)

    class Meta:
        model = Project
        fields = [
            "id",
            "access",
            "owner",
            *EDITABLE_FIELDS,
            "n_items",
            "n_annotations",
            "n_members",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "owner", "created_at", "updated_at"]
        extra_kwargs = {
            "retrain_every_n": {"min_value": 1, "max_value": 10_000_000},
            "retrain_every_minutes": {"min_value": 1, "max_value": 1_000_000},
            "lease_seconds": {"min_value": 10, "max_value": 7 * 24 * 3600},
        }
        validators: list[Any] = []  # uniqueness per owner is checked by the service with a clear message

    def get_access(self, obj: Project) -> str:
        return "manage"

    def validate_classes(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # ``name`` may be missing on partial updates (nested required fields are
        # relaxed there); validate_classes reports it with the entry's index.
        cleaned = [{"name": entry.get("name"), "key": entry.get("key") or None} for entry in value]
        try:
            validate_classes(cleaned)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.messages) from None
        return cleaned


class AnnotatorProjectSerializer(serializers.ModelSerializer):
    """What an annotator sees of a project they belong to (``access`` = ``annotate``)."""

    access = serializers.SerializerMethodField()
    classes = ProjectClassSerializer(many=True, read_only=True)
    my_annotations = serializers.IntegerField(read_only=True, default=0, help_text="Items you labelled.")

    class Meta:
        model = Project
        fields = ["id", "access", "name", "instructions", "classes", "require_confirmation", "is_active", "my_annotations"]
        read_only_fields = fields

    def get_access(self, obj: Project) -> str:
        return "annotate"


class MemberSerializer(serializers.Serializer):
    user_id = serializers.IntegerField(source="user.id", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)
    joined_at = serializers.DateTimeField(source="created_at", read_only=True)


class MemberAddSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, help_text="An existing user to add as annotator.")


class ItemSerializer(serializers.ModelSerializer):
    """Owner/admin view of an item, gold label included."""

    image = serializers.FileField(read_only=True, use_url=True, allow_null=True)

    class Meta:
        model = Item
        fields = [
            "id",
            "external_id",
            "kind",
            "text",
            "image",
            "url",
            "data",
            "features",
            "gold_label",
            "n_annotations",
            "created_at",
        ]
        read_only_fields = fields


class TaskItemSerializer(serializers.ModelSerializer):
    """The content an annotator needs to label an item, and nothing else."""

    image = serializers.FileField(read_only=True, use_url=True, allow_null=True)

    class Meta:
        model = Item
        fields = ["external_id", "kind", "text", "image", "url", "data"]
        read_only_fields = fields


class TaskSerializer(serializers.ModelSerializer):
    assignment_id = serializers.IntegerField(source="id", read_only=True)
    item = TaskItemSerializer(read_only=True)

    class Meta:
        model = Assignment
        fields = ["assignment_id", "expires_at", "item"]
        read_only_fields = fields


class AnnotationSubmitSerializer(serializers.Serializer):
    item = serializers.CharField(max_length=255, help_text="The item's external id.")
    label = serializers.CharField(max_length=100, help_text="One of the project's class names.")
    time_spent_ms = serializers.IntegerField(min_value=0, max_value=2_147_483_647, required=False, allow_null=True)


class AnnotationUpdateSerializer(serializers.Serializer):
    label = serializers.CharField(max_length=100, help_text="The new label; the old one is kept in the history.")


class RevisionSerializer(serializers.ModelSerializer):
    class Meta:
        model = AnnotationRevision
        fields = ["old_label", "new_label", "changed_at"]
        read_only_fields = fields


class AnnotationSerializer(serializers.ModelSerializer):
    item = serializers.CharField(source="item.external_id", read_only=True)
    annotator = serializers.CharField(source="annotator.username", read_only=True)

    class Meta:
        model = Annotation
        fields = ["id", "item", "annotator", "label", "source", "time_spent_ms", "created_at", "updated_at"]
        read_only_fields = fields


class AnnotationDetailSerializer(AnnotationSerializer):
    revisions = RevisionSerializer(many=True, read_only=True)

    class Meta(AnnotationSerializer.Meta):
        fields = AnnotationSerializer.Meta.fields + ["revisions"]
        read_only_fields = fields


class AnnotatorStatsSerializer(serializers.Serializer):
    annotator_id = serializers.IntegerField()
    username = serializers.CharField()
    n_annotations = serializers.IntegerField()
    agreement = serializers.FloatField(allow_null=True, help_text="Share of labels equal to the aggregate.")
    n_compared = serializers.IntegerField(help_text="Labels compared (items with an aggregate).")
    learned_accuracy = serializers.FloatField(allow_null=True, help_text="From the latest published run.")
    aggregate_source = serializers.ChoiceField(choices=["run", "majority_vote"])
    run_id = serializers.IntegerField(allow_null=True)


class ConflictSerializer(serializers.Serializer):
    detail = serializers.CharField()
    annotation_id = serializers.IntegerField()
    current_label = serializers.CharField()


