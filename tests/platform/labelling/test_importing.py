"""The crowd import (labelling.importing): existing crowd labels become annotations."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from crowdlab.labelling.importing import crowd_import, crowd_username
from crowdlab.labelling.models import Annotation, AnnotationSource
from crowdlab.projects.importing import ImportValidationError
from crowdlab.projects.models import Item, ItemKind, Membership, Project

pytestmark = pytest.mark.django_db


def _errors(excinfo: pytest.ExceptionInfo[ImportValidationError]) -> list[dict[str, Any]]:
    return excinfo.value.as_dict()["errors"]


def test_crowd_import_creates_accounts_members_items_and_counts(project: Project) -> None:
    body = "item,annotator,label\na0,w1,cat\na0,w2,dog\na1,w1,dog\nnew-item,w3,bird\n"
    result = crowd_import(project=project, stream=body.encode())
    assert result.annotations_created == 4
    assert result.items_created == 1
    assert result.annotators_created == 3
    assert result.members_added == 3
    User = get_user_model()
    w1 = User.objects.get(username=crowd_username(project=project, annotator="w1"))
    assert w1.username == f"p{project.pk}-w1"
    assert not w1.has_usable_password()
    assert Membership.objects.filter(project=project, user=w1).exists()
    assert Annotation.objects.filter(project=project, annotator=w1, source=AnnotationSource.IMPORT).count() == 2
    counts = dict(Item.objects.filter(project=project).values_list("external_id", "n_annotations"))
    assert counts["a0"] == 2 and counts["a1"] == 1 and counts["new-item"] == 1 and counts["a2"] == 0
    assert Item.objects.get(project=project, external_id="new-item").kind == ItemKind.JSON


def test_crowd_kit_header_and_idempotent_reimport(project: Project) -> None:
    body = "task,worker,label\na0,w1,cat\na1,w1,dog\na1,w1,dog\n"
    first = crowd_import(project=project, stream=body)
    assert (first.annotations_created, first.duplicates_skipped) == (2, 1)
    second = crowd_import(project=project, stream=body)
    assert (second.annotations_created, second.duplicates_skipped, second.annotators_created) == (0, 3, 0)
    assert Annotation.objects.filter(project=project).count() == 2
    assert Item.objects.get(project=project, external_id="a1").n_annotations == 1


def test_crowd_conflicts_and_unknown_labels_import_nothing(project: Project) -> None:
    crowd_import(project=project, stream="item,annotator,label\na0,w1,cat\n")
    body = "item,annotator,label\na2,w9,cat\na0,w1,dog\na3,w9,horse\na3,w8,cat\na3,w8,bird\n"
    with pytest.raises(ImportValidationError) as excinfo:
        crowd_import(project=project, stream=body)
    errors = {error["row"]: error for error in _errors(excinfo)}
    assert set(errors) == {2, 3, 5}
    assert "already labelled 'a0' as 'cat'" in errors[2]["message"]
    assert errors[3]["message"] == "'horse' is not a class of this project; allowed: cat, dog, bird."
    assert "in row 4" in errors[5]["message"]
    assert Annotation.objects.filter(project=project).count() == 1
    assert not get_user_model().objects.filter(username=f"p{project.pk}-w9").exists()


def test_crowd_bad_header(project: Project) -> None:
    with pytest.raises(ImportValidationError) as excinfo:
        crowd_import(project=project, stream="a,b,c\n1,2,3\n")
    assert "item,annotator,label" in excinfo.value.as_dict()["detail"]


def test_crowd_accounts_are_namespaced_per_project(project: Project, requester: Any) -> None:
    other = Project.objects.create(owner=requester, name="Other", classes=project.classes)
    crowd_import(project=project, stream="item,annotator,label\na0,w1,cat\n")
    crowd_import(project=other, stream="item,annotator,label\nz,w1,cat\n")
    names = set(get_user_model().objects.filter(username__endswith="-w1").values_list("username", flat=True))
    assert names == {f"p{project.pk}-w1", f"p{other.pk}-w1"}
