from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from crowdlab.projects.models import Project
from crowdlab.projects.roles import is_admin, is_requester, make_requester
from crowdlab.projects.selectors import (
    project_get_for_annotator,
    project_get_for_owner,
    projects_owned_by,
    projects_visible_to,
)
from tests.platform.factories import ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_roles(requester: Any, annotator: Any, admin_user: Any) -> None:
    assert is_requester(requester) and not is_admin(requester)
    assert not is_requester(annotator)
    assert is_requester(admin_user) and is_admin(admin_user)
    assert not is_requester(AnonymousUser())
    user = UserFactory(username="late")
    assert not is_requester(user)
    make_requester(user)
    assert is_requester(user)


def test_visibility(
    project: Project, requester: Any, other_requester: Any, annotator: Any, outsider: Any, admin_user: Any
) -> None:
    other = ProjectFactory(owner=other_requester, name="Other")
    paused = ProjectFactory(owner=requester, name="Paused", is_active=False)
    paused.memberships.create(user=annotator)
    assert set(projects_visible_to(requester)) == {project, paused}
    assert set(projects_visible_to(annotator)) == {project, paused}
    assert set(projects_visible_to(other_requester)) == {other}
    assert set(projects_visible_to(outsider)) == set()
    assert set(projects_visible_to(AnonymousUser())) == set()
    assert set(projects_visible_to(admin_user)) == {project, paused, other}
    assert set(projects_owned_by(admin_user)) == {project, paused, other}
    assert set(projects_owned_by(annotator)) == set()


def test_get_for_owner_refusals(
    project: Project, requester: Any, annotator: Any, other_requester: Any, admin_user: Any
) -> None:
    assert project_get_for_owner(user=requester, project_id=project.pk) == project
    assert project_get_for_owner(user=admin_user, project_id=project.pk) == project
    with pytest.raises(PermissionDenied):
        project_get_for_owner(user=annotator, project_id=project.pk)
    with pytest.raises(Http404):
        project_get_for_owner(user=other_requester, project_id=project.pk)
    with pytest.raises(Http404):
        project_get_for_owner(user=requester, project_id=project.pk + 1000)


def test_get_for_annotator_refusals(project: Project, requester: Any, annotator: Any, outsider: Any) -> None:
    assert project_get_for_annotator(user=annotator, project_id=project.pk) == project
    with pytest.raises(PermissionDenied):
        project_get_for_annotator(user=requester, project_id=project.pk)
    with pytest.raises(Http404):
        project_get_for_annotator(user=outsider, project_id=project.pk)
