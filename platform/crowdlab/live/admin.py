"""Django admin actions "Run inference now" and "… full cold refit" on the Project admin.

``projects`` sits below ``live`` and does not import it, so the actions are
added here: a subclass of ``projects``' ProjectAdmin registered in its place.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from crowdlab.projects.admin import ProjectAdmin
from crowdlab.projects.models import Project

from .triggers import request_run


@admin.action(description="Run inference now")
def run_inference_now(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    _queue_runs(modeladmin, request, queryset, cold=False)


@admin.action(description="Run inference now: full cold refit")
def run_inference_cold(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    _queue_runs(modeladmin, request, queryset, cold=True)


def _queue_runs(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any], *, cold: bool) -> None:
    started: list[str] = []
    busy: list[str] = []
    for project in queryset:
        run = request_run(project=project, requested_by=request.user, cold=cold)
        (started if run is not None else busy).append(f"{project.name} (run {run.pk})" if run else project.name)
    if started:
        modeladmin.message_user(request, f"Queued: {', '.join(started)}.", messages.SUCCESS)
    if busy:
        modeladmin.message_user(
            request, f"Already pending or running, not queued again: {', '.join(busy)}.", messages.WARNING
        )


class LiveProjectAdmin(ProjectAdmin):
    """``projects``' ProjectAdmin with the run actions (issue 4)."""

    # ProjectAdmin declares no actions of its own (delete_selected is the admin
    # site's), so these are all of them; ``*ProjectAdmin.actions`` read Django's
    # generic, self-typed attribute through the class, which mypy cannot type.
    actions = [run_inference_now, run_inference_cold]


# ``projects.admin`` registered Project when the import above ran.
admin.site.unregister(Project)
admin.site.register(Project, LiveProjectAdmin)
