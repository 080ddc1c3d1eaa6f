"""Who may do what, in one place.

Roles are deliberately simple: admins are Django staff; requesters are staff or
members of the Django group ``requesters``; annotators are whoever holds a
``Membership`` of a project (a per-project role, not a global one).
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, Group, User
from django.core.exceptions import PermissionDenied

REQUESTERS_GROUP = "requesters"

UserLike = User | AnonymousUser


def signed_in(user: UserLike) -> User:
    """``request.user`` of a view that requires a login, typed as the user it is.

    The view's login check (``login_required``, DRF's ``IsAuthenticated``) has
    already refused anonymous visitors; an anonymous user here is a view that
    forgot it, which must not reach a service.
    """
    if not isinstance(user, User) or not user.is_authenticated:
        raise PermissionDenied("you must be logged in")
    return user


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
    cached: bool | None = getattr(user, "_crowdlab_is_requester", None)
    if cached is None:
        cached = user.groups.filter(name=REQUESTERS_GROUP).exists()
        # setattr: a private cache the User model does not declare.
        setattr(user, "_crowdlab_is_requester", cached)  # noqa: B010
    return cached


def make_requester(user: User) -> None:
    """Put ``user`` into the requesters group (created on first use)."""
    group, _ = Group.objects.get_or_create(name=REQUESTERS_GROUP)
    user.groups.add(group)
    if hasattr(user, "_crowdlab_is_requester"):
        delattr(user, "_crowdlab_is_requester")


def is_project_owner(user: UserLike | None, project: object) -> bool:
    return bool(user is not None and user.is_authenticated and getattr(project, "owner_id", None) == user.pk)


def can_manage_project(user: UserLike | None, project: object) -> bool:
    """Owner or admin: edit, delete, see items, gold and aggregates."""
    return is_admin(user) or is_project_owner(user, project)
