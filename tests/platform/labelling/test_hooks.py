"""``labelling`` tells ``live`` about stored labels through ``labelling.hooks``
(the listener ``live`` registers in ``LiveConfig.ready``), never by importing it."""

from __future__ import annotations

from typing import Any

import grimp
import pytest

from crowdlab.labelling import hooks
from crowdlab.labelling.services import (
    annotation_submit,
    annotation_submit_leased,
    next_task,
)
from crowdlab.live import triggers
from crowdlab.projects.models import Project
from crowdlab.results.models import InferenceRun, RunStatus, RunTrigger

pytestmark = pytest.mark.django_db


def test_live_registers_its_listener_when_django_starts() -> None:
    assert hooks.listener() is triggers.LISTENER
    assert hooks.due_sql(inserted_id="(SELECT 1)") == triggers.threshold_due_sql(inserted_id="(SELECT 1)")


def test_labelling_does_not_import_live() -> None:
    graph = grimp.build_graph("crowdlab", cache_dir=None)
    assert not graph.chain_exists(importer="crowdlab.labelling", imported="crowdlab.live", as_packages=True)


@pytest.fixture
def every_label_counts(project: Project) -> Project:
    project.retrain_every_n = 1
    project.save(update_fields=["retrain_every_n"])
    return project


def test_a_label_stored_by_the_one_statement_submit_starts_a_run(
    every_label_counts: Project, annotator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    project = every_label_counts
    assignment = next_task(project=project, annotator=annotator)
    assert assignment is not None
    with django_capture_on_commit_callbacks(execute=True):
        annotation = annotation_submit_leased(
            project=project, external_id=assignment.item.external_id, annotator=annotator, label="cat"
        )
    assert annotation is not None
    run = InferenceRun.objects.get(project=project)
    assert (run.status, run.trigger) == (RunStatus.PENDING, RunTrigger.THRESHOLD)


def test_a_label_stored_by_the_general_submit_starts_a_run(
    every_label_counts: Project, annotator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    project = every_label_counts
    assignment = next_task(project=project, annotator=annotator)
    assert assignment is not None
    with django_capture_on_commit_callbacks(execute=True):
        annotation_submit(item=assignment.item, annotator=annotator, label="dog")
    assert InferenceRun.objects.filter(project=project, trigger=RunTrigger.THRESHOLD).count() == 1


def test_the_hook_adds_no_query_to_the_one_statement_submit(
    every_label_counts: Project, annotator: Any, django_assert_num_queries: Any
) -> None:
    # The threshold check rides on the INSERT; the run starts after commit
    # (which never comes inside this test's transaction).
    project = every_label_counts
    assignment = next_task(project=project, annotator=annotator)
    assert assignment is not None
    with django_assert_num_queries(1):
        annotation = annotation_submit_leased(
            project=project, external_id=assignment.item.external_id, annotator=annotator, label="cat"
        )
    assert annotation is not None


def test_without_a_listener_a_stored_label_tells_nobody(
    every_label_counts: Project, annotator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    project = every_label_counts
    previous = hooks.set_listener(None)
    try:
        assignment = next_task(project=project, annotator=annotator)
        assert assignment is not None
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            annotation_submit_leased(
                project=project, external_id=assignment.item.external_id, annotator=annotator, label="cat"
            )
    finally:
        hooks.set_listener(previous)
    assert callbacks == []
    assert not InferenceRun.objects.filter(project=project).exists()
