from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from crowdlab.labelling.models import (
    Annotation,
    AnnotationRevision,
    Assignment,
    AssignmentStatus,
)
from crowdlab.labelling.services import (
    AnnotationConflict,
    annotation_submit,
    annotation_update,
    assignment_skip,
    membership_remove,
    next_task,
)
from crowdlab.projects.models import Item, Membership, Project
from crowdlab.projects.services import membership_add
from tests.platform.factories import (
    AnnotationFactory,
    ItemFactory,
    ProjectFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def _members(project: Project, n: int, prefix: str = "ann") -> list[Any]:
    users = [UserFactory(username=f"{prefix}{i}") for i in range(n)]
    for user in users:
        Membership.objects.create(project=project, user=user)
    return users


def _label_everything(project: Project, users: list[Any]) -> dict[int, list[int]]:
    """Each user takes tasks until none is left; returns item id → annotator ids."""
    seen: dict[int, list[int]] = {}
    progress = True
    while progress:
        progress = False
        for user in users:
            assignment = next_task(project=project, annotator=user)
            if assignment is None:
                continue
            annotation_submit(item=assignment.item, annotator=user, label=project.class_names[0])
            seen.setdefault(assignment.item_id, []).append(user.pk)
            progress = True
    return seen


def test_k_distinct_annotators_and_no_double_labelling(project: Project) -> None:
    users = _members(project, 5)
    seen = _label_everything(project, users)
    assert set(seen) == set(project.items.values_list("id", flat=True))
    for annotators in seen.values():
        assert len(annotators) == project.k == len(set(annotators))
    for item in project.items.all():
        assert item.n_annotations == project.k == item.annotations.count()


def test_too_few_annotators_leave_items_short(project: Project) -> None:
    users = _members(project, 2)
    _label_everything(project, users)
    assert set(project.items.values_list("n_annotations", flat=True)) == {2}


def test_existing_lease_is_returned(project: Project, annotator: Any) -> None:
    first = next_task(project=project, annotator=annotator)
    second = next_task(project=project, annotator=annotator)
    assert first is not None and second is not None and first.pk == second.pk


def test_prefers_items_closest_to_completion(project: Project, annotator: Any) -> None:
    items = list(project.items.order_by("id"))
    AnnotationFactory(item=items[3], label="dog")
    AnnotationFactory(item=items[3], label="cat")
    AnnotationFactory(item=items[4], label="cat")
    assignment = next_task(project=project, annotator=annotator)
    assert assignment is not None and assignment.item_id == items[3].pk


def test_expired_lease_returns_to_pool(requester: Any) -> None:
    project = ProjectFactory(owner=requester, k=1)
    item = ItemFactory(project=project)
    first, second = _members(project, 2)
    lease = next_task(project=project, annotator=first)
    assert lease is not None and lease.item_id == item.pk
    assert next_task(project=project, annotator=second) is None  # the only slot is leased
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    other = next_task(project=project, annotator=second)
    assert other is not None and other.item_id == item.pk
    # The first annotator's late label would push the item past k=1: refused.
    with pytest.raises(PermissionDenied):
        annotation_submit(item=item, annotator=first, label="cat")
    annotation_submit(item=item, annotator=second, label="cat")
    assert Item.objects.get(pk=item.pk).n_annotations == 1


def test_expired_lease_still_accepted_when_slot_free(project: Project, annotator: Any) -> None:
    lease = next_task(project=project, annotator=annotator)
    assert lease is not None
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    annotation = annotation_submit(item=lease.item, annotator=annotator, label="dog")
    assert annotation.was_created


def test_paused_project_gives_no_task(project: Project, annotator: Any) -> None:
    project.is_active = False
    project.save()
    assert next_task(project=project, annotator=annotator) is None


def test_non_member_gets_no_task(project: Project, outsider: Any) -> None:
    with pytest.raises(PermissionDenied):
        next_task(project=project, annotator=outsider)


def test_submit_rules(project: Project, annotator: Any) -> None:
    items = list(project.items.order_by("id"))
    with pytest.raises(PermissionDenied):
        annotation_submit(item=items[0], annotator=annotator, label="cat")
    lease = next_task(project=project, annotator=annotator)
    assert lease is not None
    with pytest.raises(ValidationError) as error:
        annotation_submit(item=lease.item, annotator=annotator, label="horse")
    assert "cat, dog, bird" in str(error.value)
    created = annotation_submit(item=lease.item, annotator=annotator, label="cat", time_spent_ms=1200)
    assert created.was_created and created.time_spent_ms == 1200
    again = annotation_submit(item=lease.item, annotator=annotator, label="cat")
    assert not again.was_created and again.pk == created.pk
    assert Annotation.objects.filter(item=lease.item).count() == 1
    assert Item.objects.get(pk=lease.item_id).n_annotations == 1
    assert Assignment.objects.get(pk=lease.pk).status == AssignmentStatus.DONE
    with pytest.raises(AnnotationConflict):
        annotation_submit(item=lease.item, annotator=annotator, label="dog")
    updated = annotation_update(annotation=created, label="dog", annotator=annotator)
    assert updated.label == "dog"
    revision = AnnotationRevision.objects.get(annotation=created)
    assert (revision.old_label, revision.new_label) == ("cat", "dog")
    # The item is done for this annotator: next task is another one.
    following = next_task(project=project, annotator=annotator)
    assert following is not None and following.item_id != lease.item_id


def test_skip(project: Project, annotator: Any) -> None:
    lease = next_task(project=project, annotator=annotator)
    assert lease is not None
    assignment_skip(assignment=lease, annotator=annotator)
    following = next_task(project=project, annotator=annotator)
    assert following is not None and following.item_id != lease.item_id
    with pytest.raises(PermissionDenied):
        annotation_submit(item=lease.item, annotator=annotator, label="cat")


def test_update_of_someone_elses_annotation_refused(project: Project, annotator: Any, outsider: Any) -> None:
    annotation = AnnotationFactory(item=project.items.first(), annotator=annotator, label="cat")
    with pytest.raises(PermissionDenied):
        annotation_update(annotation=annotation, label="dog", annotator=outsider)


def test_membership_remove_releases_leases(project: Project, outsider: Any) -> None:
    membership_add(project=project, user=outsider)
    membership_add(project=project, user=outsider)  # idempotent
    assert Membership.objects.filter(project=project, user=outsider).count() == 1
    lease = next_task(project=project, annotator=outsider)
    assert lease is not None
    membership_remove(project=project, user=outsider)
    assert Assignment.objects.get(pk=lease.pk).status == AssignmentStatus.SKIPPED
    with pytest.raises(ValidationError):
        membership_remove(project=project, user=outsider)
