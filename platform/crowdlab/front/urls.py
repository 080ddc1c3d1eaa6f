"""Web UI routes. Login, logout and home keep their global names (settings
refer to them); everything else lives in the ``front`` namespace."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views

front_patterns = [
    # Annotators
    path("p/<int:project_id>/label/", views.label_page, name="label"),
    path("p/<int:project_id>/label/next/", views.label_next, name="label-next"),
    path("p/<int:project_id>/label/submit/", views.label_submit, name="label-submit"),
    path("p/<int:project_id>/label/skip/", views.label_skip, name="label-skip"),
    path("p/<int:project_id>/label/undo/", views.label_undo, name="label-undo"),
    path("p/<int:project_id>/items/<int:item_id>/media/", views.item_media, name="item-media"),
    # Requesters
    path("projects/new/", views.project_new, name="project-new"),
    path("p/<int:project_id>/", views.project_detail, name="project"),
    path("p/<int:project_id>/edit/", views.project_edit, name="project-edit"),
    path("p/<int:project_id>/members/", views.project_members_edit, name="project-members"),
    path("p/<int:project_id>/upload/", views.project_upload, name="project-upload"),
    path("p/<int:project_id>/crowd/", views.project_crowd_import, name="project-crowd"),
    path("p/<int:project_id>/run/", views.run_now, name="run-now"),
    path("p/<int:project_id>/runs/<int:run_id>/status/", views.run_status, name="run-status"),
    path("p/<int:project_id>/runs/<int:run_id>/cancel/", views.run_cancel, name="run-cancel"),
    path("p/<int:project_id>/results/", views.results, name="results"),
    path("p/<int:project_id>/export.<str:fmt>", views.export, name="export"),
    # Confusion dashboards (owner or admin)
    path("p/<int:project_id>/dashboard/", views.dashboard, name="dashboard"),
    path(
        "p/<int:project_id>/dashboard/annotators/<int:annotator_id>/",
        views.dashboard_annotator,
        name="dashboard-annotator",
    ),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include((front_patterns, "front"))),
]
