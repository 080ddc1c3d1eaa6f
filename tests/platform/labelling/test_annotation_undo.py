"""annotation_undo (added by "front" for the labelling page's U key)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from crowdlab.labelling.models import Annotation, AnnotationSource, Assignment, AssignmentStatus
from crowdlab.labelling.services import annotation_submit, annotation_undo, next_task
from crowdlab.projects.models import Item, Project

pytestmark = pytest.mark.django_db


def test_undo_within_grace_restores_item_and_lease(project: Project, annotator: Any) -> None:
    first = next_task(project=project, annotator=annotator)
    assert first is not None
    annotation_submit(item=first.item, annotator=annotator, label="cat")
    second = next_task(project=project, annotator=annotator)
    assert second is not None and second.item_id != first.item_id

    back = annotation_undo(project=project, annotator=annotator)
    assert back.item_id == first.item_id and back.status == AssignmentStatus.ACTIVE
    assert not Annotation.objects.filter(item=first.item, annotator=annotator).exists()
    assert Item.objects.get(pk=first.item_id).n_annotations == 0
    # The lease shown after the submit went back to the pool; next-task answers the undone item.
    assert next_task(project=project, annotator=annotator).item_id == first.item_id
    assert (
        Assignment.objects.filter(
            annotator=annotator, status=AssignmentStatus.ACTIVE, expires_at__gt=timezone.now()
        ).count()
        == 1
    )
    # It can be labelled again, differently.
    annotation_submit(item=first.item, annotator=annotator, label="dog")
    assert Item.objects.get(pk=first.item_id).n_annotations == 1


def test_undo_after_grace_or_with_nothing_is_refused(project: Project, annotator: Any) -> None:
    with pytest.raises(ValidationError, match="no label in this project"):
        annotation_undo(project=project, annotator=annotator)
    task = next_task(project=project, annotator=annotator)
    annotation = annotation_submit(item=task.item, annotator=annotator, label="cat")
    Annotation.objects.filter(pk=annotation.pk).update(created_at=timezone.now() - dt.timedelta(seconds=11))
    with pytest.raises(ValidationError, match="older than 10 s"):
        annotation_undo(project=project, annotator=annotator)
    assert Item.objects.get(pk=task.item_id).n_annotations == 1


def test_undo_never_touches_imported_labels(project: Project, annotator: Any) -> None:
    item = project.items.first()
    Annotation.objects.create(
        project=project, item=item, annotator=annotator, label="cat", source=AnnotationSource.IMPORT
    )
    with pytest.raises(ValidationError):
        annotation_undo(project=project, annotator=annotator)
    assert Annotation.objects.filter(item=item).count() == 1
