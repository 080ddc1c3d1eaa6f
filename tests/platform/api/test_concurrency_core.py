"""Concurrent next-task + submit against a live server on real PostgreSQL:
no item goes past k, nobody labels an item twice, the counters stay exact."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
import requests
from django.db.models import Count
from rest_framework.authtoken.models import Token

from crowdlab.labelling.models import Annotation, Assignment, AssignmentStatus
from crowdlab.projects.models import Item, Membership
from tests.platform.factories import ItemFactory, ProjectFactory, UserFactory

N_ANNOTATORS = 24
N_ITEMS = 30
K = 3


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_next_task_never_over_assigns(live_server: Any, requester: Any) -> None:
    project = ProjectFactory(owner=requester, k=K)
    for index in range(N_ITEMS):
        ItemFactory(project=project, external_id=f"c{index}")
    tokens = []
    for index in range(N_ANNOTATORS):
        user = UserFactory(username=f"crowd{index}")
        Membership.objects.create(project=project, user=user)
        tokens.append(Token.objects.create(user=user).key)

    base = f"{live_server.url}/api/projects/{project.pk}"
    statuses: Counter[tuple[str, int]] = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(N_ANNOTATORS)

    def annotate(token: str) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        start.wait()
        for _ in range(N_ITEMS + 5):
            task = session.post(f"{base}/next-task/", timeout=30)
            with lock:
                statuses[("next", task.status_code)] += 1
            if task.status_code == 204:
                return
            if task.status_code != 200:
                errors.append(f"next-task {task.status_code}: {task.text[:200]}")
                return
            item = task.json()["item"]["external_id"]
            submit = session.post(f"{base}/annotations/", json={"item": item, "label": "cat"}, timeout=30)
            with lock:
                statuses[("submit", submit.status_code)] += 1
            if submit.status_code != 201:
                errors.append(f"submit {submit.status_code}: {submit.text[:200]}")
                return
        errors.append("annotator never ran out of tasks")

    threads = [threading.Thread(target=annotate, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(thread.is_alive() for thread in threads), "annotators hung"
    assert not errors, errors[:5]

    per_item = dict(Annotation.objects.filter(project=project).values_list("item_id").annotate(n=Count("id")))
    assert len(per_item) == N_ITEMS
    assert max(per_item.values()) == K and min(per_item.values()) == K  # every item done, none past k
    pairs = Annotation.objects.filter(project=project).values_list("item_id", "annotator_id")
    assert len(set(pairs)) == len(pairs) == N_ITEMS * K  # no one labelled an item twice
    for item in Item.objects.filter(project=project):
        assert item.n_annotations == per_item[item.pk]
    assert statuses[("submit", 201)] == N_ITEMS * K
    assert not Assignment.objects.filter(project=project, status=AssignmentStatus.ACTIVE).exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_racing_duplicate_submits_store_one_row(live_server: Any, requester: Any) -> None:
    project = ProjectFactory(owner=requester, k=K)
    ItemFactory(project=project, external_id="only")
    user = UserFactory(username="eager")
    Membership.objects.create(project=project, user=user)
    token = Token.objects.create(user=user).key
    base = f"{live_server.url}/api/projects/{project.pk}"
    headers = {"Authorization": f"Token {token}"}
    assert requests.post(f"{base}/next-task/", headers=headers, timeout=30).status_code == 200

    codes: list[int] = []
    start = threading.Barrier(8)

    def submit() -> None:
        start.wait()
        response = requests.post(
            f"{base}/annotations/", json={"item": "only", "label": "dog"}, headers=headers, timeout=30
        )
        codes.append(response.status_code)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(codes) == [200] * 7 + [201]
    assert Annotation.objects.filter(project=project).count() == 1
    assert Item.objects.get(project=project).n_annotations == 1
