"""``manage.py import_crowd DIR --project NAME --owner USER [--create-owner] [--with-test]``.

Reads a dataset folder in the layout of ``shared/datasets/*`` (annotations.csv,
gold.csv, features.npy + items.txt, texts.csv) into a project, creating the
project (classes: the sorted labels, keys 1..9) when the owner has none of
that name. Re-running it changes nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from crowdlab.labelling.datasets import dataset_classes, dataset_import
from crowdlab.projects.importing import ImportValidationError
from crowdlab.projects.models import Project
from crowdlab.projects.roles import make_requester
from crowdlab.projects.services import project_create


class Command(BaseCommand):
    help = "Import a crowd dataset folder (annotations.csv, gold.csv, features.npy + items.txt, texts.csv)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path, help="A folder such as ../shared/datasets/music.")
        parser.add_argument(
            "--project", required=True, help="Project name (created if the owner has none by that name)."
        )
        parser.add_argument("--owner", required=True, help="Username of the requester who owns the project.")
        parser.add_argument(
            "--create-owner",
            action="store_true",
            help="Create the owner as a requester (with an unusable password) if the account does not exist.",
        )
        parser.add_argument(
            "--with-test",
            action="store_true",
            help="Also import test_* files as unlabelled items 'test-<row>' with data.split='test'.",
        )
        parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        directory: Path = options["directory"]
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a directory.")
        started = time.perf_counter()
        User = get_user_model()
        with transaction.atomic():
            owner = User.objects.filter(username=options["owner"]).first()
            if owner is None:
                if not options["create_owner"]:
                    raise CommandError(f"no user {options['owner']!r}; create it first or pass --create-owner.")
                owner = User.objects.create(username=options["owner"], password=make_password(None))
                make_requester(owner)
                self.stderr.write(f"created requester {owner.username!r} (set a password with changepassword)")
            project = Project.objects.filter(owner=owner, name=options["project"]).first()
            created = project is None
            try:
                if project is None:
                    classes = dataset_classes(directory)
                    if len(classes) < 2:
                        raise CommandError(f"{directory}: found {len(classes)} label(s); a project needs at least 2.")
                    project = project_create(owner=owner, name=options["project"], classes=classes)
                result = dataset_import(
                    directory=directory, project=project, project_created=created, with_test=options["with_test"]
                )
            except ImportValidationError as error:
                details = "; ".join(
                    f"row {e['row']}: {e['field'] or 'row'}: {e['message'].rstrip('.')}"
                    for e in error.as_dict()["errors"][:10]
                )
                raise CommandError(f"{error.summary()} {details}") from None
            except (ValueError, ValidationError) as error:
                raise CommandError(str(error)) from None
        summary = {**result.as_dict(), "project": project.name, "seconds": round(time.perf_counter() - started, 2)}
        if options["json"]:
            self.stdout.write(json.dumps(summary))
            return
        self.stdout.write(
            f"{'created' if created else 'updated'} project {project.name!r} (id {project.pk}, classes "
            f"{', '.join(project.class_names)}): {summary['items_created']} new items"
            f"{' + ' + str(summary['test_items_created']) + ' test items' if options['with_test'] else ''}, "
            f"{summary['annotations_created']} new annotations ({summary['duplicates_skipped']} already stored), "
            f"{summary['annotators_created']} new annotator accounts, in {summary['seconds']} s."
        )
