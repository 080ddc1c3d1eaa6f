"""Reads of projects, memberships and items, scoped by who asks.

Access policy (used by the API and the web UI alike):

* admins see every project;
* requesters see the projects they own;
* annotators see the projects they are members of (active and paused).

Lookups by id distinguish two refusals so that ids of other people's projects
do not leak: someone with *no* relation to a project gets ``Http404`` (as if it
did not exist); a member who is not the owner asking for owner-only data gets
``PermissionDenied`` (403) because they already know the project exists.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q, QuerySet
from django.http import Http404

from .models import Item, Membership, Project
from .roles import is_admin

UserLike = User | AnonymousUser


def projects_visible_to(user: UserLike) -> QuerySet[Project]:
    """Projects ``user`` may see at all: admin all, owner own, annotator member-of."""
    if not user.is_authenticated:
        return Project.objects.none()
    if is_admin(user):
        return Project.objects.all()
    member_of = Membership.objects.filter(user=user).values("project_id")
    return Project.objects.filter(Q(owner=user) | Q(id__in=member_of))


def projects_owned_by(user: UserLike) -> QuerySet[Project]:
    """Projects ``user`` may manage: admin all, otherwise owned ones."""
    if not user.is_authenticated:
        return Project.objects.none()
    if is_admin(user):
        return Project.objects.all()
    return Project.objects.filter(owner=user)


def projects_annotated_by(user: UserLike) -> QuerySet[Project]:
    """Projects ``user`` is a member (annotator) of."""
    if not user.is_authenticated:
        return Project.objects.none()
    return Project.objects.filter(memberships__user=user)


def is_member(*, user: UserLike, project: Project) -> bool:
    if not user.is_authenticated:
        return False
    return Membership.objects.filter(project=project, user=user).exists()


def project_get_for_owner(*, user: UserLike, project_id: int) -> Project:
    """The project if ``user`` owns it (or is admin).

    Raises ``Http404`` for outsiders and ``PermissionDenied`` for members.
    """
    project = projects_visible_to(user).filter(pk=project_id).first()
    if project is None:
        raise Http404("No such project.")
    if is_admin(user) or project.owner_id == user.pk:
        return project
    raise PermissionDenied("Only the project's owner or an admin may do this.")


def project_get_for_annotator(*, user: UserLike, project_id: int) -> Project:
    """The project if ``user`` is a member of it.

    Raises ``Http404`` for outsiders and ``PermissionDenied`` for the owner or
    admins who are not members (they manage, they do not label).
    """
    if user.is_authenticated:
        # Hot path (every next-task and submit): one query for a member.
        # Raw SQL: compiling the ORM query cost more CPU than running it.
        member_of = list(
            Project.objects.raw(
                "SELECT p.* FROM projects_project p JOIN projects_membership m ON m.project_id = p.id"
                " WHERE p.id = %s AND m.user_id = %s",
                [project_id, user.pk],
            )
        )
        if member_of:
            return member_of[0]
    project = projects_visible_to(user).filter(pk=project_id).first()
    if project is None:
        raise Http404("No such project.")
    if is_member(user=user, project=project):
        return project
    raise PermissionDenied("Only annotators who are members of this project may do this.")


def project_get_visible(*, user: UserLike, project_id: int) -> Project:
    """The project if ``user`` may see it at all, else ``Http404``."""
    project = projects_visible_to(user).filter(pk=project_id).first()
    if project is None:
        raise Http404("No such project.")
    return project


def project_members(*, project: Project) -> QuerySet[Membership]:
    return Membership.objects.filter(project=project).select_related("user").order_by("id")


def items_for_project(*, project: Project) -> QuerySet[Item]:
    """All items of a project (owner/admin only: includes gold)."""
    return Item.objects.filter(project=project).order_by("id")


def user_get_by_username(*, username: str) -> User:
    """The user named ``username``; ``ValidationError`` naming the field otherwise."""
    try:
        return User.objects.get(username=username)
    except User.DoesNotExist:
        raise ValidationError({"username": f"no user named {username!r}."}) from None
