"""Management commands: import_crowd (dataset folders) and export_labels."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from crowdlab.labelling.models import Annotation
from crowdlab.projects.models import Item, Membership, Project
from crowdlab.projects.roles import is_requester

pytestmark = pytest.mark.django_db

CLASSES = ["rock", "jazz", "blues"]


def _generate_crowd(
    directory: Path, *, n_items: int = 40, n_workers: int = 6, seed: int = 0, texts: bool = False
) -> dict[str, Any]:
    """A small crowd with known truth: each worker is right with their own accuracy."""
    rng = np.random.default_rng(seed)
    items = [f"it{index:03d}" for index in range(n_items)]
    truth = rng.integers(0, len(CLASSES), size=n_items)
    accuracy = rng.uniform(0.5, 0.95, size=n_workers)
    annotations: list[tuple[str, str, str]] = []
    for index, item in enumerate(items):
        for worker in rng.choice(n_workers, size=3, replace=False):
            right = rng.random() < accuracy[worker]
            label = truth[index] if right else (truth[index] + rng.integers(1, len(CLASSES))) % len(CLASSES)
            annotations.append((item, f"w{worker}", CLASSES[label]))
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "annotations.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "annotator", "label"])
        writer.writerows(annotations)
    with (directory / "gold.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "label"])
        writer.writerows((item, CLASSES[label]) for item, label in zip(items, truth, strict=True))
    if texts:
        with (directory / "texts.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["item", "text"])
            writer.writerows((item, f'a song, number {index}, "quoted"') for index, item in enumerate(items))
        with (directory / "test_texts.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", "text", "label"])
            writer.writerows([(0, "unseen one", "jazz"), (1, "unseen two", "rock")])
    else:
        features = rng.normal(size=(n_items, 5)).astype(np.float32)
        np.save(directory / "features.npy", features)
        (directory / "items.txt").write_text("\n".join(items) + "\n")
        np.save(directory / "test_features.npy", rng.normal(size=(3, 5)).astype(np.float32))
        (directory / "test_gold.csv").write_text("row,label\n0,rock\n1,jazz\n2,blues\n")
    return {"items": items, "truth": truth, "annotations": annotations}


def test_import_crowd_features_layout_creates_project_and_is_idempotent(tmp_path: Path) -> None:
    crowd = _generate_crowd(tmp_path / "songs")
    out = io.StringIO()
    call_command(
        "import_crowd",
        str(tmp_path / "songs"),
        "--project",
        "Songs",
        "--owner",
        "lead",
        "--create-owner",
        "--json",
        stdout=out,
        stderr=io.StringIO(),
    )
    summary = json.loads(out.getvalue())
    assert summary["project_created"] is True
    assert summary["items_created"] == 40
    assert summary["annotations_created"] == len(crowd["annotations"]) == 120
    assert summary["annotators_created"] == len({worker for _, worker, _ in crowd["annotations"]})

    owner = get_user_model().objects.get(username="lead")
    assert is_requester(owner) and not owner.has_usable_password()
    project = Project.objects.get(owner=owner, name="Songs")
    assert project.classes == [
        {"name": "blues", "key": "1"},
        {"name": "jazz", "key": "2"},
        {"name": "rock", "key": "3"},
    ]
    first = Item.objects.get(project=project, external_id="it000")
    assert first.gold_label == CLASSES[crowd["truth"][0]]
    assert first.features is not None and len(first.features) == 5
    assert first.n_annotations == 3
    assert Membership.objects.filter(project=project).count() == summary["annotators_created"]
    assert not Item.objects.filter(project=project, external_id__startswith="test-").exists()

    # Re-running changes nothing.
    out = io.StringIO()
    call_command("import_crowd", str(tmp_path / "songs"), "--project", "Songs", "--owner", "lead", "--json", stdout=out)
    again = json.loads(out.getvalue())
    assert again["project_created"] is False
    assert (again["items_created"], again["annotations_created"], again["annotators_created"]) == (0, 0, 0)
    assert again["duplicates_skipped"] == 120
    assert Annotation.objects.filter(project=project).count() == 120


def test_import_crowd_texts_layout_with_test_items(tmp_path: Path, requester: Any) -> None:
    _generate_crowd(tmp_path / "reviews", n_items=10, texts=True)
    call_command(
        "import_crowd",
        str(tmp_path / "reviews"),
        "--project",
        "Reviews",
        "--owner",
        requester.username,
        "--with-test",
        stdout=io.StringIO(),
    )
    project = Project.objects.get(owner=requester, name="Reviews")
    assert Item.objects.get(project=project, external_id="it003").text == 'a song, number 3, "quoted"'
    test_item = Item.objects.get(project=project, external_id="test-0")
    assert (test_item.text, test_item.gold_label, test_item.data, test_item.n_annotations) == (
        "unseen one",
        "jazz",
        {"split": "test"},
        0,
    )
    assert Item.objects.filter(project=project).count() == 12


def test_import_crowd_errors(tmp_path: Path, requester: Any) -> None:
    with pytest.raises(CommandError, match="no user 'ghost'"):
        call_command("import_crowd", str(tmp_path), "--project", "X", "--owner", "ghost")
    _generate_crowd(tmp_path / "c")
    with (tmp_path / "c" / "annotations.csv").open("a") as handle:
        handle.write("it001,w1,polka\n")
    Project.objects.create(owner=requester, name="Fixed", classes=[{"name": name, "key": None} for name in CLASSES])
    with pytest.raises(CommandError, match="'polka' is not a class"):
        call_command("import_crowd", str(tmp_path / "c"), "--project", "Fixed", "--owner", requester.username)
    assert not Item.objects.filter(project__name="Fixed").exists()


def test_export_labels_matches_the_stream(tmp_path: Path) -> None:
    crowd = _generate_crowd(tmp_path / "songs", n_items=12)
    call_command(
        "import_crowd",
        str(tmp_path / "songs"),
        "--project",
        "Songs",
        "--owner",
        "lead",
        "--create-owner",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    out = io.StringIO()
    call_command("export_labels", "--project", "Songs", "--format", "csv", stdout=out)
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [row["item"] for row in table] == crowd["items"]
    votes: dict[str, list[str]] = {}
    for item, _, label in crowd["annotations"]:
        votes.setdefault(item, []).append(label)
    for row in table:
        counts = {name: votes[row["item"]].count(name) for name in sorted(CLASSES)}
        top = max(counts.values())
        # Majority vote; ties go to the first class in the project's (sorted) order.
        assert row["label"] == next(name for name in sorted(CLASSES) if counts[name] == top)
        assert row["n_annotations"] == "3" and row["run_id"] == ""

    target = tmp_path / "labels.jsonl"
    call_command(
        "export_labels",
        "--project",
        "Songs",
        "--owner",
        "lead",
        "--format",
        "jsonl",
        "--output",
        str(target),
        stderr=io.StringIO(),
    )
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["label"] for line in lines] == [row["label"] for row in table]
    with pytest.raises(CommandError, match="no project named 'Nope'"):
        call_command("export_labels", "--project", "Nope")


def test_demo_no_serve_seeds_once() -> None:
    out = io.StringIO()
    call_command("demo", "--no-serve", "--items", "40", "--workers", "6", "--unlabelled", "10", stdout=out)
    text = out.getvalue()
    assert "http://127.0.0.1:8000/" in text
    for login in ("demo-admin", "demo-requester", "anna", "ben", "chloe"):
        assert login in text
    User = get_user_model()
    assert User.objects.get(username="demo-admin").is_staff
    assert User.objects.get(username="anna").check_password("anna-demo-pass")
    project = Project.objects.get(owner__username="demo-requester")
    items = Item.objects.filter(project=project)
    assert items.count() == 40
    # The last 10 items are left for the demo annotators; the rest carry ~3 crowd labels.
    assert not items.filter(n_annotations__gt=0, external_id__gte="animal-0030").exists()
    assert Annotation.objects.filter(project=project).count() >= 60
    assert Membership.objects.filter(project=project, user__username__in=["anna", "ben", "chloe"]).count() == 3
    annotations = Annotation.objects.filter(project=project).count()

    call_command("demo", "--no-serve", "--items", "40", "--workers", "6", "--unlabelled", "10", stdout=io.StringIO())
    assert Project.objects.filter(owner__username="demo-requester").count() == 1
    assert Annotation.objects.filter(project=project).count() == annotations


def test_import_crowd_meets_the_same_input_limits(tmp_path: Path, requester: Any, settings: Any) -> None:
    # import_crowd shares the import code path: the encoding and size checks
    # name the file, line or row instead of a traceback, and nothing is written.
    _generate_crowd(tmp_path / "latin", n_items=6, texts=True)
    texts = tmp_path / "latin" / "texts.csv"
    texts.write_bytes(texts.read_bytes() + "it005,crème\n".encode("latin-1"))
    with pytest.raises(CommandError, match=r"texts\.csv, line 8: byte 0xE8 is not UTF-8 text"):
        call_command(
            "import_crowd",
            str(tmp_path / "latin"),
            "--project",
            "L",
            "--owner",
            requester.username,
            stdout=io.StringIO(),
        )
    crowd = tmp_path / "latin" / "annotations.csv"
    texts.write_text("item,text\nit000,fine\n")
    crowd.write_bytes(crowd.read_bytes() + "it001,wörker,rock\n".encode("latin-1"))
    with pytest.raises(CommandError, match=r"annotations\.csv, line \d+: byte 0xF6 is not UTF-8 text"):
        call_command(
            "import_crowd",
            str(tmp_path / "latin"),
            "--project",
            "L",
            "--owner",
            requester.username,
            stdout=io.StringIO(),
        )

    settings.ITEM_TEXT_MAX_LENGTH = 5
    _generate_crowd(tmp_path / "long", n_items=6, texts=True)
    with pytest.raises(
        CommandError, match=r"row 1: text: is 26 characters long; at most 5 are allowed \(ITEM_TEXT_MAX_LENGTH\); row 2"
    ):
        call_command(
            "import_crowd",
            str(tmp_path / "long"),
            "--project",
            "Long",
            "--owner",
            requester.username,
            stdout=io.StringIO(),
        )
    assert not Item.objects.filter(project__owner=requester).exists()
