"""django-filter filter sets for the core list endpoints."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet
from django_filters.fields import IsoDateTimeField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError

from crowdlab.labelling.models import Annotation, AnnotationSource
from crowdlab.projects.models import InferenceModel, Item, ItemKind, Project

# Query values are checked as strictly as the OpenAPI schema describes them: an
# empty or malformed value of a typed parameter is a 400 naming the parameter,
# not silently "no filter" (django-filter's default), which answered a typo
# with the unfiltered list.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})", re.ASCII | re.IGNORECASE)


def _not_empty(value: Any, example: str) -> None:
    if value == "":
        raise forms.ValidationError(f"give a value, e.g. {example}, or leave the parameter out.")


class RFC3339DateTimeField(IsoDateTimeField):
    """Date-times as RFC 3339 spells them (the schema's ``date-time``), offset included."""

    def to_python(self, value: Any) -> Any:
        _not_empty(value, "2024-05-01T12:00:00Z")
        if isinstance(value, str) and not _RFC3339.fullmatch(value):
            raise forms.ValidationError(f"{value[:40]!r} is not an RFC 3339 date-time, e.g. 2024-05-01T12:00:00Z.")
        return super().to_python(value)


class StrictIntegerField(forms.IntegerField):
    def to_python(self, value: Any) -> Any:
        _not_empty(value, "3")
        return super().to_python(value)


class StrictBooleanField(forms.NullBooleanField):
    """Only ``true`` and ``false``: NullBooleanField's widget read ``2``, ``3`` or
    junk as "unknown", i.e. no filter. A text widget hands over the raw value."""

    widget = forms.TextInput

    # NullBooleanField itself narrows BooleanField.to_python to bool | None (its stub
    # carries the same ignore); mypy checks the override against BooleanField too.
    def to_python(self, value: Any) -> bool | None:  # type: ignore[override]
        if value is None:
            return None
        if value in ("true", "True"):
            return True
        if value in ("false", "False"):
            return False
        raise forms.ValidationError(f"{str(value)[:40]!r} is not a boolean; use true or false.")

    def validate(self, value: Any) -> None:
        pass


class StrictChoiceField(forms.ChoiceField):
    def to_python(self, value: Any) -> Any:
        _not_empty(value, "one of the allowed values")
        return super().to_python(value)


@extend_schema_field({"type": "integer", "minimum": 0})
class CountFilter(django_filters.NumberFilter):
    """A count: an integer ≥ 0 (NumberFilter took 0.5 and documented "number")."""

    field_class = StrictIntegerField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, min_value=0, **kwargs)


@extend_schema_field(OpenApiTypes.BOOL)
class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class StrictChoiceFilter(django_filters.ChoiceFilter):
    field_class = StrictChoiceField


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    """RFC 3339 datetimes, normalised to UTC before they reach SQL: Python
    accepts offsets PostgreSQL rejects (beyond ±15:59) and would answer 500."""

    field_class = RFC3339DateTimeField

    def filter(self, qs: QuerySet[Any], value: dt.datetime | None) -> QuerySet[Any]:
        if value is not None:
            try:
                value = value.astimezone(dt.UTC)
            except (OverflowError, ValueError):
                raise ValidationError({self.field_name: "datetime out of range."}) from None
        # django-filter is untyped: its filter() returns Any, though it is the filtered queryset.
        filtered: QuerySet[Any] = super().filter(qs, value)
        return filtered


class AnnotationFilter(django_filters.FilterSet):
    annotator = django_filters.CharFilter(field_name="annotator__username", help_text="Annotator's username.")
    item = django_filters.CharFilter(field_name="item__external_id", help_text="Item's external id.")
    label = django_filters.CharFilter(field_name="label")
    source = StrictChoiceFilter(choices=AnnotationSource.choices)
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Annotation
        fields = ["annotator", "item", "label", "source", "created_after", "created_before"]


class ProjectFilter(django_filters.FilterSet):
    is_active = StrictBooleanFilter(field_name="is_active")
    model = StrictChoiceFilter(field_name="model", choices=InferenceModel.choices)

    class Meta:
        model = Project
        fields = ["is_active", "model"]


class ItemFilter(django_filters.FilterSet):
    external_id = django_filters.CharFilter(field_name="external_id")
    kind = StrictChoiceFilter(choices=ItemKind.choices)
    has_gold = StrictBooleanFilter(method="filter_has_gold", help_text="Only items with (or without) gold.")
    min_annotations = CountFilter(field_name="n_annotations", lookup_expr="gte")
    max_annotations = CountFilter(field_name="n_annotations", lookup_expr="lte")

    class Meta:
        model = Item
        fields = ["external_id", "kind", "has_gold", "min_annotations", "max_annotations"]

    def filter_has_gold(self, queryset: QuerySet[Item], name: str, value: bool | None) -> QuerySet[Item]:
        if value is None:
            return queryset
        if value:
            return queryset.exclude(gold_label__isnull=True).exclude(gold_label="")
        return queryset.filter(gold_label__isnull=True) | queryset.filter(gold_label="")
