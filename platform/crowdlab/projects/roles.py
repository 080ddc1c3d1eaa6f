"""Who may do what, in one place.

Roles are deliberately simple: admins are Django staff; requesters are staff or
members of the Django group ``requesters``; annotators are whoever holds a
``Membership`` of a project (a per-project role, not a global one).
"""
from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group

REQUESTERS_GROUP = "requesters"

UserLike = AbstractBaseUser | AnonymousUser


def is_admin(user: UserLike | None) -> bool:
    """Admins (staff) see and edit everything."""
    return bool(user is not None and user.is_authenticated and user.is_active and getattr(user, "is_staff", False))


def is_requester(user: UserLike | None) -> bool:
    """Requesters may create projects; staff count as requesters too."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if is_admin(user):
        return True
    # Cache on the instance: permission checks run several times per request.
    cached = getattr(user, "_crowdlab_is_requester", None)
    if cached is None:
        cached = user.groups.filter(name=REQUESTERS_GROUP).exists()  # type: ignore[union-attr]
        user._crowdlab_is_requester = cached  # type: ignore[union-attr]
    return cached


def make_requester(user: AbstractBaseUser) -> None:
    """Put ``user`` into the requesters group (created on first use)."""
    group, _ = Group.objects.get_or_create(name=REQUESTERS_GROUP)
    user.groups.add(group)  # type: ignore[attr-defined]
    if hasattr(user, "_crowdlab_is_requester"):
        del user._crowdlab_is_requester  # type: ignore[attr-defined]


def is_project_owner(user: UserLike | None, project: object) -> bool:
    return bool(user is not None and user.is_authenticated and getattr(project, "owner_id", None) == user.pk)


def can_manage_project(user: UserLike | None, project: object) -> bool:
    """Owner or admin: edit, delete, see items, gold and aggregates."""
    return is_admin(user) or is_project_owner(user, project)
