"""``manage.py export_labels --project NAME [--owner USER] [--format csv|json|jsonl] [--generated] [--output FILE|-]``.

Writes the same stream as ``GET /api/projects/{id}/export/`` (results.export).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from crowdlab.projects.models import Project
from crowdlab.results.export import EXPORT_FORMATS, export_to_file


class Command(BaseCommand):
    help = "Export a project's labels (latest published run, majority vote before the first run)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project name, or its numeric id.")
        parser.add_argument("--owner", help="Owner's username, when several owners have a project of that name.")
        parser.add_argument("--format", dest="fmt", choices=EXPORT_FORMATS, default="csv")
        parser.add_argument(
            "--generated",
            action="store_true",
            help="Add CrowdInG's generated annotations (rows of kind 'generated'; not human labels).",
        )
        parser.add_argument("--output", default="-", help="File to write, or - for standard output (default).")

    def handle(self, *args: Any, **options: Any) -> None:
        projects = Project.objects.all()
        if options["owner"]:
            projects = projects.filter(owner__username=options["owner"])
        name: str = options["project"]
        matches = list(projects.filter(name=name)[:2])
        if not matches and name.isdigit():
            matches = list(projects.filter(pk=int(name)))
        if not matches:
            raise CommandError(
                f"no project named {name!r}" + (f" owned by {options['owner']!r}." if options["owner"] else ".")
            )
        if len(matches) > 1:
            raise CommandError(f"several projects are named {name!r}; pass --owner USER or the project id.")
        project = matches[0]
        if options["output"] == "-":
            export_to_file(
                project=project, fmt=options["fmt"], out=self.stdout._out, generated=options["generated"]
            )  # raw stream: OutputWrapper.write would add newlines
            return
        path = Path(options["output"])
        with path.open("w", encoding="utf-8", newline="") as handle:
            written = export_to_file(project=project, fmt=options["fmt"], out=handle, generated=options["generated"])
        self.stderr.write(f"wrote {written} characters to {path}")
