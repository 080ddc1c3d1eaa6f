from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from crowdlab.projects.models import Membership, Project
from crowdlab.projects.services import (
    membership_add,
    project_create,
    project_delete,
    project_update,
)
from tests.platform.factories import AnnotationFactory

pytestmark = pytest.mark.django_db

CLASSES = [{"name": "pos", "key": "p"}, {"name": "neg", "key": ""}]


def test_create_normalises_classes(requester: Any) -> None:
    project = project_create(owner=requester, name="Sentiment", classes=CLASSES, k=2, model="ds")
    assert project.classes == [{"name": "pos", "key": "p"}, {"name": "neg", "key": None}]
    assert project.owner == requester and project.k == 2


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"classes": [{"name": "only"}]}, "classes", "at least 2"),
        ({"classes": [{"name": "a", "key": "x"}, {"name": "b", "key": "x"}]}, "classes", "used twice"),
        ({"classes": [{"name": "a"}, {"name": "a"}]}, "classes", "duplicate"),
        ({"model": "svm"}, "model", "mv, ds, conal, crowding"),
        ({"k": 0}, "k", "≥ 1"),
        ({"colour": "red"}, "colour", "allowed"),
    ],
)
def test_create_rejects_bad_input(requester: Any, fields: dict[str, Any], field: str, fragment: str) -> None:
    arguments = {"classes": CLASSES, **fields}
    with pytest.raises(ValidationError) as error:
        project_create(owner=requester, name="Bad", **arguments)
    assert field in error.value.message_dict
    assert fragment in " ".join(error.value.message_dict[field])


def test_duplicate_name_rejected(requester: Any) -> None:
    project_create(owner=requester, name="Twice", classes=CLASSES)
    with pytest.raises(ValidationError) as error:
        project_create(owner=requester, name="Twice", classes=CLASSES)
    assert "name" in error.value.message_dict


def test_update_cannot_drop_used_class(project: Project, annotator: Any) -> None:
    AnnotationFactory(item=project.items.first(), annotator=annotator, label="bird")
    with pytest.raises(ValidationError) as error:
        project_update(project=project, classes=[{"name": "cat"}, {"name": "dog"}])
    assert "bird" in str(error.value)
    project_update(project=project, classes=[{"name": "cat"}, {"name": "dog"}, {"name": "bird"}, {"name": "fish"}])
    project.refresh_from_db()
    assert project.class_names == ["cat", "dog", "bird", "fish"]


def test_membership_add_is_idempotent(project: Project, outsider: Any) -> None:
    membership_add(project=project, user=outsider)
    membership_add(project=project, user=outsider)
    assert Membership.objects.filter(project=project, user=outsider).count() == 1


def test_delete(project: Project) -> None:
    project_delete(project=project)
    assert not Project.objects.filter(pk=project.pk).exists()
