"""``crowdlab demo`` / ``manage.py demo [--port 8000] [--no-serve]``: the one command that shows crowdlab.

1. migrates the database;
2. creates demo logins (an admin, a requester, three annotators) and prints them;
3. creates a demo project with a realistic crowd: text items with known truth,
   30 crowd workers of varied reliability sharing a common confusion, about 3
   labels per item, and some items left unlabelled for the demo annotators;
4. starts a Celery worker (inference and default queues, with beat for the
   retrain timer) and gunicorn, prints the URL and logins, and stops both
   cleanly on Ctrl-C.

Re-running it reuses the users and the project (passwords are reset to the
printed ones) and seeds nothing twice.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction

from crowdlab.labelling.importing import crowd_import
from crowdlab.processes import run_services
from crowdlab.projects.importing import items_import
from crowdlab.projects.models import Membership, Project
from crowdlab.projects.roles import make_requester
from crowdlab.projects.services import membership_add, project_create
from inference.synthetic import make_synthetic_crowd

PROJECT_NAME = "Demo: which animal is it?"
CLASSES = ["cat", "dog", "bird", "horse"]
# Phrases that point to each class; an item mixes two of its own class and,
# sometimes, one of the class it is most often confused with.
PHRASES: dict[str, list[str]] = {
    "cat": [
        "purrs on the windowsill",
        "chases a laser dot",
        "ignores everyone",
        "kneads the blanket",
        "hisses at the vacuum",
        "sleeps sixteen hours",
        "knocks a cup off the table",
        "has whiskers twitching",
    ],
    "dog": [
        "wags its tail",
        "fetches the stick",
        "barks at the postman",
        "begs at the table",
        "digs in the garden",
        "greets you at the door",
        "rolls over for a treat",
        "howls at sirens",
    ],
    "bird": [
        "sings at dawn",
        "builds a nest",
        "flutters between branches",
        "pecks at seeds",
        "migrates south",
        "preens its feathers",
        "perches on a wire",
        "lays speckled eggs",
    ],
    "horse": [
        "gallops across the field",
        "neighs in the stable",
        "eats hay",
        "wears a saddle",
        "trots along the path",
        "has a flowing mane",
        "jumps the fence",
        "gets new shoes",
    ],
}
DEMO_PASSWORD_SUFFIX = "-demo-pass"


@dataclass
class Login:
    username: str
    password: str
    role: str


def _generate_crowd(
    *, n_items: int, n_workers: int, seed: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
    """Truth, features and (item, worker, label) triples of a realistic crowd.

    ``inference.synthetic``: CoNAL-style common + individual confusions and
    skewed worker activity.
    """
    crowd = make_synthetic_crowd(
        n_items=n_items,
        n_test=0,
        n_annotators=n_workers,
        n_classes=len(CLASSES),
        n_features=16,
        labels_per_item=3,
        common_strength=0.5,
        individual_strength=0.35,
        common_share=0.3,
        seed=seed,
    )
    data = crowd.data
    triples = list(zip(data.item_idx.tolist(), data.annotator_idx.tolist(), data.label_idx.tolist(), strict=True))
    return np.asarray(crowd.true_labels), np.asarray(data.features, dtype=float), triples


def _item_text(true_class: str, confusable: str, rng: np.random.Generator) -> str:
    own = rng.choice(PHRASES[true_class], size=2, replace=False)
    parts = [f"It {own[0]}", f"and {own[1]}"]
    if rng.random() < 0.3:  # an ambiguous clue, so that people disagree for a reason
        parts.append(f"; some say it {rng.choice(PHRASES[confusable])}")
    return " ".join(parts) + "."


class Command(BaseCommand):
    help = "Migrate, create demo logins and a demo project with a realistic crowd, then serve (Ctrl-C stops)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--no-serve", action="store_true", help="Only prepare the database, start nothing.")
        parser.add_argument("--items", type=int, default=600, help="Demo items (default 600).")
        parser.add_argument("--workers", type=int, default=30, help="Simulated crowd workers (default 30).")
        parser.add_argument(
            "--unlabelled", type=int, default=100, help="Items left without crowd labels for the demo annotators."
        )
        parser.add_argument("--seed", type=int, default=7)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["items"] < 10 or options["workers"] < 3 or not 0 <= options["unlabelled"] < options["items"]:
            raise CommandError("--items must be ≥ 10, --workers ≥ 3 and 0 ≤ --unlabelled < --items.")
        if not options["no_serve"]:
            self._check_port(options["host"], options["port"])
        self._ensure_database()
        self.stdout.write("Migrating the database…")
        call_command("migrate", interactive=False, verbosity=0)
        logins = self._users()
        project, created = self._project(logins, options)
        self._print_summary(project, created, logins, options)
        if options["no_serve"]:
            return
        self._serve(options["host"], options["port"])

    def _ensure_database(self) -> None:
        """Create the PostgreSQL database on a fresh machine (the server runs, the database not yet)."""

        if settings.EMBEDDED_DATABASE:
            return  # crowdlab.embedded created it when the settings loaded

        try:
            connection.ensure_connection()
            return
        except Exception as exc:  # noqa: BLE001 - Django wraps psycopg errors; re-raised below unless "does not exist"
            if "does not exist" not in str(exc):
                raise CommandError(f"cannot connect to the database: {exc}") from None
        params = connection.get_connection_params()
        name = settings.DATABASES["default"]["NAME"]
        params.pop("dbname", None)
        params.pop("cursor_factory", None)
        params.pop("context", None)
        params.pop("prepare_threshold", None)
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.stdout.write(f"Created the PostgreSQL database {name!r}.")

    # ------------------------------------------------------------------ data

    @transaction.atomic
    def _users(self) -> list[Login]:
        User = get_user_model()
        logins = [
            Login("demo-admin", "demo-admin" + DEMO_PASSWORD_SUFFIX, "admin (staff)"),
            Login("demo-requester", "demo-requester" + DEMO_PASSWORD_SUFFIX, "requester, owns the demo project"),
            *(Login(name, name + DEMO_PASSWORD_SUFFIX, "annotator") for name in ("anna", "ben", "chloe")),
        ]
        for login in logins:
            user, _ = User.objects.get_or_create(username=login.username)
            user.set_password(login.password)
            user.is_active = True
            if login.username == "demo-admin":
                user.is_staff = user.is_superuser = True
            user.save()
            if login.username == "demo-requester":
                make_requester(user)
        return logins

    def _project(self, logins: list[Login], options: dict[str, Any]) -> tuple[Project, bool]:
        User = get_user_model()
        owner = User.objects.get(username="demo-requester")
        project = Project.objects.filter(owner=owner, name=PROJECT_NAME).first()
        created = project is None
        if project is None:
            self.stdout.write("Creating the demo project and its crowd…")
            project = self._seed(owner, options)
        for login in logins:
            if login.role == "annotator":
                user = User.objects.get(username=login.username)
                if not Membership.objects.filter(project=project, user=user).exists():
                    membership_add(project=project, user=user)
        return project, created

    def _seed(self, owner: Any, options: dict[str, Any]) -> Project:
        n_items, n_workers, seed = options["items"], options["workers"], options["seed"]
        truth, features, triples = _generate_crowd(n_items=n_items, n_workers=n_workers, seed=seed)
        rng = np.random.default_rng(seed + 1)
        confusable = {name: CLASSES[(index + 1) % len(CLASSES)] for index, name in enumerate(CLASSES)}
        rows = []
        for index in range(n_items):
            name = CLASSES[int(truth[index])]
            rows.append(
                {
                    "external_id": f"animal-{index:04d}",
                    "text": _item_text(name, confusable[name], rng),
                    "features": [round(float(value), 5) for value in features[index]],
                    # A requester rarely knows every answer: gold on one item in five, for scoring.
                    "gold": name if index % 5 == 0 else None,
                }
            )
        labelled = n_items - options["unlabelled"]
        lines = ["item,annotator,label"]
        lines += [
            f"animal-{item:04d},crowd{worker:02d},{CLASSES[label]}"
            for item, worker, label in triples
            if item < labelled
        ]
        with transaction.atomic():
            project = project_create(
                owner=owner,
                name=PROJECT_NAME,
                classes=[{"name": name, "key": str(index + 1)} for index, name in enumerate(CLASSES)],
                instructions=(
                    "Read the description and pick the animal it describes.\n\n"
                    "* Keys **1–4** choose a class; **S** skips, **U** undoes.\n"
                    "* Some descriptions are ambiguous on purpose: choose the most likely animal."
                ),
            )
            items_import(project=project, rows=rows)
            result = crowd_import(project=project, stream="\n".join(lines) + "\n")
        self.stdout.write(
            f"  {n_items} items, {result.annotations_created} crowd labels from {result.annotators_created} workers; "
            f"{options['unlabelled']} items left for the demo annotators."
        )
        return project

    # ------------------------------------------------------------------ output

    def _print_summary(self, project: Project, created: bool, logins: list[Login], options: dict[str, Any]) -> None:
        url = f"http://{options['host']}:{options['port']}/"
        self.stdout.write("")
        self.stdout.write(
            f"Demo project {project.name!r} (id {project.pk}) {'created' if created else 'already there'}: "
            f"{project.items.count()} items, {project.annotations.count()} annotations."
        )
        self.stdout.write(self.style.SUCCESS(f"crowdlab: {url}   (API docs: {url}api/docs/, admin: {url}admin/)"))
        self.stdout.write("Logins:")
        for login in logins:
            self.stdout.write(f"  {login.username:<16} {login.password:<28} {login.role}")
        self.stdout.write("")

    # ------------------------------------------------------------------ serving

    def _check_port(self, host: str, port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise CommandError(f"cannot listen on {host}:{port} ({exc}); pass --port with a free port.") from None

    def _serve(self, host: str, port: int) -> None:
        # The demo always runs its own worker: a demo that never infers shows nothing.
        run_services(host=host, port=port, with_worker=True, out=self.stdout.write, err=self.stderr.write)
