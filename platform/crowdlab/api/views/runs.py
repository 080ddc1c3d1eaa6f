"""Inference runs, their published results and per-annotator statistics (issue 4).

Owner/admin only (``IsProjectOwnerOrAdmin``): annotators get 403 — they never
see aggregates — and people with no relation to the project 404. Results
always come from the newest published run (``results.selectors``), so a reader
sees one run's results, never a mix of two.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowdlab.live.triggers import request_run
from crowdlab.projects.models import Project
from crowdlab.results.models import (
    AggregatedLabel,
    AnnotatorConfusion,
    FitMode,
    GeneratedAnnotation,
    InferenceRun,
    LabelSource,
    RunTrigger,
)
from crowdlab.results.selectors import (
    active_run,
    annotator_statistics,
    common_confusion_for_run,
    confusions_for_run,
    generated_for_run,
    labels_for_run,
    latest_published_run,
    runs_for_project,
)
from crowdlab.results.services import RunNotActive, run_cancel

from ..permissions import IsProjectOwnerOrAdmin, ProjectScopedMixin
from ..serializers import AnnotatorStatsSerializer, StrictJSONMixin
from .base import errors


class InferenceRunSerializer(serializers.ModelSerializer):
    """A run without its checkpoint bytes."""

    progress = serializers.SerializerMethodField()
    has_checkpoint = serializers.SerializerMethodField()
    # Blank until the run trains (the model field is blank=True; a read-only
    # ModelSerializer field dropped allow_blank, so the schema refused "").
    fit_mode = serializers.ChoiceField(
        choices=FitMode.choices, allow_blank=True, read_only=True, help_text="Empty until the run has trained."
    )

    class Meta:
        model = InferenceRun
        fields = (
            "id",
            "project",
            "model",
            "status",
            "trigger",
            "requested_by",
            "cold_refit",
            "fit_mode",
            "fit_reason",
            "features",
            "warm_start_from",
            "retry_after_annotation_id",
            "snapshot_annotation_id",
            "n_items",
            "n_annotations",
            "n_annotators",
            "progress_epoch",
            "progress_total",
            "progress",
            "loss_history",
            "final_loss",
            "metrics",
            "timings",
            "params",
            "error",
            "has_checkpoint",
            "created_at",
            "started_at",
            "heartbeat_at",
            "finished_at",
            "published_at",
        )
        read_only_fields = fields

    def get_progress(self, run: InferenceRun) -> float | None:
        """Share of epochs done (0–1) while training, 1 when published."""
        if run.progress_total:
            return round(min(1.0, run.progress_epoch / run.progress_total), 4)
        return 1.0 if run.status == "published" else None

    def get_has_checkpoint(self, run: InferenceRun) -> bool:
        # ``checkpoint`` is deferred; the selector annotates whether it is set.
        return bool(getattr(run, "has_checkpoint_", False))


class RunNowSerializer(StrictJSONMixin, serializers.Serializer):
    cold = serializers.BooleanField(
        required=False,
        default=False,
        help_text="A full cold refit: train from scratch, ignoring every earlier run's checkpoint.",
    )
    params = serializers.DictField(
        required=False,
        default=dict,
        help_text='Hyper-parameters for the project\'s model on top of the defaults, e.g. {"epochs": 50}.',
    )

    def validate_params(self, value: dict[str, Any]) -> dict[str, Any]:
        # Checked here rather than at fit time: a bad name or value must be a
        # 400 naming the allowed hyper-parameters, not a failed run later.
        # Imported here, not at the top: ``inference`` loads scipy (about half
        # a second), which a web process otherwise never needs.
        from inference.models import MODELS

        model_name = self.context["project"].model
        model_class = MODELS[model_name]
        # A model's hyper-parameters are its dataclass fields (inference's convention,
        # as live.services reads them); a model that is no dataclass takes none.
        fields: tuple[dataclasses.Field[Any], ...] = (
            dataclasses.fields(model_class) if dataclasses.is_dataclass(model_class) else ()
        )
        allowed = sorted(f.name for f in fields)
        for name, item in value.items():
            if name not in allowed:
                raise serializers.ValidationError(
                    f"{name!r} is not a hyper-parameter of model {model_name!r}; allowed: {', '.join(allowed)}."
                )
            if item is not None and not isinstance(item, (bool, int, float, str)):
                raise serializers.ValidationError(f"{name}: give a number, a boolean, a string or null.")
            if isinstance(item, str) and ("\x00" in item or len(item) > 200):
                raise serializers.ValidationError(f"{name}: strings must be under 200 characters without NUL.")
        return value


class RunConflictSerializer(serializers.Serializer):
    detail = serializers.CharField()
    run = InferenceRunSerializer(allow_null=True, help_text="The active run (null if it finished meanwhile).")


class AggregatedLabelSerializer(serializers.ModelSerializer):
    item_external_id = serializers.CharField(source="item.external_id", read_only=True)

    class Meta:
        model = AggregatedLabel
        fields = ("item", "item_external_id", "label", "confidence", "probabilities", "source", "n_annotations", "run")
        read_only_fields = fields


class AnnotatorConfusionSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="annotator.username", read_only=True)

    class Meta:
        model = AnnotatorConfusion
        fields = ("annotator", "username", "matrix", "omega", "omegas", "n_annotations", "learned_accuracy", "run")
        read_only_fields = fields


class GeneratedAnnotationSerializer(serializers.ModelSerializer):
    """A CrowdInG-generated annotation; ``kind`` is always "generated" (never a human label)."""

    item_external_id = serializers.CharField(source="item.external_id", read_only=True)
    username = serializers.CharField(source="annotator.username", read_only=True)
    kind = serializers.SerializerMethodField()

    class Meta:
        model = GeneratedAnnotation
        fields = ("item", "item_external_id", "annotator", "username", "label", "probability", "kind", "run")
        read_only_fields = fields

    def get_kind(self, obj: GeneratedAnnotation) -> str:
        return "generated"


class CommonConfusionSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    classes = serializers.ListField(child=serializers.CharField())
    matrix = serializers.ListField(child=serializers.ListField(child=serializers.FloatField()))


# --------------------------------------------------------------------------- helpers


def published_run(request: Request, project: Project) -> InferenceRun:
    """The published run whose results to show: ``?run=<id>`` pins one, so that
    paging through results stays on one run even if a newer one publishes
    meanwhile; else the newest."""
    pinned = request.query_params.get("run")
    if pinned not in (None, ""):
        try:
            run_id = int(pinned)
        except ValueError:
            raise ValidationError({"run": f"must be a run id (integer), got {pinned!r}."}) from None
        run = runs_for_project(project=project).filter(pk=run_id, status="published").first()
        if run is None:
            raise NotFound(f"Run {run_id} is not a published run of this project.")
        return run
    run = latest_published_run(project)
    if run is None:
        raise NotFound("No published inference run yet for this project.")
    return run


def _float_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError({name: f"must be a number between 0 and 1, got {raw!r}."}) from None
    if not 0.0 <= value <= 1.0:
        raise ValidationError({name: f"must be between 0 and 1, got {value}."})
    return value


# --------------------------------------------------------------------------- views


@extend_schema(tags=["inference"])
class RunListCreateView(ProjectScopedMixin, generics.ListAPIView):
    serializer_class = InferenceRunSerializer

    def get_queryset(self) -> QuerySet[InferenceRun]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no project
            return InferenceRun.objects.none()
        return runs_for_project(project=self.project)

    @extend_schema(summary="List the project's inference runs (newest first)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Run now: start an inference run",
        request=RunNowSerializer,
        responses={
            202: OpenApiResponse(InferenceRunSerializer, description="Run created and queued."),
            409: OpenApiResponse(RunConflictSerializer, description="A run is already pending or running."),
        },
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        payload = RunNowSerializer(data=request.data, context={"project": self.project})
        payload.is_valid(raise_exception=True)
        run = request_run(
            project=self.project,
            trigger=RunTrigger.MANUAL,
            requested_by=request.user,
            params=payload.validated_data.get("params") or {},
            cold=payload.validated_data["cold"],
        )
        if run is None:
            current = active_run(project_id=self.project.pk)
            body = InferenceRunSerializer(current).data if current is not None else None
            return Response(
                {"detail": "A run is already pending or running for this project.", "run": body},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(InferenceRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=["inference"], summary="One inference run: status, progress, timings, metrics")
class RunDetailView(ProjectScopedMixin, generics.RetrieveAPIView):
    serializer_class = InferenceRunSerializer
    lookup_url_kwarg = "run_pk"

    def get_queryset(self) -> QuerySet[InferenceRun]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no project
            return InferenceRun.objects.none()
        return runs_for_project(project=self.project)


@extend_schema(
    tags=["inference"],
    summary="Cancel a pending or running inference run",
    description=(
        "A pending run never starts; a running run's worker stops at its next epoch. The run ends "
        "`cancelled` and publishes nothing, so the published results stay as they were. Automatic runs "
        '(threshold, timer) then wait for new annotations; "run now" is not held back.'
    ),
    request=None,
    responses={
        200: OpenApiResponse(InferenceRunSerializer, description="Cancelled; the run as it is now."),
        404: OpenApiResponse(description="No such run in this project."),
        409: OpenApiResponse(
            inline_serializer("RunNotActive", {"detail": serializers.CharField(), "run": InferenceRunSerializer()}),
            description="The run already finished (published, failed, discarded or cancelled).",
        ),
    },
)
class RunCancelView(ProjectScopedMixin, APIView):
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        run = runs_for_project(project=self.project).filter(pk=kwargs["run_pk"]).first()
        if run is None:
            raise NotFound(f"Run {kwargs['run_pk']} is not a run of this project.")
        try:
            cancelled = run_cancel(run=run, cancelled_by=request.user)
        except RunNotActive as finished:
            return Response(
                {"detail": str(finished), "run": InferenceRunSerializer(finished.run).data},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(InferenceRunSerializer(cancelled).data)


@extend_schema(
    tags=["inference"],
    summary="Latest aggregated label per item",
    parameters=[
        OpenApiParameter("label", OpenApiTypes.STR, description="Only items with this aggregated label."),
        OpenApiParameter(
            "source",
            OpenApiTypes.STR,
            enum=LabelSource.values,
            description="crowd (aggregated) or predicted (classifier, no human label).",
        ),
        OpenApiParameter("min_confidence", OpenApiTypes.FLOAT, description="0–1."),
        OpenApiParameter("max_confidence", OpenApiTypes.FLOAT, description="0–1."),
        OpenApiParameter("run", OpenApiTypes.INT, description="Pin a published run (default: the newest)."),
    ],
)
class LatestLabelsView(ProjectScopedMixin, generics.ListAPIView):
    serializer_class = AggregatedLabelSerializer

    def get_queryset(self) -> QuerySet[AggregatedLabel]:
        if getattr(self, "swagger_fake_view", False):
            return AggregatedLabel.objects.none()
        params = self.request.query_params
        label = params.get("label") or None
        if label is not None and label not in self.project.class_names:
            raise ValidationError({"label": f"{label!r} is not a class; allowed: {self.project.class_names}."})
        source = params.get("source") or None
        if source is not None and source not in LabelSource.values:
            raise ValidationError({"source": f"{source!r} is not allowed; allowed: {LabelSource.values}."})
        return labels_for_run(
            run=published_run(self.request, self.project),
            label=label,
            source=source,
            min_confidence=_float_param(self.request, "min_confidence"),
            max_confidence=_float_param(self.request, "max_confidence"),
        )


@extend_schema(
    tags=["inference"],
    summary="Latest per-annotator confusion, ω and learned accuracy",
    parameters=[OpenApiParameter("run", OpenApiTypes.INT, description="Pin a published run (default: the newest).")],
)
class LatestAnnotatorsView(ProjectScopedMixin, generics.ListAPIView):
    serializer_class = AnnotatorConfusionSerializer

    def get_queryset(self) -> QuerySet[AnnotatorConfusion]:
        if getattr(self, "swagger_fake_view", False):
            return AnnotatorConfusion.objects.none()
        return confusions_for_run(run=published_run(self.request, self.project))


@extend_schema(
    tags=["inference"],
    summary="Latest common confusion matrix (CoNAL)",
    responses={200: CommonConfusionSerializer, 404: OpenApiResponse(description="No run or no common confusion.")},
)
class LatestCommonConfusionView(ProjectScopedMixin, APIView):
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        run = published_run(self.request, self.project)
        common = common_confusion_for_run(run=run)
        if common is None:
            raise NotFound(f"Run {run.pk} ({run.model}) has no common confusion; only CoNAL learns one.")
        return Response(
            CommonConfusionSerializer(
                {"run": run.pk, "classes": self.project.class_names, "matrix": common.matrix}
            ).data
        )


@extend_schema(
    tags=["inference"],
    summary="Latest CrowdInG-generated annotations (not human labels)",
    description=(
        "Annotations CrowdInG generated for items with fewer than k human labels, from the newest "
        "published run (empty for other models). Stored apart from human annotations and never counted "
        "as human work."
    ),
    parameters=[
        OpenApiParameter("item", OpenApiTypes.STR, description="Only this item (its external id)."),
        OpenApiParameter("annotator", OpenApiTypes.INT, description="Only this annotator (user id)."),
        OpenApiParameter("label", OpenApiTypes.STR, description="Only this generated label (a class)."),
        OpenApiParameter("run", OpenApiTypes.INT, description="Pin a published run (default: the newest)."),
    ],
)
class LatestGeneratedView(ProjectScopedMixin, generics.ListAPIView):
    serializer_class = GeneratedAnnotationSerializer

    def get_queryset(self) -> QuerySet[GeneratedAnnotation]:
        if getattr(self, "swagger_fake_view", False):
            return GeneratedAnnotation.objects.none()
        params = self.request.query_params
        label = params.get("label") or None
        if label is not None and label not in self.project.class_names:
            raise ValidationError({"label": f"{label!r} is not a class; allowed: {self.project.class_names}."})
        annotator_raw = params.get("annotator")
        annotator_id: int | None = None
        if annotator_raw not in (None, ""):
            try:
                annotator_id = int(annotator_raw)
            except ValueError:
                raise ValidationError({"annotator": f"must be a user id (integer), got {annotator_raw!r}."}) from None
        item = params.get("item")
        if item is not None and "\x00" in item:
            raise ValidationError({"item": "must not contain NUL characters."})
        return generated_for_run(
            run=published_run(self.request, self.project),
            item_external_id=item or None,
            annotator_id=annotator_id,
            label=label,
        )


@extend_schema(
    summary="Per-annotator statistics (owner/admin)",
    description="Count, agreement with the aggregate (latest published run, else majority vote over items "
    "with at least two labels) and learned accuracy once a run is published.",
    responses={200: AnnotatorStatsSerializer(many=True), **errors(401, 403, 404)},
)
class AnnotatorStatsView(ProjectScopedMixin, APIView):
    permission_classes = [IsProjectOwnerOrAdmin]

    def get(self, request: Request, project_pk: int) -> Response:
        stats = annotator_statistics(project=self.project)
        return Response(AnnotatorStatsSerializer(stats, many=True).data)
