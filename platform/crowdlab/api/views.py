"""Core API: projects, members, items, next task, annotations, statistics.

Views stay thin: they parse input with serializers, pick the project through
the permission classes (which store it on ``self.project``) and call the
services in ``projects.services`` / ``labelling.services``.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema, extend_schema_view
from rest_framework import generics, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowdlab.labelling import selectors as labelling_selectors
from crowdlab.labelling import services as labelling_services
from crowdlab.labelling.models import Annotation
from crowdlab.projects import selectors as project_selectors
from crowdlab.projects import services as project_services
from crowdlab.projects.models import Item, Membership, Project
from crowdlab.projects.roles import can_manage_project
from crowdlab.results import selectors as results_selectors

from . import payloads
from .authentication import FastTokenAuthentication
from .filters import AnnotationFilter, ItemFilter, ProjectFilter
from .permissions import IsProjectMember, IsProjectOwnerMemberOrAdmin, IsProjectOwnerOrAdmin, IsRequester
from .serializers import (
    AnnotationDetailSerializer,
    AnnotationSerializer,
    AnnotationSubmitSerializer,
    AnnotationUpdateSerializer,
    AnnotatorProjectSerializer,
    AnnotatorStatsSerializer,
    ConflictSerializer,
    ItemSerializer,
    MemberAddSerializer,
    MemberSerializer,
    ProjectSerializer,
    TaskSerializer,
)

ERRORS = {
    400: OpenApiResponse(description="Invalid input; the body names the field and the allowed values."),
    401: OpenApiResponse(description="Not authenticated."),
    403: OpenApiResponse(description="Authenticated but not allowed (e.g. a member asking for owner data)."),
    404: OpenApiResponse(description="No such object, or no relation to the project (ids do not leak)."),
}


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: ERRORS[code] for code in codes}


@contextmanager
def service_errors() -> Iterator[None]:
    """Turn Django ``ValidationError`` from services into DRF 400 responses."""
    try:
        yield
    except DjangoValidationError as error:
        detail: Any = error.message_dict if hasattr(error, "error_dict") else error.messages
        raise ValidationError(detail) from None


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
        responses={200: ProjectViewList, **_errors(401)},
    ),
    retrieve=extend_schema(summary="One project", responses={200: ProjectView, **_errors(401, 404)}),
    create=extend_schema(summary="Create a project (requesters)", responses={201: ProjectSerializer, **_errors(400, 401, 403)}),
    update=extend_schema(summary="Replace a project (owner/admin)", responses={200: ProjectSerializer, **_errors(400, 401, 403, 404)}),
    partial_update=extend_schema(summary="Change a project (owner/admin)", responses={200: ProjectSerializer, **_errors(400, 401, 403, 404)}),
    destroy=extend_schema(summary="Delete a project and all its data (owner/admin)", responses={204: None, **_errors(401, 403, 404)}),
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
            project = project_services.project_create(owner=request.user, **fields)
        project = self.get_queryset().get(pk=project.pk)
        return Response(self._represent(project), status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        partial = kwargs.pop("partial", False)
        project = self.get_object()
        serializer = ProjectSerializer(project, data=request.data, partial=partial, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        with service_errors():
            project_services.project_update(project=project, **_project_payload(serializer))
        return Response(self._represent(self.get_queryset().get(pk=project.pk)))

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        project = self.get_object()
        project_services.project_delete(project=project)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProjectScopedMixin:
    """Project-scoped views: the permission class sets ``self.project``."""

    project: Project

    def get_project(self) -> Project:
        return self.project


@extend_schema_view(
    get=extend_schema(summary="Annotators of a project (owner/admin)", responses={200: MemberSerializer(many=True), **_errors(401, 403, 404)}),
    post=extend_schema(
        summary="Add an annotator by username (owner/admin)",
        request=MemberAddSerializer,
        responses={201: MemberSerializer, **_errors(400, 401, 403, 404)},
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


@extend_schema(summary="Remove an annotator (owner/admin); their labels stay", responses={204: None, **_errors(400, 401, 403, 404)})
class MemberDetailView(ProjectScopedMixin, APIView):
    permission_classes = [IsProjectOwnerOrAdmin]

    def delete(self, request: Request, project_pk: int, user_id: int) -> Response:
        membership = project_selectors.project_members(project=self.project).filter(user_id=user_id).first()
        if membership is None:
            raise Http404("That user is not a member of this project.")
        with service_errors():
            labelling_services.membership_remove(project=self.project, user=membership.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(summary="Items of a project, gold included (owner/admin)", responses={200: ItemSerializer(many=True), **_errors(401, 403, 404)}),
    retrieve=extend_schema(summary="One item (owner/admin)", responses={200: ItemSerializer, **_errors(401, 403, 404)}),
)
class ItemViewSet(ProjectScopedMixin, viewsets.ReadOnlyModelViewSet):
    permission_classes = [IsProjectOwnerOrAdmin]
    serializer_class = ItemSerializer
    filterset_class = ItemFilter
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[Item]:
        if getattr(self, "swagger_fake_view", False):
            return Item.objects.none()
        return project_selectors.items_for_project(project=self.project)


@extend_schema(
    summary="Lease the next item to label (members)",
    description="Returns your current unexpired assignment if you hold one, else leases the unfinished item "
    "closest to completion. 204 when nothing is left for you or the project is paused. The item carries "
    "only its content: never gold labels, other annotators' labels or aggregates.",
    request=None,
    responses={200: TaskSerializer, 204: OpenApiResponse(description="Nothing left to label."), **_errors(401, 403, 404)},
)
class NextTaskView(ProjectScopedMixin, APIView):
    authentication_classes = [FastTokenAuthentication, SessionAuthentication]
    permission_classes = [IsProjectMember]

    def post(self, request: Request, project_pk: int) -> Response:
        assignment = labelling_services.next_task(project=self.project, annotator=request.user)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        if assignment.item.image:
            # Absolute file URLs need the request: leave those to the serializer.
            return Response(TaskSerializer(assignment, context={"request": request}).data)
        return Response(payloads.task_payload(assignment))


@extend_schema(
    summary="Skip an assignment (members)",
    description="Gives the item back; you will not be offered it again.",
    request=None,
    responses={200: TaskSerializer, **_errors(400, 401, 403, 404)},
)
class SkipView(ProjectScopedMixin, APIView):
    permission_classes = [IsProjectMember]

    def post(self, request: Request, project_pk: int, assignment_id: int) -> Response:
        assignment = labelling_selectors.assignment_get_own(
            user=request.user, project=self.project, assignment_id=assignment_id
        )
        if assignment is None:
            raise Http404("You hold no such assignment in this project.")
        with service_errors():
            assignment = labelling_services.assignment_skip(assignment=assignment, annotator=request.user)
        return Response(TaskSerializer(assignment, context={"request": request}).data)


def _conflict(error: labelling_services.AnnotationConflict) -> Response:
    return Response(
        {"detail": str(error), "annotation_id": error.annotation.pk, "current_label": error.annotation.label},
        status=status.HTTP_409_CONFLICT,
    )


@extend_schema_view(
    get=extend_schema(
        summary="Annotations (owner/admin: all; annotators: their own)",
        responses={200: AnnotationSerializer(many=True), **_errors(401, 404)},
    ),
    post=extend_schema(
        summary="Submit a label for an assigned item (members)",
        description="201 for a new annotation; 200 when the same label was already stored (idempotent). "
        "A different label for an item you already labelled is 409: change it with PATCH on the annotation.",
        request=AnnotationSubmitSerializer,
        responses={
            201: AnnotationSerializer,
            200: AnnotationSerializer,
            409: ConflictSerializer,
            **_errors(400, 401, 403, 404),
        },
    ),
)
class AnnotationListView(ProjectScopedMixin, generics.ListAPIView):
    authentication_classes = [FastTokenAuthentication, SessionAuthentication]
    serializer_class = AnnotationSerializer
    filterset_class = AnnotationFilter

    def get_permissions(self) -> list[Any]:
        if self.request.method == "POST":
            return [IsProjectMember()]
        return [IsProjectOwnerMemberOrAdmin()]

    def get_queryset(self) -> QuerySet[Annotation]:
        if getattr(self, "swagger_fake_view", False):
            return Annotation.objects.none()
        return labelling_selectors.annotations_visible_to(user=self.request.user, project=self.project)

    def post(self, request: Request, project_pk: int) -> Response:
        data = payloads.plain_submit(request.data)
        if data is None:
            serializer = AnnotationSubmitSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
        # Hot path: a new label for a leased item, one SQL statement, and the
        # response built without a ModelSerializer (whose per-request field
        # construction cost more CPU than the database work).
        with service_errors():
            fast = labelling_services.annotation_submit_leased(
                project=self.project,
                external_id=data["item"],
                annotator=request.user,
                label=data["label"],
                time_spent_ms=data.get("time_spent_ms"),
            )
        if fast is not None:
            return Response(payloads.annotation_payload(fast, external_id=data["item"], username=request.user.username),
                            status=status.HTTP_201_CREATED)
        item = labelling_selectors.item_get_by_external_id(project=self.project, external_id=data["item"])
        if item is None:
            raise Http404(f"No item with external id {data['item']!r} in this project.")
        try:
            with service_errors():
                annotation = labelling_services.annotation_submit(
                    item=item, annotator=request.user, label=data["label"], time_spent_ms=data.get("time_spent_ms")
                )
        except labelling_services.AnnotationConflict as error:
            return _conflict(error)
        annotation.item = item
        annotation.annotator = request.user
        code = status.HTTP_201_CREATED if annotation.was_created else status.HTTP_200_OK
        return Response(AnnotationSerializer(annotation).data, status=code)


@extend_schema_view(
    get=extend_schema(summary="One annotation with its history", responses={200: AnnotationDetailSerializer, **_errors(401, 404)}),
    patch=extend_schema(
        summary="Change your label explicitly (keeps history)",
        request=AnnotationUpdateSerializer,
        responses={200: AnnotationDetailSerializer, **_errors(400, 401, 403, 404)},
    ),
)
class AnnotationDetailView(ProjectScopedMixin, APIView):
    permission_classes = [IsProjectOwnerMemberOrAdmin]

    def _get(self, request: Request, annotation_id: int) -> Annotation:
        annotation = (
            labelling_selectors.annotations_visible_to(user=request.user, project=self.project)
            .prefetch_related("revisions")
            .filter(pk=annotation_id)
            .first()
        )
        if annotation is None:
            raise Http404("No such annotation visible to you.")
        return annotation

    def get(self, request: Request, project_pk: int, annotation_id: int) -> Response:
        return Response(AnnotationDetailSerializer(self._get(request, annotation_id)).data)

    def patch(self, request: Request, project_pk: int, annotation_id: int) -> Response:
        annotation = self._get(request, annotation_id)
        if annotation.annotator_id != request.user.pk:
            from rest_framework.exceptions import PermissionDenied

            raise PermissionDenied("Only the annotator who made an annotation may change it.")
        serializer = AnnotationUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with service_errors():
            labelling_services.annotation_update(
                annotation=annotation, label=serializer.validated_data["label"], annotator=request.user
            )
        return Response(AnnotationDetailSerializer(self._get(request, annotation_id)).data)


@extend_schema(
    summary="Per-annotator statistics (owner/admin)",
    description="Count, agreement with the aggregate (latest published run, else majority vote over items "
    "with at least two labels) and learned accuracy once a run is published.",
    responses={200: AnnotatorStatsSerializer(many=True), **_errors(401, 403, 404)},
)
class AnnotatorStatsView(ProjectScopedMixin, APIView):
    permission_classes = [IsProjectOwnerOrAdmin]

    def get(self, request: Request, project_pk: int) -> Response:
        stats = results_selectors.annotator_statistics(project=self.project)
        return Response(AnnotatorStatsSerializer(stats, many=True).data)
