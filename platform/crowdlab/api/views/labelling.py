"""Labelling: the next task, skips, annotations (the annotator's requests).

Submit and next-task with a token header are first tried by the fast paths in
``api/hot.py`` (wired in ``api/urls.py``); these DRF views own the rules and
the error messages.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowdlab.labelling import selectors as labelling_selectors
from crowdlab.labelling import services as labelling_services
from crowdlab.labelling.models import Annotation
from crowdlab.projects.roles import signed_in

from .. import payloads
from ..authentication import FastTokenAuthentication
from ..filters import AnnotationFilter
from ..permissions import (
    IsProjectMember,
    IsProjectOwnerMemberOrAdmin,
    ProjectScopedMixin,
)
from ..serializers import (
    AnnotationDetailSerializer,
    AnnotationSerializer,
    AnnotationSubmitSerializer,
    AnnotationUpdateSerializer,
    ConflictSerializer,
    TaskSerializer,
)
from .base import errors, service_errors


@extend_schema(
    summary="Lease the next item to label (members)",
    description="Returns your current unexpired assignment if you hold one, else leases the unfinished item "
    "closest to completion. 204 when nothing is left for you or the project is paused. The item carries "
    "only its content: never gold labels, other annotators' labels or aggregates.",
    request=None,
    responses={
        200: TaskSerializer,
        204: OpenApiResponse(description="Nothing left to label."),
        **errors(401, 403, 404),
    },
)
class NextTaskView(ProjectScopedMixin, APIView):
    authentication_classes = [FastTokenAuthentication, SessionAuthentication]
    permission_classes = [IsProjectMember]

    def post(self, request: Request, project_pk: int) -> Response:
        assignment = labelling_services.next_task(project=self.project, annotator=signed_in(request.user))
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
    responses={200: TaskSerializer, **errors(400, 401, 403, 404)},
)
class SkipView(ProjectScopedMixin, APIView):
    permission_classes = [IsProjectMember]

    def post(self, request: Request, project_pk: int, assignment_id: int) -> Response:
        assignment = labelling_selectors.assignment_get_own(
            user=signed_in(request.user), project=self.project, assignment_id=assignment_id
        )
        if assignment is None:
            raise Http404("You hold no such assignment in this project.")
        with service_errors():
            assignment = labelling_services.assignment_skip(assignment=assignment, annotator=signed_in(request.user))
        return Response(TaskSerializer(assignment, context={"request": request}).data)


def _conflict(error: labelling_services.AnnotationConflict) -> Response:
    return Response(
        {"detail": str(error), "annotation_id": error.annotation.pk, "current_label": error.annotation.label},
        status=status.HTTP_409_CONFLICT,
    )


@extend_schema_view(
    get=extend_schema(
        summary="Annotations (owner/admin: all; annotators: their own)",
        responses={200: AnnotationSerializer(many=True), **errors(401, 404)},
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
            **errors(400, 401, 403, 404),
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
        return labelling_selectors.annotations_visible_to(user=signed_in(self.request.user), project=self.project)

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
                annotator=signed_in(request.user),
                label=data["label"],
                time_spent_ms=data.get("time_spent_ms"),
            )
        if fast is not None:
            return Response(
                payloads.annotation_payload(fast, external_id=data["item"], username=request.user.username),
                status=status.HTTP_201_CREATED,
            )
        item = labelling_selectors.item_get_by_external_id(project=self.project, external_id=data["item"])
        if item is None:
            raise Http404(f"No item with external id {data['item']!r} in this project.")
        try:
            with service_errors():
                annotation = labelling_services.annotation_submit(
                    item=item,
                    annotator=signed_in(request.user),
                    label=data["label"],
                    time_spent_ms=data.get("time_spent_ms"),
                )
        except labelling_services.AnnotationConflict as error:
            return _conflict(error)
        annotation.item = item
        annotation.annotator = signed_in(request.user)
        code = status.HTTP_201_CREATED if annotation.was_created else status.HTTP_200_OK
        return Response(AnnotationSerializer(annotation).data, status=code)


@extend_schema_view(
    get=extend_schema(
        summary="One annotation with its history", responses={200: AnnotationDetailSerializer, **errors(401, 404)}
    ),
    patch=extend_schema(
        summary="Change your label explicitly (keeps history)",
        request=AnnotationUpdateSerializer,
        responses={200: AnnotationDetailSerializer, **errors(400, 401, 403, 404)},
    ),
)
class AnnotationDetailView(ProjectScopedMixin, APIView):
    permission_classes = [IsProjectOwnerMemberOrAdmin]

    def _get(self, request: Request, annotation_id: int) -> Annotation:
        annotation = (
            labelling_selectors.annotations_visible_to(user=signed_in(request.user), project=self.project)
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
            raise PermissionDenied("Only the annotator who made an annotation may change it.")
        serializer = AnnotationUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with service_errors():
            labelling_services.annotation_update(
                annotation=annotation, label=serializer.validated_data["label"], annotator=request.user
            )
        return Response(AnnotationDetailSerializer(self._get(request, annotation_id)).data)
