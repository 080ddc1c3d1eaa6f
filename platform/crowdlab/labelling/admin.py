from __future__ import annotations

from django.contrib import admin

from .models import Annotation, AnnotationRevision, Assignment


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ("item", "annotator", "status", "created_at", "expires_at")
    list_filter = ("status",)
    raw_id_fields = ("item", "annotator", "project")


class RevisionInline(admin.TabularInline):
    model = AnnotationRevision
    extra = 0
    readonly_fields = ("old_label", "new_label", "changed_at")


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = ("item", "annotator", "label", "source", "created_at")
    list_filter = ("source", "project")
    raw_id_fields = ("item", "annotator", "project")
    inlines = [RevisionInline]


@admin.register(AnnotationRevision)
class AnnotationRevisionAdmin(admin.ModelAdmin):
    list_display = ("annotation", "old_label", "new_label", "changed_at")
    raw_id_fields = ("annotation",)
