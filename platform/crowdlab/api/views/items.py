"""Items and imports: the item list, bulk item import, one image upload and
the crowd import.

All owner/admin only (``IsProjectOwnerOrAdmin``): annotators get 403 (items
carry gold labels), people with no relation to the project 404. The import
views only pick the input apart and hand it to the services in
``projects.importing``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers, status, viewsets
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowdlab.labelling.importing import crowd_import
from crowdlab.live.triggers import embed_items_on_commit
from crowdlab.projects import selectors as project_selectors
from crowdlab.projects.importing import (
    IMPORT_FORMATS,
    ImportValidationError,
    RowError,
    item_create_with_file,
    items_import,
)
from crowdlab.projects.importing.rows import EXTERNAL_ID_MAX_LENGTH, URL_MAX_LENGTH
from crowdlab.projects.models import Item, ItemKind

from ..exceptions import translate
from ..filters import ItemFilter
from ..parsers import (
    CSVParser,
    JSONLinesParser,
    JSONLinesTextParser,
    JSONParser,
    JSONTooDeepError,
    NDJSONParser,
)
from ..permissions import IsProjectOwnerOrAdmin, ProjectScopedMixin
from ..serializers import ItemExternalIdField, ItemSerializer, ItemTextField
from .base import JSONErrorsMixin, errors


@extend_schema_view(
    list=extend_schema(
        summary="Items of a project, gold included (owner/admin)",
        responses={200: ItemSerializer(many=True), **errors(401, 403, 404)},
    ),
    retrieve=extend_schema(summary="One item (owner/admin)", responses={200: ItemSerializer, **errors(401, 403, 404)}),
)
class ItemViewSet(ProjectScopedMixin, viewsets.ReadOnlyModelViewSet):
    permission_classes = [IsProjectOwnerOrAdmin]
    serializer_class = ItemSerializer
    filterset_class = ItemFilter
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[Item]:
        if getattr(self, "swagger_fake_view", False):
            return Item.objects.none()
        return project_selectors.items_for_project(project=self.project)


# --------------------------------------------------------------------------- import serializers (schema + input)


@extend_schema_field(
    {"oneOf": [{"type": "string", "minLength": 1, "maxLength": EXTERNAL_ID_MAX_LENGTH}, {"type": "integer"}]}
)
class _ExternalIdField(serializers.Field):
    """Documentation only: the import service reads and checks the rows."""


class ItemImportRowSerializer(serializers.Serializer):
    """One item of a bulk import (documentation; the service validates)."""

    # Any one of external_id, id or item names the row (unique per project);
    # an integer is taken as its decimal string.
    external_id = _ExternalIdField(required=False, help_text="Unique per project; or give it as `id` or `item`.")
    id = _ExternalIdField(required=False, help_text="Another name for external_id.")
    item = _ExternalIdField(required=False, help_text="Another name for external_id.")
    text = ItemTextField(required=False, help_text="At most ITEM_TEXT_MAX_LENGTH characters (default 1,000,000).")
    image_url = serializers.URLField(required=False, max_length=URL_MAX_LENGTH)
    audio_url = serializers.URLField(required=False, max_length=URL_MAX_LENGTH)
    url = serializers.URLField(
        required=False, max_length=URL_MAX_LENGTH, help_text="Image or audio URL (audio if it ends in .mp3, .wav, ...)."
    )
    # A field, not Serializer.data: DRF's metaclass moves declared fields into
    # _declared_fields, which the stubs cannot model (djangorestframework-stubs#78).
    data = serializers.DictField(  # type: ignore[assignment]
        required=False,
        help_text="A JSON object of at most ITEM_DATA_MAX_BYTES bytes as UTF-8 JSON (default 1,000,000), "
        "nested at most JSON_MAX_DEPTH levels (default 64, counting the whole request body).",
    )
    features = serializers.ListField(
        child=serializers.FloatField(),
        required=False,
        min_length=1,
        max_length=settings.ITEM_FEATURES_MAX_LENGTH,
        help_text="At most ITEM_FEATURES_MAX_LENGTH numbers (default 10,000).",
    )
    gold = serializers.CharField(required=False, allow_null=True, help_text="One of the project's class names.")
    kind = serializers.ChoiceField(choices=ItemKind.choices, required=False, help_text="Inferred when absent.")


class ImportFileSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="The upload: a JSON array, JSONL or CSV file.")
    # Not "format": DRF reserves that name for renderer selection.
    upload_format = serializers.ChoiceField(
        choices=IMPORT_FORMATS, required=False, help_text="Inferred from the file name's extension when absent."
    )


class CrowdFileSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="CSV item,annotator,label (or task,worker,label).")


class ItemUploadSerializer(serializers.Serializer):
    external_id = ItemExternalIdField()
    image = serializers.FileField()
    text = ItemTextField(required=False, default="")
    gold = serializers.CharField(required=False, allow_blank=True, allow_null=True, default=None)


class RowErrorSerializer(serializers.Serializer):
    row = serializers.IntegerField(allow_null=True, help_text="1-based data row; null for the upload as a whole.")
    field = serializers.CharField(allow_null=True)
    message = serializers.CharField()


class ImportErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    error_count = serializers.IntegerField()
    # A field, not Serializer.errors: DRF's metaclass moves declared fields into
    # _declared_fields, which the stubs cannot model (djangorestframework-stubs#78).
    errors = RowErrorSerializer(many=True, help_text="The first 100 errors.")  # type: ignore[assignment]
    errors_truncated = serializers.BooleanField()


class ImportResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    kinds = serializers.DictField(child=serializers.IntegerField())


class CrowdImportResultSerializer(serializers.Serializer):
    annotations_created = serializers.IntegerField()
    duplicates_skipped = serializers.IntegerField()
    items_created = serializers.IntegerField()
    annotators_created = serializers.IntegerField()
    members_added = serializers.IntegerField()


class ItemCreatedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    kind = serializers.CharField()
    image = serializers.CharField()


# --------------------------------------------------------------------------- import views


def _rejected(error: ImportValidationError) -> Response:
    return Response(error.as_dict(), status=status.HTTP_400_BAD_REQUEST)


def _messages(detail: Any) -> list[str]:
    """The messages of a DRF error detail (a string or a list of them), flattened without recursion."""
    pending, messages = [detail], []
    while pending:
        current = pending.pop()
        if isinstance(current, (list, tuple)):
            pending.extend(reversed(current))
        elif isinstance(current, dict):
            pending.extend(reversed(list(current.values())))
        else:
            messages.append(str(current))
    return messages


def _import_error_from(exc: ValidationError | ParseError) -> ImportValidationError:
    """A form or body error of an import in the import's documented 400 body
    (``detail``, ``error_count``, ``errors`` naming the field, ``errors_truncated``)."""
    if isinstance(exc, JSONTooDeepError):
        # A JSON array body: the element holding the deep value is the row.
        index = exc.too_deep.index
        return ImportValidationError([RowError(None if index is None else index + 1, None, str(exc.too_deep))])
    if isinstance(exc, ParseError):
        return ImportValidationError([RowError(None, None, str(exc.detail))])
    errors: list[RowError] = []
    if isinstance(exc.detail, dict):
        for name, detail in exc.detail.items():
            field_name = None if name == "non_field_errors" else str(name)
            errors.extend(RowError(None, field_name, message) for message in _messages(detail))
    else:
        errors.extend(RowError(None, None, message) for message in _messages(exc.detail))
    return ImportValidationError(errors or [RowError(None, None, "the upload is invalid.")])


class _ImportView(JSONErrorsMixin, ProjectScopedMixin, APIView):
    """Every 400 of an import has the same body, whatever rejected it: the
    parser (malformed or too deeply nested JSON), the form (no file) or the
    service (bad rows)."""

    permission_classes = [IsAuthenticated, IsProjectOwnerOrAdmin]

    def handle_exception(self, exc: Exception) -> Response:
        exc = translate(exc)
        if isinstance(exc, (ValidationError, ParseError)):
            return _rejected(_import_error_from(exc))
        return super().handle_exception(exc)


def _raw_body(request: Request) -> bytes:
    # An empty body never reaches the parser: DRF then hands an empty dict.
    # request.data is whatever the parser returned (bytes from api.parsers' raw
    # parsers), wider than the stub's dict | list.
    data: object = request.data
    return data if isinstance(data, bytes) else b""


def _format_from_name(name: str) -> str | None:
    lowered = name.lower()
    for fmt in ("jsonl", "ndjson", "json", "csv"):
        if lowered.endswith("." + fmt):
            return "jsonl" if fmt == "ndjson" else fmt
    return None


_RAW_FORMATS = {
    "text/csv": "csv",
    "application/jsonl": "jsonl",
    "application/x-ndjson": "jsonl",
    "application/jsonlines": "jsonl",
}


_IMPORT_ERRORS = {
    400: OpenApiResponse(ImportErrorSerializer, description="Nothing imported; the rows and reasons."),
    403: OpenApiResponse(description="Not the owner or an admin (e.g. an annotator of the project)."),
    404: OpenApiResponse(description="No such project (or no relation to it)."),
}


class ItemImportView(_ImportView):
    parser_classes = [
        JSONParser,
        CSVParser,
        JSONLinesParser,
        NDJSONParser,
        JSONLinesTextParser,
        MultiPartParser,
        FormParser,
    ]

    @extend_schema(
        operation_id="projects_items_import",
        summary="Bulk-import up to 100,000 items (all or nothing)",
        description=(
            "Body: a JSON array of items, or a raw JSONL (`application/jsonl`, `application/x-ndjson`) or CSV "
            "(`text/csv`) body, or a multipart upload with `file` and optional `upload_format` "
            "(json, jsonl, csv). CSV: extra columns go into `data`; features as `f0..fn` columns or a JSON list "
            "in `features`. One bad row imports nothing: the 400 lists 1-based data-row numbers (a CSV header "
            "is not a row) with the field and the allowed values."
        ),
        request={
            "application/json": ItemImportRowSerializer(many=True),
            "application/jsonl": OpenApiTypes.STR,
            "application/x-ndjson": OpenApiTypes.STR,
            "text/csv": OpenApiTypes.STR,
            "multipart/form-data": ImportFileSerializer,
        },
        responses={201: ImportResultSerializer, **_IMPORT_ERRORS},
        examples=[
            OpenApiExample(
                "JSON",
                value=[
                    {"external_id": "a1", "text": "A cat on a mat", "gold": "cat"},
                    {"id": "a2", "image_url": "https://example.org/a2.jpg"},
                ],
                request_only=True,
                media_type="application/json",
            )
        ],
        tags=["data"],
    )
    def post(self, request: Request, project_pk: int) -> Response:
        content_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        try:
            if content_type in _RAW_FORMATS:
                result = items_import(project=self.project, stream=_raw_body(request), fmt=_RAW_FORMATS[content_type])
            elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
                form = ImportFileSerializer(data=request.data)
                form.is_valid(raise_exception=True)
                upload = form.validated_data["file"]
                fmt = form.validated_data.get("upload_format") or _format_from_name(upload.name or "")
                if fmt is None:
                    raise ValidationError(
                        {
                            "upload_format": [
                                f"cannot tell the format of {upload.name!r}; give upload_format: {', '.join(IMPORT_FORMATS)}."
                            ]
                        }
                    )
                result = items_import(project=self.project, stream=upload, fmt=fmt)
            else:
                if not isinstance(request.data, list):
                    raise ValidationError(
                        {"non_field_errors": ["a JSON body must be an array of item objects (or send JSONL / CSV)."]}
                    )
                result = items_import(project=self.project, rows=request.data)
        except ImportValidationError as error:
            return _rejected(error)
        embed_items_on_commit(self.project.pk)
        return Response(result.as_dict(), status=status.HTTP_201_CREATED)


class ItemUploadView(_ImportView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        operation_id="projects_items_upload",
        summary="Create one image item from an uploaded file",
        request={"multipart/form-data": ItemUploadSerializer},
        responses={201: ItemCreatedSerializer, **_IMPORT_ERRORS},
        tags=["data"],
    )
    def post(self, request: Request, project_pk: int) -> Response:
        form = ItemUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            item = item_create_with_file(
                project=self.project,
                external_id=form.validated_data["external_id"],
                image=form.validated_data["image"],
                text=form.validated_data.get("text") or "",
                gold=form.validated_data.get("gold"),
            )
        except ImportValidationError as error:
            return _rejected(error)
        return Response(
            {"id": item.pk, "external_id": item.external_id, "kind": item.kind, "image": item.image.url},
            status=status.HTTP_201_CREATED,
        )


class CrowdImportView(_ImportView):
    parser_classes = [CSVParser, MultiPartParser, FormParser]

    @extend_schema(
        operation_id="projects_crowd_import",
        summary="Import existing crowd labels (CSV item,annotator,label)",
        description=(
            "CSV with header `item,annotator,label` (crowd-kit's `task,worker,label` too), as a raw `text/csv` "
            "body or a multipart `file`. All or nothing. Workers become accounts named `p<project id>-<worker>` "
            "with unusable passwords and join the project; unknown items are created with their id only; exact "
            "duplicates are skipped, conflicting labels are errors."
        ),
        request={"text/csv": OpenApiTypes.STR, "multipart/form-data": CrowdFileSerializer},
        responses={201: CrowdImportResultSerializer, **_IMPORT_ERRORS},
        tags=["data"],
    )
    def post(self, request: Request, project_pk: int) -> Response:
        content_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        if content_type == "text/csv":
            stream: Any = _raw_body(request)
        else:
            form = CrowdFileSerializer(data=request.data)
            form.is_valid(raise_exception=True)
            stream = form.validated_data["file"]
        try:
            result = crowd_import(project=self.project, stream=stream)
        except ImportValidationError as error:
            return _rejected(error)
        embed_items_on_commit(self.project.pk)  # a crowd import may add items
        return Response(result.as_dict(), status=status.HTTP_201_CREATED)
