from __future__ import annotations
from collections import Counter
from collections.abc import Iterator
from typing import Any
import json, os
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from labelling.services import next_task
from projects.models import Membership, Project
from tests.platform.factories import AnnotationFactory

MAX_EXAMPLES = 5
FAILS: list = []

@pytest.fixture(params=["anonymous", "annotator", "owner"])
def world(request, db, project, requester, annotator):
    item = project.items.order_by("id").first()
    annotation = AnnotationFactory(item=item, annotator=annotator, label="cat")
    Membership.objects.create(project=project, user=requester)
    who = {"owner": requester, "annotator": annotator}.get(request.param)
    lease = next_task(project=project, annotator=who) if who else None
    return {"role": request.param,
        "headers": {"Authorization": f"Token {Token.objects.create(user=who).key}"} if who else {},
        "ids": {"project_pk": project.pk, "id": project.pk, "annotation_id": annotation.pk,
                "assignment_id": lease.pk if lease else 1, "user_id": annotator.pk}}

@pytest.fixture
def keep_connection(db):
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)

from crowdlab.wsgi import application
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)

@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_all(case, world, keep_connection):
    if case.path_parameters:
        items_path = "/items/{id}/" in case.path
        for name in list(case.path_parameters):
            if name in world["ids"] and not (items_path and name == "id") and case.method != "DELETE":
                case.path_parameters[name] = world["ids"][name]
    try:
        case.call_and_validate(headers=world["headers"])
    except BaseException as exc:
        with open("/tmp/input_scratch/fails.txt", "a") as fh:
            fh.write(f"=== {world['role']} {case.method} {case.path}\n{str(exc)[:1500]}\n")
        raise
