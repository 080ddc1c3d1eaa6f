"""The streamed export of a project's labels (owner/admin only: annotators
get 403, they never see aggregates; people with no relation to the project
404). The view hands the request to ``results.export``."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowdlab.results.export import (
    EXPORT_CONTENT_TYPES,
    EXPORT_FORMATS,
    export_response,
)

from ..permissions import IsProjectOwnerOrAdmin, ProjectScopedMixin
from .base import JSONErrorsMixin


class ExportRowSerializer(serializers.Serializer):
    item = serializers.CharField(help_text="The item's external id.")
    # A field, not Field.label: DRF's metaclass moves declared fields into
    # _declared_fields, which the stubs cannot model (djangorestframework-stubs#158).
    label = serializers.CharField(allow_null=True)  # type: ignore[assignment]
    confidence = serializers.FloatField(allow_null=True)
    # A class the run's probability vector does not cover exports null.
    probabilities = serializers.DictField(child=serializers.FloatField(allow_null=True), allow_null=True)
    n_annotations = serializers.IntegerField()
    run_id = serializers.IntegerField(allow_null=True, help_text="Null: majority vote (no run covers the item).")
    # A field, not Field.source: DRF's metaclass moves declared fields into
    # _declared_fields, which the stubs cannot model (djangorestframework-stubs#158).
    source = serializers.ChoiceField(choices=["crowd", "predicted"], allow_null=True)  # type: ignore[assignment]


class ExportView(JSONErrorsMixin, ProjectScopedMixin, APIView):
    permission_classes = [IsAuthenticated, IsProjectOwnerOrAdmin]

    @extend_schema(
        operation_id="projects_export",
        summary="Stream the project's labels (CSV, JSON or JSONL)",
        description=(
            "One row per item: external id, label, confidence, per-class probabilities (`p:<class>` columns in "
            "CSV), number of human annotations, run id and source. Labels come from the newest published "
            "inference run; items it does not cover get a majority vote of their human labels (run id null)."
        ),
        parameters=[
            OpenApiParameter(
                "as",
                str,
                enum=list(EXPORT_FORMATS),
                default="csv",
                description="Output format (not `format`, which DRF reserves).",
            ),
            OpenApiParameter(
                "generated",
                str,
                enum=["0", "1"],
                default="0",
                description=(
                    "1: add CrowdInG's generated annotations of the same run (not human labels). Every row then "
                    "has `kind` (`aggregated` or `generated`); generated rows carry item, annotator (username), "
                    "label, probability and run id, and leave confidence, class probabilities and "
                    "`n_annotations` empty. CSV gets a leading `kind` column and trailing `annotator`, "
                    "`probability` columns."
                ),
            ),
        ],
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/json"): ExportRowSerializer(many=True),
            (200, "application/x-ndjson"): OpenApiTypes.STR,
            (400, "application/json"): OpenApiResponse(description="Unknown `as` or `generated` value."),
            403: OpenApiResponse(description="Not the owner or an admin (annotators never see aggregates)."),
            404: OpenApiResponse(description="No such project (or no relation to it)."),
        },
        tags=["data"],
    )
    def get(self, request: Request, project_pk: int) -> StreamingHttpResponse | Response:
        fmt = request.query_params.get("as", "csv")
        if fmt not in EXPORT_CONTENT_TYPES:
            return Response(
                {"as": [f"{fmt!r} is not an export format; allowed: {', '.join(EXPORT_FORMATS)}."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        flag = request.query_params.get("generated", "0")
        if flag not in ("0", "1"):
            return Response(
                {"generated": [f"{flag!r} is not allowed; allowed: 0, 1."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return export_response(project=self.project, fmt=fmt, generated=flag == "1")
