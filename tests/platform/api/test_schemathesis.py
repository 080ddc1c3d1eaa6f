"""Property-based run of every operation in /api/schema/ with **all** of
schemathesis' checks (not only "no 5xx": status codes, content types, headers
and bodies must match the schema; schema-valid requests must be accepted and
invalid ones refused; authentication must not be ignored), in the examples,
coverage and fuzzing phases, for three people: anonymous, an annotator of the
project and its owner. Through the WSGI app on the real test database, bounded
so the whole run stays well under two minutes.

Path ids are pinned to a real project/item/annotation/assignment (unless the
case deliberately makes the path invalid) so that generated bodies reach the
views instead of stopping at 404.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.utils import timezone
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.core.parameters import ParameterLocation

from crowdlab.labelling.services import next_task
from crowdlab.projects.models import Membership, Project
from crowdlab.results.models import (
    AggregatedLabel,
    AnnotatorConfusion,
    CommonConfusion,
    GeneratedAnnotation,
    InferenceRun,
    RunStatus,
)
from tests.platform.factories import AnnotationFactory

ROLES = ("anonymous", "annotator", "owner")
# Fuzzing examples per operation and role; the examples and coverage phases
# add their own (deterministic) cases on top.
MAX_EXAMPLES = 4

REQUESTS: Counter[str] = Counter()

# Operations whose schema-valid requests may still be refused with a 400,
# because the rule depends on stored data that no OpenAPI schema can state.
# For these, positive_data_acceptance also allows 400; every other check (the
# 400's body included) still applies, and every other operation must accept
# any schema-valid request.
STATE_DEPENDENT_400 = {
    "POST /api/auth/token/": "the username and password must match an active account",
    "POST /api/projects/": "project names are unique per owner; class names and keys unique per project",
    "PUT /api/projects/{id}/": "as for create, and classes that carry labels cannot be removed",
    "PATCH /api/projects/{id}/": "as for create, and classes that carry labels cannot be removed",
    "POST /api/projects/{project_pk}/members/": "the username must belong to an existing account",
    "POST /api/projects/{project_pk}/annotations/": "the label must be one of the project's classes",
    "PATCH /api/projects/{project_pk}/annotations/{annotation_id}/": "the label must be one of the project's classes",
    "POST /api/projects/{project_pk}/assignments/{assignment_id}/skip/": "only an active assignment can be skipped",
    "POST /api/projects/{project_pk}/items/import/": "rows are checked against the project (classes, existing "
    "ids, feature width); CSV/JSONL bodies are free text to the schema",
    "POST /api/projects/{project_pk}/items/upload/": "gold must be a class; the file must be an image; ids are unique",
    "POST /api/projects/{project_pk}/crowd/import/": "a CSV with the documented header and the project's classes",
    "POST /api/projects/{project_pk}/runs/": "params must name hyper-parameters of the project's model",
    "GET /api/projects/{project_pk}/results/labels/": "label must be one of the project's classes",
    "GET /api/projects/{project_pk}/results/generated/": "label must be one of the project's classes",
}
_POSITIVE_OK = ["2xx", "3xx", "401", "403", "404", "409", "429"]


@pytest.fixture(params=ROLES)
def world(request: pytest.FixtureRequest, db: None, project: Project, requester: Any, annotator: Any) -> dict[str, Any]:
    item = project.items.order_by("id").first()
    annotation = AnnotationFactory(item=item, annotator=annotator, label="cat")
    # The owner labels too, so that member-only operations get past permissions.
    Membership.objects.create(project=project, user=requester)
    person = {"owner": requester, "annotator": annotator}.get(request.param)
    lease = next_task(project=project, annotator=person) if person is not None else None
    run = _published_run(project, annotator)
    return {
        "role": request.param,
        "headers": {"Authorization": f"Token {Token.objects.create(user=person).key}"} if person else {},
        "ids": {
            "project_pk": project.pk,
            "id": project.pk,
            "annotation_id": annotation.pk,
            "assignment_id": lease.pk if lease else 1,
            "user_id": annotator.pk,
            "run_pk": run.pk,
        },
    }


def _published_run(project: Project, annotator: Any) -> InferenceRun:
    """A published run with one row of every kind of result, written directly
    (no training), so that every results endpoint answers a body to validate."""
    run = InferenceRun.objects.create(
        project=project,
        model="crowding",
        status=RunStatus.PUBLISHED,
        fit_mode="cold",
        fit_reason="first run",
        n_items=5,
        n_annotations=1,
        n_annotators=1,
        loss_history=[1.0, 0.5],
        final_loss=0.5,
        metrics={"accuracy": 1.0},
        timings={"fit": 0.1},
        published_at=timezone.now(),
    )
    items = list(project.items.order_by("id"))
    eye = [[1.0 if row == column else 0.0 for column in range(3)] for row in range(3)]
    AggregatedLabel.objects.bulk_create(
        AggregatedLabel(
            run=run,
            item=item,
            label="cat",
            confidence=0.9,
            probabilities=[0.9, 0.05, 0.05],
            n_annotations=item.n_annotations,
        )
        for item in items
    )
    AnnotatorConfusion.objects.create(
        run=run, annotator=annotator, matrix=eye, omega=0.2, omegas=[0.2], n_annotations=1, learned_accuracy=1.0
    )
    CommonConfusion.objects.create(run=run, matrix=eye)
    GeneratedAnnotation.objects.create(run=run, item=items[-1], annotator=annotator, label="dog", probability=0.7)
    return run


@pytest.fixture(scope="module", autouse=True)
def report_requests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print how many requests each person sent (past output capture)."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not REQUESTS:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(
            "\nschemathesis requests per role: " + ", ".join(f"{role} {REQUESTS[role]}" for role in ROLES)
        )


# Raw JSONL bodies are plain text to the schema; without a serializer
# schemathesis skipped those two media types of the item import.
schemathesis.serializer.alias(["application/jsonl", "application/x-ndjson"], "text/plain")


def _load_schema() -> Any:
    from crowdlab.wsgi import application

    config = schemathesis.Config.from_dict(
        {
            "generation": {"max-examples": MAX_EXAMPLES, "mode": "all"},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "checks": {"enabled": True},
            "operations": [
                {
                    "include-name": name,
                    "checks": {"positive_data_acceptance": {"expected-statuses": [*_POSITIVE_OK, "400"]}},
                }
                for name in STATE_DEPENDENT_400
            ],
        }
    )
    # Loaded at collection: serving the schema touches no database. (The lazy
    # ``from_fixture`` loader does not work with pytest 9: it sets a private
    # node attribute that no longer exists.)
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, config=config)


schema = _load_schema()


def _pin_path(case: Any, ids: dict[str, int]) -> None:
    if not case.path_parameters or (case.meta is not None and case.meta.is_negative_at(ParameterLocation.PATH)):
        return  # an invalid path is the point of this case
    if case.method == "DELETE":
        return  # keep the project, its members and annotations for the other cases
    items_path = "/items/{id}/" in case.path
    for name in list(case.path_parameters):
        if name in ids and not (items_path and name == "id"):
            case.path_parameters[name] = ids[name]


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_matches_its_schema(case: Any, world: dict[str, Any], keep_connection: None) -> None:
    _pin_path(case, world["ids"])
    REQUESTS[world["role"]] += 1
    case.call_and_validate(headers=world["headers"])
