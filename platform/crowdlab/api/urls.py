from __future__ import annotations

from django.urls import include, path
from rest_framework.routers import DefaultRouter

app_name = "api"
urlpatterns: list = []

# Data in and out (owned by "dataio"; see api/views_data.py).
from crowdlab.api import views_data  # noqa: E402

urlpatterns += [
    path("projects/<int:project_pk>/items/import/", views_data.ItemImportView.as_view(), name="project-items-import"),
    path("projects/<int:project_pk>/items/upload/", views_data.ItemUploadView.as_view(), name="project-items-upload"),
    path("projects/<int:project_pk>/crowd/import/", views_data.CrowdImportView.as_view(), name="project-crowd-import"),
    path("projects/<int:project_pk>/export/", views_data.ExportView.as_view(), name="project-export"),
]

# Core: projects, members, items, next task, annotations, statistics (owned by "core"; see api/views.py).
from crowdlab.api import hot, views, views_auth  # noqa: E402

router = DefaultRouter()
router.register("projects", views.ProjectViewSet, basename="project")

items_router = DefaultRouter()
items_router.include_root_view = False
items_router.register("items", views.ItemViewSet, basename="item")

project_urls = [
    path("members/", views.MemberListView.as_view(), name="project-members"),
    path("members/<int:user_id>/", views.MemberDetailView.as_view(), name="project-member"),
    path("next-task/", hot.with_fast_path(hot.next_task_fast, views.NextTaskView.as_view()), name="next-task"),
    path("assignments/<int:assignment_id>/skip/", views.SkipView.as_view(), name="assignment-skip"),
    path("annotations/", hot.with_fast_path(hot.submit_fast, views.AnnotationListView.as_view()), name="annotations"),
    path("annotations/<int:annotation_id>/", views.AnnotationDetailView.as_view(), name="annotation"),
    path("annotator-stats/", views.AnnotatorStatsView.as_view(), name="annotator-stats"),
    path("", include(items_router.urls)),
]

urlpatterns += [
    path("auth/token/", views_auth.TokenView.as_view(), name="token"),
    path("projects/<int:project_pk>/", include(project_urls)),
    path("", include(router.urls)),
]

# Inference runs and results (owned by "live"; see api/views_runs.py).
from crowdlab.api import views_runs  # noqa: E402

urlpatterns += [
    path("projects/<int:project_pk>/runs/", views_runs.RunListCreateView.as_view(), name="project-runs"),
    path("projects/<int:project_pk>/runs/<int:run_pk>/", views_runs.RunDetailView.as_view(), name="project-run-detail"),
    path(
        "projects/<int:project_pk>/runs/<int:run_pk>/cancel/",
        views_runs.RunCancelView.as_view(),
        name="project-run-cancel",
    ),
    path("projects/<int:project_pk>/results/labels/", views_runs.LatestLabelsView.as_view(), name="project-results-labels"),
    path(
        "projects/<int:project_pk>/results/annotators/",
        views_runs.LatestAnnotatorsView.as_view(),
        name="project-results-annotators",
    ),
    path(
        "projects/<int:project_pk>/results/generated/",
        views_runs.LatestGeneratedView.as_view(),
        name="project-results-generated",
    ),
    path(
        "projects/<int:project_pk>/results/common-confusion/",
        views_runs.LatestCommonConfusionView.as_view(),
        name="project-results-common-confusion",
    ),
]
