"""DRF permission classes for project-scoped endpoints.

They work together with the selectors in ``projects.selectors``: querysets are
scoped to what the user may see, and these classes decide what they may *do*.
Project-scoped routes carry the project id in the URL kwarg ``project_pk``;
the classes resolve it once, store it on ``view.project`` and refuse with 404
(no relation: ids don't leak) or 403 (member without the needed role).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.http import Http404
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from crowdlab.projects.models import Project
from crowdlab.projects.roles import can_manage_project, is_requester
from crowdlab.projects.selectors import (
    is_member,
    project_get_for_annotator,
    project_get_for_owner,
    project_get_visible,
)

if TYPE_CHECKING:
    # A stub-only alias: what DRF's APIView declares permission_classes as.
    from rest_framework.permissions import _PermissionClass

PROJECT_KWARG = "project_pk"


def _project_id(view: Any) -> int | None:
    raw = getattr(view, "kwargs", {}).get(PROJECT_KWARG)
    if raw is None:
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise Http404("No such project.") from None


def _object_project(obj: Any) -> Project | None:
    if isinstance(obj, Project):
        return obj
    return getattr(obj, "project", None)


class IsRequester(BasePermission):
    """Authenticated requesters (group ``requesters``) and admins."""

    message = "Only requesters may do this; ask an admin to add you to the 'requesters' group."

    def has_permission(self, request: Request, view: Any) -> bool:
        return is_requester(request.user)


class _ProjectScopedPermission(BasePermission):
    """Resolves the project in the URL once with ``resolve`` and stores it on
    ``view.project``; ``resolve`` raises Http404 for outsiders and
    PermissionDenied for people without the needed role."""

    resolve: Any = None  # a projects.selectors function (user=, project_id=) -> Project

    def has_permission(self, request: Request, view: Any) -> bool:
        # request.user is never None here: crowdlab keeps DRF's UNAUTHENTICATED_USER (AnonymousUser).
        if not request.user.is_authenticated:
            return False
        project_id = _project_id(view)
        if project_id is None:
            return True  # object-level check decides (e.g. /projects/{pk}/)
        view.project = type(self).resolve(user=request.user, project_id=project_id)
        return True


class IsProjectOwnerOrAdmin(_ProjectScopedPermission):
    """The owner of the project in the URL (or of the object), or an admin."""

    message = "Only the project's owner or an admin may do this."
    resolve = staticmethod(project_get_for_owner)

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        project = _object_project(obj)
        return project is not None and can_manage_project(request.user, project)


class IsProjectMember(_ProjectScopedPermission):
    """An annotator who is a member of the project in the URL (or of the object)."""

    message = "Only annotators who are members of this project may do this."
    resolve = staticmethod(project_get_for_annotator)

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        project = _object_project(obj)
        return project is not None and is_member(user=request.user, project=project)


class IsProjectOwnerMemberOrAdmin(_ProjectScopedPermission):
    """Anyone with a role in the project in the URL: owner, admin or member.

    Used for reads whose queryset is itself scoped (owners see all rows,
    members only their own).
    """

    message = "Only the project's owner, an admin or its annotators may do this."
    resolve = staticmethod(project_get_visible)

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        project = _object_project(obj)
        return project is not None and (
            can_manage_project(request.user, project) or is_member(user=request.user, project=project)
        )


# The one base of the views under ``/projects/{project_pk}/``. Their permission
# class (one of the ``_ProjectScopedPermission`` classes above) resolves the
# project in the URL once and stores it on ``self.project``, refusing outsiders
# with 404 and people without the role with 403. Owner/admin unless the view
# names another class: the safe default for a view that forgets to.
# No docstring on purpose: drf-spectacular publishes the nearest docstring in a
# view's MRO as the operation's description.
class ProjectScopedMixin:
    permission_classes: Sequence[_PermissionClass] = [IsProjectOwnerOrAdmin]
    project: Project
