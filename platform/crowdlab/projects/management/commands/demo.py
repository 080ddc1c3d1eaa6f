"""``manage.py demo [--port 8000] [--no-serve]``: the one command that shows crowdlab.

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

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from celery import current_app
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from crowdlab.projects.importing import crowd_import, items_import
from crowdlab.projects.models import Membership, Project
from crowdlab.projects.roles import make_requester
from crowdlab.projects.services import membership_add, project_create

REPO_ROOT = Path(__file__).resolve().parents[4]
PROJECT_NAME = "Demo: which animal is it?"
CLASSES = ["cat", "dog", "bird", "horse"]
# Phrases that point to each class; an item mixes two of its own class and,
# sometimes, one of the class it is most often confused with.
PHRASES: dict[str, list[str]] = {
    "cat": ["purrs on the windowsill", "chases a laser dot", "ignores everyone", "kneads the blanket",
            "hisses at the vacuum", "sleeps sixteen hours", "knocks a cup off the table", "has whiskers twitching"],
    "dog": ["wags its tail", "fetches the stick", "barks at the postman", "begs at the table",
            "digs in the garden", "greets you at the door", "rolls over for a treat", "howls at sirens"],
    "bird": ["sings at dawn", "builds a nest", "flutters between branches", "pecks at seeds",
             "migrates south", "preens its feathers", "perches on a wire", "lays speckled eggs"],
    "horse": ["gallops across the field", "neighs in the stable", "eats hay", "wears a saddle",
              "trots along the path", "has a flowing mane", "jumps the fence", "gets new shoes"],
}
DEMO_PASSWORD_SUFFIX = "-demo-pass"


@dataclass
class Login:
    username: str
    password: str
    role: str


def _generate_crowd(*, n_items: int, n_workers: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
    """Truth, features and (item, worker, label) triples of a realistic crowd.

    Uses ``inference.synthetic`` (CoNAL-style common + individual confusions,
    skewed worker activity) when it is available, else a small generator with
    the same ingredients.
    """
    try:
        from inference.synthetic import make_synthetic_crowd
    except ImportError:
        make_synthetic_crowd = None
    if make_synthetic_crowd is not None:
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
        triples = list(
            zip(data.item_idx.tolist(), data.annotator_idx.tolist(), data.label_idx.tolist())
        )
        return np.asarray(crowd.true_labels), np.asarray(data.features, dtype=float), triples

    rng = np.random.default_rng(seed)
    n_classes = len(CLASSES)
    truth = rng.integers(0, n_classes, size=n_items)
    means = rng.normal(scale=1.5, size=(n_classes, 16))
    features = means[truth] + rng.normal(size=(n_items, 16))
    # One shared confusion (cat<->dog, bird->horse...) that every worker falls into sometimes.
    common = np.roll(np.arange(n_classes), 1)
    reliability = rng.beta(6, 2.5, size=n_workers)  # most workers decent, a few poor
    common_share = rng.uniform(0.2, 0.8, size=n_workers)
    activity = rng.lognormal(sigma=1.0, size=n_workers)
    activity /= activity.sum()
    triples: list[tuple[int, int, int]] = []
    for item in range(n_items):
        for worker in rng.choice(n_workers, size=3, replace=False, p=activity):
            if rng.random() < reliability[worker]:
                label = truth[item]
            elif rng.random() < common_share[worker]:
                label = common[truth[item]]
            else:
                label = rng.integers(0, n_classes)
            triples.append((item, int(worker), int(label)))
    return truth, features, triples


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
        from django.db import connection

        if connection.vendor != "postgresql":
            return
        import psycopg

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
        env = os.environ.copy()
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT / "platform"), str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        env.setdefault("DJANGO_SETTINGS_MODULE", "crowdlab.settings")
        bindir = Path(sys.executable).parent
        commands: list[tuple[str, list[str]]] = []
        broker = str(settings.CELERY_BROKER_URL)
        if broker.startswith("memory://"):
            self.stderr.write(
                "CELERY_BROKER_URL is memory://: no worker can share it, so no worker is started. "
                "Set CELERY_TASK_ALWAYS_EAGER=1 to run inference inside the web process instead."
            )
        else:
            try:
                # ``current_app`` is crowdlab's (``crowdlab/__init__``); the
                # config module ``crowdlab.celery`` sits above the apps.
                with current_app.connection_for_write() as broker_connection:
                    broker_connection.ensure_connection(max_retries=1, timeout=3)
            except Exception as exc:  # noqa: BLE001 - kombu raises many transport-specific errors
                self.stderr.write(
                    f"The Celery broker {broker} is not reachable ({exc}); the worker keeps retrying, and "
                    "inference runs wait until it connects. Start Redis or set CELERY_BROKER_URL."
                )
            queues = f"{settings.CELERY_INFERENCE_QUEUE},{settings.CELERY_TASK_DEFAULT_QUEUE}"
            commands.append(
                (
                    "worker",
                    [sys.executable, "-m", "celery", "-A", "crowdlab", "worker", "-Q", queues,
                     "--concurrency", "1", "--beat", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                     "--schedule", str(REPO_ROOT / "var" / "celerybeat-schedule")],
                )
            )
            (REPO_ROOT / "var").mkdir(exist_ok=True)
        commands.append(
            (
                "web",
                [str(bindir / "gunicorn"), "crowdlab.wsgi:application", "--bind", f"{host}:{port}",
                 "--workers", "2", "--threads", "2", "--access-logfile", "-", "--graceful-timeout", "5"],
            )
        )
        children: list[tuple[str, subprocess.Popen[bytes]]] = []
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for name, command in commands:
                # Own session: the terminal's Ctrl-C reaches only us, and we stop the children in order.
                children.append(
                    (name, subprocess.Popen(command, cwd=REPO_ROOT / "platform", env=env, start_new_session=True))
                )
                self.stdout.write(f"started {name} (pid {children[-1][1].pid}): {' '.join(command[:6])} …")
            self.stdout.write(self.style.SUCCESS(f"Serving on http://{host}:{port}/ — press Ctrl-C to stop."))
            while not stopping:
                for name, child in children:
                    if child.poll() is not None:
                        self.stderr.write(f"{name} exited with status {child.returncode}; stopping the others.")
                        stopping = True
                        break
                time.sleep(0.5)
        finally:
            self.stdout.write("Stopping…")
            # SIGTERM to the main processes: gunicorn and Celery shut their own
            # workers down gracefully (Celery lets a running task finish).
            for _, child in reversed(children):
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            for name, child in reversed(children):
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    # A running inference task keeps a warm shutdown waiting; the
                    # run is re-queued on restart (acks_late + reject_on_worker_lost).
                    # Each child leads its own process group (start_new_session),
                    # so killing the group leaves no orphaned pool processes.
                    self.stderr.write(f"{name} did not stop within 10 s; killing it.")
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stdout.write("Stopped.")
