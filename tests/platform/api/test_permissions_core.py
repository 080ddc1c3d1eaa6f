"""Permission matrix of every core endpoint × {anonymous, annotator, outsider,
other requester, owner, admin}."""

from __future__ import annotations

from typing import Any

import pytest

from crowdlab.labelling.models import Annotation
from crowdlab.labelling.services import next_task
from crowdlab.projects.models import Membership, Project
from tests.platform.factories import AnnotationFactory, ProjectFactory

pytestmark = pytest.mark.django_db

P = "/api/projects"
MANAGE = {"anonymous": 401, "annotator": 403, "outsider": 404, "other_requester": 404, "owner": 200, "admin": 200}
ANNOTATE = {"anonymous": 401, "outsider": 404, "other_requester": 404, "owner": 403, "admin": 403}


def test_project_list(project: Project, assert_matrix: Any, requester: Any) -> None:
    other = ProjectFactory(name="Someone else's")
    responses = assert_matrix(
        "get",
        f"{P}/",
        {"anonymous": 401, "annotator": 200, "outsider": 200, "other_requester": 200, "owner": 200, "admin": 200},
    )
    ids = {role: {row["id"] for row in r.data["results"]} for role, r in responses.items() if role != "anonymous"}
    assert ids["annotator"] == {project.pk} and ids["owner"] == {project.pk}
    assert ids["outsider"] == set() and ids["other_requester"] == set()
    assert ids["admin"] == {project.pk, other.pk}
    annotator_row = responses["annotator"].data["results"][0]
    assert annotator_row["access"] == "annotate"
    assert not {"k", "n_annotations", "n_items", "model", "owner"} & set(annotator_row)
    assert responses["owner"].data["results"][0]["access"] == "manage"


def test_project_create(assert_matrix: Any) -> None:
    body = {"name": "New", "classes": [{"name": "yes", "key": "y"}, {"name": "no", "key": "n"}]}
    assert_matrix(
        "post",
        f"{P}/",
        {"anonymous": 401, "annotator": 403, "outsider": 403, "other_requester": 201, "owner": 201, "admin": 201},
        data=body,
    )
    assert Project.objects.filter(name="New").count() == 3


def test_project_retrieve_update(project: Project, assert_matrix: Any) -> None:
    responses = assert_matrix("get", f"{P}/{project.pk}/", {**MANAGE, "annotator": 200})
    assert responses["annotator"].data["access"] == "annotate"
    assert "gold_label" not in str(responses["annotator"].data)
    assert_matrix("patch", f"{P}/{project.pk}/", MANAGE, data={"instructions": "Be careful."})
    project.refresh_from_db()
    assert project.instructions == "Be careful."
    assert_matrix("put", f"{P}/{project.pk}/", MANAGE, data={"name": "Animals", "classes": project.classes})


def test_project_delete(project: Project, assert_matrix: Any, requester: Any) -> None:
    assert_matrix("delete", f"{P}/{project.pk}/", {**MANAGE, "owner": 204, "admin": 404})
    assert not Project.objects.filter(pk=project.pk).exists()
    second = ProjectFactory(owner=requester)
    assert_matrix("delete", f"{P}/{second.pk}/", {"admin": 204})


def test_members(project: Project, assert_matrix: Any, outsider: Any) -> None:
    url = f"{P}/{project.pk}/members/"
    responses = assert_matrix("get", url, MANAGE)
    assert [row["username"] for row in responses["owner"].data["results"]] == ["annotator"]
    assert_matrix("post", url, {**MANAGE, "owner": 201, "admin": 201}, data={"username": "outsider"})
    assert Membership.objects.filter(project=project, user=outsider).exists()
    # ``outsider`` is a member now, so it gets 403 rather than 404.
    assert_matrix("delete", f"{url}{outsider.pk}/", {**MANAGE, "outsider": 403, "owner": 204, "admin": 404})
    assert not Membership.objects.filter(project=project, user=outsider).exists()


def test_items(project: Project, assert_matrix: Any) -> None:
    responses = assert_matrix("get", f"{P}/{project.pk}/items/", MANAGE)
    assert len(responses["owner"].data["results"]) == 5
    assert any(row["gold_label"] for row in responses["owner"].data["results"])
    item = project.items.first()
    assert_matrix("get", f"{P}/{project.pk}/items/{item.pk}/", MANAGE)


def test_next_task_and_submit(project: Project, assert_matrix: Any) -> None:
    responses = assert_matrix("post", f"{P}/{project.pk}/next-task/", {**ANNOTATE, "annotator": 200})
    task = responses["annotator"].data
    assert set(task) == {"assignment_id", "expires_at", "item"}
    assert set(task["item"]) == {"external_id", "kind", "text", "image", "url", "data"}
    body = {"item": task["item"]["external_id"], "label": "dog"}
    assert_matrix("post", f"{P}/{project.pk}/annotations/", {**ANNOTATE, "annotator": 201}, data=body)


def test_annotation_list_and_detail(project: Project, assert_matrix: Any, annotator: Any) -> None:
    items = list(project.items.order_by("id"))
    mine = AnnotationFactory(item=items[0], annotator=annotator, label="cat")
    theirs = AnnotationFactory(item=items[1], label="dog")
    theirs.annotator.memberships.create(project=project)
    url = f"{P}/{project.pk}/annotations/"
    responses = assert_matrix("get", url, {**MANAGE, "annotator": 200})
    assert {row["id"] for row in responses["annotator"].data["results"]} == {mine.pk}
    assert {row["id"] for row in responses["owner"].data["results"]} == {mine.pk, theirs.pk}
    assert_matrix("get", f"{url}{mine.pk}/", {**MANAGE, "annotator": 200})
    assert_matrix("get", f"{url}{theirs.pk}/", {**MANAGE, "annotator": 404})
    assert_matrix(
        "patch", f"{url}{mine.pk}/", {**MANAGE, "annotator": 200, "owner": 403, "admin": 403}, data={"label": "bird"}
    )
    assert Annotation.objects.get(pk=mine.pk).label == "bird"


def test_skip(project: Project, assert_matrix: Any, annotator: Any) -> None:
    lease = next_task(project=project, annotator=annotator)
    assert lease is not None
    assert_matrix("post", f"{P}/{project.pk}/assignments/{lease.pk}/skip/", {**ANNOTATE, "annotator": 200})


def test_annotator_stats(project: Project, assert_matrix: Any) -> None:
    assert_matrix("get", f"{P}/{project.pk}/annotator-stats/", MANAGE)


def test_unknown_project_is_404_for_everyone(assert_matrix: Any) -> None:
    everyone = {"anonymous": 401, "annotator": 404, "outsider": 404, "other_requester": 404, "owner": 404, "admin": 404}
    assert_matrix("get", f"{P}/999999/", everyone)
    assert_matrix("post", f"{P}/999999/next-task/", everyone)
    assert_matrix("get", f"{P}/999999/items/", everyone)
