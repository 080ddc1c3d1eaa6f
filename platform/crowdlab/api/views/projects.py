"""Projects and their members.

Views stay thin: they parse input with serializers, pick the project through
the permission classes (which store it on ``self.project``) and call the
services in ``projects.services`` / ``labelling.services``.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import (
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, status, viewsets
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowdlab.labelling import selectors as labelling_selectors
from crowdlab.labelling import services as labelling_services
from crowdlab.projects import selectors as project_selectors
from crowdlab.projects import services as project_services
from crowdlab.projects.models import Membership, Project
from crowdlab.projects.roles import can_manage_project, signed_in

from ..filters import ProjectFilter
from ..permissions import IsProjectOwnerOrAdmin, IsRequester, ProjectScopedMixin
from ..serializers import (
    AnnotatorProjectSerializer,
    MemberAddSerializer,
    MemberSerializer,
    ProjectSerializer,
)
from .base import errors, service_errors


def _project_view(*, many: bool) -> PolymorphicProxySerializer:
    return PolymorphicProxySerializer(
        component_name="ProjectView",
        serializers=[ProjectSerializer, AnnotatorProjectSerializer],
        resource_type_field_name="access",
        many=many,
    )


ProjectView = _project_view(many=False)


# The list answers a page of projects: with many=False the schema promised one
# project object, and every list response failed its oneOf.
ProjectViewList = _project_view(many=True)


def _project_payload(serializer: ProjectSerializer) -> dict[str, Any]:
    return dict(serializer.validated_data)


@extend_schema_view(
    list=extend_schema(
        summary="Projects you may see",
        description="Owners and admins get the full view (`access: manage`); annotators get only the projects "
        "they belong to, without gold labels or aggregates (`access: annotate`).",
        responses={200: ProjectViewList, **errors(401)},
    ),
    retrieve=extend_schema(summary="One project", responses={200: ProjectView, **errors(401, 404)}),
    create=extend_schema(
        summary="Create a project (requesters)", responses={201: ProjectSerializer, **errors(400, 401, 403)}
    ),
    update=extend_schema(
        summary="Replace a project (owner/admin)", responses={200: ProjectSerializer, **errors(400, 401, 403, 404)}
    ),
    partial_update=extend_schema(
        summary="Change a project (owner/admin)", responses={200: ProjectSerializer, **errors(400, 401, 403, 404)}
    ),
    destroy=extend_schema(
        summary="Delete a project and all its data (owner/admin)", responses={204: None, **errors(401, 403, 404)}
    ),
)
class ProjectViewSet(viewsets.ModelViewSet):
    serializer_class = ProjectSerializer
    lookup_value_regex = r"\d+"
    filterset_class = ProjectFilter

    def get_permissions(self) -> list[Any]:
        if self.action == "create":
            return [IsAuthenticated(), IsRequester()]
        if self.action in {"update", "partial_update", "destroy"}:
            return [IsAuthenticated(), IsProjectOwnerOrAdmin()]
        return [IsAuthenticated()]

    def get_queryset(self) -> QuerySet[Project]:
        user = self.request.user
        if getattr(self, "swagger_fake_view", False) or not user.is_authenticated:
            return Project.objects.none()
        return labelling_selectors.projects_with_counts(user=user)

    def _represent(self, project: Project) -> dict[str, Any]:
        if can_manage_project(self.request.user, project):
            return ProjectSerializer(project, context=self.get_serializer_context()).data
        return AnnotatorProjectSerializer(project, context=self.get_serializer_context()).data

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        rows = page if page is not None else list(queryset)
        data = [self._represent(project) for project in rows]
        return self.get_paginated_response(data) if page is not None else Response(data)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(self._represent(self.get_object()))

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = ProjectSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        fields = _project_payload(serializer)
        with service_errors():
            project = project_services.project_create(owner=signed_in(request.user), **fields)
        project = self.get_queryset().get(pk=project.pk)
        return Response(self._represent(project), status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        partial = kwargs.pop("partial", False)
        project = self.get_object()
        serializer = ProjectSerializer(
            project, data=request.data, partial=partial, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        with service_errors():
            project_services.project_update(project=project, **_project_payload(serializer))
        return Response(self._represent(self.get_queryset().get(pk=project.pk)))

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        project = self.get_object()
        project_services.project_delete(project=project)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    get=extend_schema(
        summary="Annotators of a project (owner/admin)",
        responses={200: MemberSerializer(many=True), **errors(401, 403, 404)},
    ),
    post=extend_schema(
        summary="Add an annotator by username (owner/admin)",
        request=MemberAddSerializer,
        responses={201: MemberSerializer, **errors(400, 401, 403, 404)},
    ),
)
class MemberListView(ProjectScopedMixin, generics.ListAPIView):
    permission_classes = [IsProjectOwnerOrAdmin]
    serializer_class = MemberSerializer
    filter_backends: list[Any] = []

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):
            return Membership.objects.none()
        return project_selectors.project_members(project=self.project)

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = MemberAddSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with service_errors():
            user = project_selectors.user_get_by_username(username=serializer.validated_data["username"])
            membership = project_services.membership_add(project=self.project, user=user)
        return Response(MemberSerializer(membership).data, status=status.HTTP_201_CREATED)


@extend_schema(
    summary="Remove an annotator (owner/admin); their labels stay", responses={204: None, **errors(400, 401, 403, 404)}
)
class MemberDetailView(ProjectScopedMixin, APIView):
    permission_classes = [IsProjectOwnerOrAdmin]

    def delete(self, request: Request, project_pk: int, user_id: int) -> Response:
        membership = project_selectors.project_members(project=self.project).filter(user_id=user_id).first()
        if membership is None:
            raise Http404("That user is not a member of this project.")
        with service_errors():
            labelling_services.membership_remove(project=self.project, user=membership.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
