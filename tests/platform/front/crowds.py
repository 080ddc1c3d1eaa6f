"""A crowd with a known systematic confusion, run for real through live's service.

Shared by the test-client tests here and the browser tests (``tests/browser``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from django.db.models import F

from crowdlab.labelling.models import Annotation
from crowdlab.live.services import run_execute
from crowdlab.projects.models import Item, ItemKind, Membership, Project
from crowdlab.results.models import InferenceRun, RunStatus
from crowdlab.results.services import run_create
from tests.platform.factories import UserFactory

SCENE_CLASSES = [
    {"name": "street", "key": "1"},
    {"name": "inside city", "key": "2"},
    {"name": "forest", "key": "3"},
    {"name": "coast", "key": "4"},
]


def make_confused_crowd(
    *, owner: Any, n_items: int = 80, seed: int = 0, name: str = "Scenes", model: str = "ds"
) -> tuple[Project, np.ndarray, list[Any]]:
    """Four good annotators (90 % right, errors uniform) and one, ``confuser``,
    who always labels a true *street* as *inside city* (otherwise right).

    Labels are stored directly, like a crowd import. Returns (project, truth, annotators)."""
    rng = np.random.default_rng(seed)
    project = Project.objects.create(
        owner=owner,
        name=name,
        classes=[dict(c) for c in SCENE_CLASSES],
        k=5,
        model=model,
        retrain_every_n=100_000,
        retrain_every_minutes=100_000,
        instructions="Pick the **scene**.",
    )
    names = [c["name"] for c in SCENE_CLASSES]
    c = len(names)
    truth = rng.integers(0, c, size=n_items)
    items = Item.objects.bulk_create(
        [
            Item(
                project=project,
                external_id=f"s{i:03d}",
                kind=ItemKind.TEXT,
                text=f"a photo of a {names[truth[i]]}",
                gold_label=names[truth[i]] if i % 4 == 0 else None,
            )
            for i in range(n_items)
        ]
    )
    annotators = [UserFactory(username=f"{name.lower()}_good{r}") for r in range(4)]
    annotators.append(UserFactory(username=f"{name.lower()}_confuser"))
    Membership.objects.bulk_create([Membership(project=project, user=user) for user in annotators])
    rows = []
    for i, item in enumerate(items):
        for r in range(4):
            label = truth[i] if rng.random() < 0.9 else (truth[i] + rng.integers(1, c)) % c
            rows.append(Annotation(project=project, item=item, annotator=annotators[r], label=names[label]))
        given = 1 if truth[i] == 0 else truth[i]
        rows.append(Annotation(project=project, item=item, annotator=annotators[4], label=names[given]))
    Annotation.objects.bulk_create(rows)
    Item.objects.filter(project=project).update(n_annotations=F("n_annotations") + 5)
    return project, truth, annotators


def run_now_synchronously(project: Project, params: dict[str, Any] | None = None) -> InferenceRun:
    """Create a run and execute it in this process through live's service (no worker)."""
    run = run_create(project=project, params=params)
    assert run is not None
    assert run_execute(run_id=run.pk) == RunStatus.PUBLISHED
    return InferenceRun.objects.defer("checkpoint").get(pk=run.pk)
