"""Serializers of the core API. Annotator-facing ones never carry gold labels,
other annotators' labels, counts of others or aggregates."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import RegexValidator
from django.http import QueryDict
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from crowdlab.labelling.models import Annotation, AnnotationRevision, Assignment
from crowdlab.projects.importing.rows import (
    EXTERNAL_ID_MAX_LENGTH,
    ItemLimits,
    external_id_problem,
    text_problem,
)
from crowdlab.projects.models import InferenceModel, Item, Project, validate_classes
from crowdlab.projects.services import EDITABLE_FIELDS

MODEL_CHOICES_TEXT = ", ".join(InferenceModel.values)

_JSON_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def _expected_json_type(field: serializers.Field) -> tuple[type, ...] | None:
    """The JSON types a field accepts in a JSON body; None: any."""
    if isinstance(field, serializers.BooleanField):
        return (bool,)
    if isinstance(field, serializers.IntegerField):
        return (int,)
    if isinstance(field, (serializers.FloatField, serializers.DecimalField)):
        return (int, float)
    if isinstance(field, (serializers.CharField, serializers.ChoiceField)):
        return (str,)
    if isinstance(field, (serializers.ListField, serializers.ListSerializer)):
        return (list,)
    if isinstance(field, (serializers.DictField, serializers.Serializer)):
        return (dict,)
    return None


def _json_type_name(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


class StrictJSONMixin:
    """A value of the wrong JSON type in a JSON body is a 400 naming the field
    and the type, not coerced: DRF's fields turn ``0`` into ``False``,
    ``"5"`` into ``5`` and ``5`` into ``"5"``, so the API accepted bodies its
    OpenAPI schema calls invalid. Form data (a QueryDict, all strings) keeps
    DRF's parsing."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict) and not isinstance(data, QueryDict):
            errors: dict[str, list[str]] = {}
            for name, field in self.fields.items():  # type: ignore[attr-defined]
                if field.read_only or field.source == "*" or name not in data or data[name] is None:
                    continue
                value, expected = data[name], _expected_json_type(field)
                if expected is None:
                    continue
                if isinstance(value, bool) and bool not in expected:
                    wrong = True
                elif isinstance(value, float) and expected == (int,):
                    wrong = not value.is_integer()  # JSON Schema counts 5.0 as an integer
                else:
                    wrong = not isinstance(value, expected)
                if wrong:
                    wanted = "a number" if float in expected else _JSON_TYPE_NAMES[expected[0]]
                    errors[name] = [f"must be {wanted}, got {_json_type_name(value)}."]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)  # type: ignore[misc]


# Rules the schema can state (the service checks them too, and the ones it
# cannot: unique names and keys).
_NOT_ONLY_SPACES = RegexValidator(r"\S", "must contain a character other than spaces.")
_KEY = RegexValidator(r"^[^sSuU]?$", "a single character other than S and U (reserved for skip and undo).")


class ProjectClassSerializer(StrictJSONMixin, serializers.Serializer):
    name = serializers.CharField(max_length=100, validators=[_NOT_ONLY_SPACES])
    key = serializers.CharField(max_length=1, allow_null=True, allow_blank=True, required=False, validators=[_KEY])


class ProjectSerializer(StrictJSONMixin, serializers.ModelSerializer):
    """The owner's / admin's view of a project (``access`` = ``manage``)."""

    access = serializers.SerializerMethodField()
    owner = serializers.CharField(source="owner.username", read_only=True)
    name = serializers.CharField(max_length=200, validators=[_NOT_ONLY_SPACES])
    # many=True passes min_length on to the ListSerializer (DRF's LIST_SERIALIZER_KWARGS);
    # the stubs' BaseSerializer.__init__ lists allow_empty but not min_length.
    classes = ProjectClassSerializer(many=True, min_length=2, help_text="At least 2; names and keys unique.")  # type: ignore[call-arg]
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
        error_messages={"max_length": "at most {max_length} characters are allowed (PROJECT_INSTRUCTIONS_MAX_LENGTH)."},
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

    # One value per view, so that exactly one branch of the ProjectView oneOf matches.
    @extend_schema_field({"type": "string", "enum": ["manage"]})
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
        fields = [
            "id",
            "access",
            "name",
            "instructions",
            "classes",
            "require_confirmation",
            "is_active",
            "my_annotations",
        ]
        read_only_fields = fields

    @extend_schema_field({"type": "string", "enum": ["annotate"]})
    def get_access(self, obj: Project) -> str:
        return "annotate"


class MemberSerializer(serializers.Serializer):
    user_id = serializers.IntegerField(source="user.id", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)
    joined_at = serializers.DateTimeField(source="created_at", read_only=True)


class MemberAddSerializer(StrictJSONMixin, serializers.Serializer):
    username = serializers.CharField(max_length=150, help_text="An existing user to add as annotator.")


# Not a URLField: items without a URL (text, JSON, uploaded images) answer "",
# which is no "uri" (the schema said uri and the API answered "").
# Item fields that a request writes. Their rules live in ``projects.importing.rows``,
# which the import services apply too: the API gives the answer the service would,
# with the same message, and a limit changed in settings changes both at once
# (a ``max_length=settings...`` argument would be frozen when this module loads).
# The schema documents the limits as configured when the schema module loaded.


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": EXTERNAL_ID_MAX_LENGTH})
class ItemExternalIdField(serializers.CharField):
    """An item's external id (stripped), checked by ``rows.external_id_problem``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def run_validation(self, data: Any = empty) -> Any:
        # Before DRF's own checks, which would answer a blank or NUL-holding id in other words.
        if isinstance(data, str) and (problem := external_id_problem(data.strip())) is not None:
            raise serializers.ValidationError(problem)
        return super().run_validation(data)


@extend_schema_field({"type": "string", "maxLength": settings.ITEM_TEXT_MAX_LENGTH})
class ItemTextField(serializers.CharField):
    """An item's text, checked by ``rows.text_problem`` against ``ITEM_TEXT_MAX_LENGTH`` as it is now."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_blank", True)
        super().__init__(**kwargs)

    def run_validation(self, data: Any = empty) -> Any:
        if isinstance(data, str):
            text = data.strip() if self.trim_whitespace else data
            if (problem := text_problem(text, ItemLimits.current())) is not None:
                raise serializers.ValidationError(problem)
        return super().run_validation(data)


_ITEM_URL_HELP = "Image or audio URL (http or https); empty for items without one."


class ItemSerializer(serializers.ModelSerializer):
    """Owner/admin view of an item, gold label included."""

    image = serializers.FileField(read_only=True, use_url=True, allow_null=True)
    url = serializers.CharField(read_only=True, help_text=_ITEM_URL_HELP)

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
    url = serializers.CharField(read_only=True, help_text=_ITEM_URL_HELP)

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


class AnnotationSubmitSerializer(StrictJSONMixin, serializers.Serializer):
    item = serializers.CharField(max_length=255, help_text="The item's external id.")
    # A field, not Field.label: DRF's metaclass moves declared fields into
    # _declared_fields, which the stubs cannot model (djangorestframework-stubs#158).
    label = serializers.CharField(max_length=100, help_text="One of the project's class names.")  # type: ignore[assignment]
    time_spent_ms = serializers.IntegerField(min_value=0, max_value=2_147_483_647, required=False, allow_null=True)


class AnnotationUpdateSerializer(StrictJSONMixin, serializers.Serializer):
    # A field, not Field.label: DRF's metaclass moves declared fields into
    # _declared_fields, which the stubs cannot model (djangorestframework-stubs#158).
    label = serializers.CharField(max_length=100, help_text="The new label; the old one is kept in the history.")  # type: ignore[assignment]


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
        fields = [*AnnotationSerializer.Meta.fields, "revisions"]
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
