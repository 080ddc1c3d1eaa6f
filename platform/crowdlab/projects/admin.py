"""Admin of projects, members and items.

Apps above ``projects`` extend these admins from their own ``admin.py`` (they
subclass them and register the subclass in their place): ``projects`` never
imports them.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.db import models

from crowdlab.jsonlimits import admin_formfield_overrides

from .models import Item, Membership, Project


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ("user",)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "k", "model", "is_active", "created_at")
    list_filter = ("model", "is_active")
    search_fields = ("name", "owner__username")
    inlines = [MembershipInline]
    # live's admin re-registers Project with its "Run inference now" actions
    # (LiveProjectAdmin.actions: list any actions given here there too).
    # The same limits as the API and the web UI (deep JSON, long instructions).
    formfield_overrides = {
        **admin_formfield_overrides(),
        models.TextField: {"max_length": settings.PROJECT_INSTRUCTIONS_MAX_LENGTH},
    }


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("project", "user", "created_at")
    raw_id_fields = ("user", "project")


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ("external_id", "project", "kind", "n_annotations", "gold_label")
    list_filter = ("kind", "project")
    search_fields = ("external_id",)
    raw_id_fields = ("project",)
    # results' admin re-registers Item with the generated annotations inline.
    formfield_overrides = {
        **admin_formfield_overrides(),
        models.TextField: {"max_length": settings.ITEM_TEXT_MAX_LENGTH},
    }
