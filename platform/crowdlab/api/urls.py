"""The API's URLs, by resource (the views are in ``api/views/``).

Submit and next-task try the token fast paths of ``api/hot.py`` first.
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path
from rest_framework.routers import DefaultRouter

from . import hot
from .views import auth, export, items, labelling, projects, runs

app_name = "api"

router = DefaultRouter()
router.register("projects", projects.ProjectViewSet, basename="project")

items_router = DefaultRouter()
items_router.include_root_view = False
items_router.register("items", items.ItemViewSet, basename="item")

# Under /projects/<project_pk>/.
project_urls: list[URLPattern | URLResolver] = [
    # Members.
    path("members/", projects.MemberListView.as_view(), name="project-members"),
    path("members/<int:user_id>/", projects.MemberDetailView.as_view(), name="project-member"),
    # Labelling.
    path("next-task/", hot.with_fast_path(hot.next_task_fast, labelling.NextTaskView.as_view()), name="next-task"),
    path("assignments/<int:assignment_id>/skip/", labelling.SkipView.as_view(), name="assignment-skip"),
    path(
        "annotations/", hot.with_fast_path(hot.submit_fast, labelling.AnnotationListView.as_view()), name="annotations"
    ),
    path("annotations/<int:annotation_id>/", labelling.AnnotationDetailView.as_view(), name="annotation"),
    path("annotator-stats/", runs.AnnotatorStatsView.as_view(), name="annotator-stats"),
    # Items.
    path("", include(items_router.urls)),
]

urlpatterns: list[URLPattern | URLResolver] = [
    # Items and imports; export.
    path("projects/<int:project_pk>/items/import/", items.ItemImportView.as_view(), name="project-items-import"),
    path("projects/<int:project_pk>/items/upload/", items.ItemUploadView.as_view(), name="project-items-upload"),
    path("projects/<int:project_pk>/crowd/import/", items.CrowdImportView.as_view(), name="project-crowd-import"),
    path("projects/<int:project_pk>/export/", export.ExportView.as_view(), name="project-export"),
    # Auth, projects, members, labelling.
    path("auth/token/", auth.TokenView.as_view(), name="token"),
    path("projects/<int:project_pk>/", include(project_urls)),
    path("", include(router.urls)),
    # Runs and results.
    path("projects/<int:project_pk>/runs/", runs.RunListCreateView.as_view(), name="project-runs"),
    path("projects/<int:project_pk>/runs/<int:run_pk>/", runs.RunDetailView.as_view(), name="project-run-detail"),
    path(
        "projects/<int:project_pk>/runs/<int:run_pk>/cancel/", runs.RunCancelView.as_view(), name="project-run-cancel"
    ),
    path("projects/<int:project_pk>/results/labels/", runs.LatestLabelsView.as_view(), name="project-results-labels"),
    path(
        "projects/<int:project_pk>/results/annotators/",
        runs.LatestAnnotatorsView.as_view(),
        name="project-results-annotators",
    ),
    path(
        "projects/<int:project_pk>/results/generated/",
        runs.LatestGeneratedView.as_view(),
        name="project-results-generated",
    ),
    path(
        "projects/<int:project_pk>/results/common-confusion/",
        runs.LatestCommonConfusionView.as_view(),
        name="project-results-common-confusion",
    ),
]
