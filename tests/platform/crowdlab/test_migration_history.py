"""A database made by crowdlab before the apps moved into the ``crowdlab`` package
(issue 15) migrates cleanly with the moved code and keeps its data.

The apps kept their labels (``projects``, ``labelling``, ``results``, ``live``),
so their tables and their rows in ``django_migrations`` are the same. This test
proves it end to end: the pre-move code, taken from git, migrates a scratch
database and stores a project with an annotation; the moved code then finds
nothing to migrate and reads the same rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from crowdlab.projects.models import Project

REPO = Path(__file__).resolve().parents[3]
# The last commit with the apps at the top level of platform/ (projects, api, ...).
BEFORE_THE_MOVE = "de4aa63"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# What the pre-move code recorded in django_migrations for crowdlab's apps.
OLD_MIGRATIONS = {
    ("projects", "0001_initial"),
    ("projects", "0002_remove_item_item_pool_idx_item_item_next_task_idx"),
    ("labelling", "0001_initial"),
    ("results", "0001_initial"),
    ("results", "0002_run_active_unique_worker"),
    ("results", "0003_run_fit_mode"),
    ("results", "0004_run_cancelled_retry_after"),
    ("results", "0005_run_trigger_settle"),
    ("live", "0001_sweep_schedule"),
}

STORE = """
from django.contrib.auth import get_user_model
from projects.models import Project
from labelling.models import Annotation
owner = get_user_model().objects.create_user("old-owner", password="x")
project = Project.objects.create(owner=owner, name="Made before the move",
                                 classes=[{"name": "cat", "key": "c"}, {"name": "dog", "key": "d"}])
item = project.items.create(external_id="i1", text="a cat")
Annotation.objects.create(project=project, item=item, annotator=owner, label="cat")
"""

READ = """
from crowdlab.labelling.models import Annotation
from crowdlab.projects.models import Project
project = Project.objects.get(name="Made before the move")
annotation = Annotation.objects.get(project=project)
print(project.owner.username, project.class_names, annotation.item.external_id, annotation.label)
"""


def _base_url() -> str:
    return os.environ["DATABASE_URL"].rsplit("/", 1)[0]


@pytest.fixture
def scratch_database() -> Iterator[str]:
    name = f"crowdlab_premove_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{_base_url()}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{_base_url()}/{name}"
    finally:
        with psycopg.connect(f"{_base_url()}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def code_before_the_move(tmp_path: Path) -> Path:
    """The pre-move tree, exported from git (a clean clone of main has the history)."""
    archive = tmp_path / "before.tar"
    try:
        subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "archive",
                "-o",
                str(archive),
                BEFORE_THE_MOVE,
                "manage.py",
                "platform",
                "inference",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"needs git and the repository's history (commit {BEFORE_THE_MOVE}): {exc}")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "before", filter="data")
    return tmp_path / "before"


def _manage(root: Path, database_url: str, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "LANG": "C.UTF-8",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": "memory://",
        "DEBUG": "1",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=root, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _recorded(database_url: str) -> set[tuple[str, str]]:
    with psycopg.connect(database_url) as connection:
        rows = connection.execute("SELECT app, name FROM django_migrations").fetchall()
    return {(app, name) for app, name in rows if app in {"projects", "labelling", "results", "live"}}


def test_the_moved_apps_keep_their_labels_and_tables() -> None:
    assert Project._meta.app_label == "projects"
    assert Project._meta.db_table == "projects_project"


def test_a_database_from_before_the_move_migrates_cleanly_and_keeps_its_data(
    code_before_the_move: Path, scratch_database: str
) -> None:
    _manage(code_before_the_move, scratch_database, "migrate", "--no-input")
    _manage(code_before_the_move, scratch_database, "shell", "-c", STORE)
    assert _recorded(scratch_database) == OLD_MIGRATIONS

    # Nothing the old code applied is planned again (migrations added after
    # the move may be planned; none of the old ones).
    plan = _manage(REPO, scratch_database, "migrate", "--plan")
    planned = {
        tuple(line.strip().split(".", 1)) for line in plan.splitlines() if "." in line and " " not in line.strip()
    }
    assert not planned & OLD_MIGRATIONS, plan
    _manage(REPO, scratch_database, "migrate", "--no-input")
    assert _recorded(scratch_database) >= OLD_MIGRATIONS
    # The last line: Django's shell may first say what it imported automatically.
    assert _manage(REPO, scratch_database, "shell", "-c", READ).strip().splitlines()[-1].split() == [
        "old-owner",
        "['cat',",
        "'dog']",
        "i1",
        "cat",
    ]
