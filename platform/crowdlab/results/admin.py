from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from crowdlab.jsonlimits import admin_formfield_overrides
from crowdlab.projects.admin import ItemAdmin
from crowdlab.projects.models import Item

from .models import (
    AggregatedLabel,
    AnnotatorConfusion,
    CommonConfusion,
    GeneratedAnnotation,
    InferenceRun,
    RunStatus,
)
from .services import RunNotActive, run_cancel


@admin.action(description="Cancel the selected runs (pending or running)", permissions=["change"])
def cancel_runs(modeladmin: Any, request: HttpRequest, queryset: QuerySet[InferenceRun]) -> None:
    cancelled: list[str] = []
    finished: list[str] = []
    for run in queryset.defer("checkpoint").order_by("id"):
        try:
            run_cancel(run=run, cancelled_by=request.user)
        except RunNotActive as exc:
            finished.append(f"{run.pk} ({exc.run.status})")
        else:
            cancelled.append(str(run.pk))
    if cancelled:
        modeladmin.message_user(
            request, f"Cancelled runs {', '.join(cancelled)}; published results stay as they were.", messages.SUCCESS
        )
    if finished:
        modeladmin.message_user(
            request, f"Not active, nothing to cancel: runs {', '.join(finished)}.", messages.WARNING
        )


@admin.register(InferenceRun)
class InferenceRunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "project",
        "model",
        "status",
        "trigger",
        "fit_mode",
        "warm_start_from",
        "n_annotations",
        "final_loss",
        "created_at",
    )
    list_filter = ("status", "model", "trigger", "fit_mode", "cold_refit")
    raw_id_fields = ("project", "requested_by", "warm_start_from")
    exclude = ("checkpoint",)
    actions = [cancel_runs]
    formfield_overrides = admin_formfield_overrides()


@admin.register(AggregatedLabel)
class AggregatedLabelAdmin(admin.ModelAdmin):
    list_display = ("item", "label", "confidence", "source", "run")
    list_filter = ("source",)
    raw_id_fields = ("item", "run")
    formfield_overrides = admin_formfield_overrides()


@admin.register(AnnotatorConfusion)
class AnnotatorConfusionAdmin(admin.ModelAdmin):
    list_display = ("annotator", "run", "omega", "learned_accuracy", "n_annotations")
    raw_id_fields = ("annotator", "run")
    formfield_overrides = admin_formfield_overrides()


@admin.register(CommonConfusion)
class CommonConfusionAdmin(admin.ModelAdmin):
    list_display = ("run",)
    raw_id_fields = ("run",)
    formfield_overrides = admin_formfield_overrides()


@admin.register(GeneratedAnnotation)
class GeneratedAnnotationAdmin(admin.ModelAdmin):
    """CrowdInG's generated annotations: read-only, they are model output, not human work."""

    list_display = ("item", "annotator", "label", "probability", "run")
    # Only runs that generated something are listed (retention keeps 3 per project).
    list_filter = (("run", admin.RelatedOnlyFieldListFilter), "label")
    search_fields = ("item__external_id", "annotator__username")
    list_select_related = ("item", "annotator", "run")
    raw_id_fields = ("item", "annotator", "run")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: GeneratedAnnotation | None = None) -> bool:
        return False


class GeneratedAnnotationInline(admin.TabularInline):
    """An item's generated annotations from its published runs (retention keeps the newest 3)."""

    model = GeneratedAnnotation
    fk_name = "item"
    extra = 0
    can_delete = False
    fields = ("run", "annotator", "label", "probability")
    readonly_fields = fields
    verbose_name = "generated annotation (CrowdInG, not a human label)"
    verbose_name_plural = "generated annotations (CrowdInG, not human labels)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[GeneratedAnnotation]:
        return (
            super()
            .get_queryset(request)
            .filter(run__status=RunStatus.PUBLISHED)
            .select_related("run", "annotator")
            .order_by("-run_id", "annotator_id")
        )

    def has_add_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False


class ItemWithGeneratedAdmin(ItemAdmin):
    """``projects``' item admin plus the item's CrowdInG output, read-only
    (issue 5). Registered in its place from here because ``projects`` sits
    below ``results`` and does not import it."""

    inlines = [*ItemAdmin.inlines, GeneratedAnnotationInline]


# ``projects.admin`` registered Item when the import above ran.
admin.site.unregister(Item)
admin.site.register(Item, ItemWithGeneratedAdmin)
