"""Benchmark: streamed export of 100k aggregated labels through gunicorn + PostgreSQL.

    .venv/bin/python bench/export.py [--sizes 10000,100000] [--repeat 3] [--mv]

1. Creates (once) a bench database (``BENCH_DATABASE_URL``, default
   ``postgres://postgres@127.0.0.1:5432/crowdlab_bench_export``), migrates it and
   seeds one project per size with that many items and a *published* inference
   run holding one aggregated label per item (``--mv`` also seeds a project with
   3 human annotations per item and no run: the majority-vote path).
2. For each project and format (csv, json, jsonl) starts a fresh gunicorn
   (1 sync worker), warms it with a tiny request, then times the full download
   of ``GET /api/projects/{id}/export/?as=...`` with ``requests`` consuming the
   stream, and reads the worker's peak RSS (VmHWM) before and after.
3. Prints a Markdown table and writes ``bench/out/export.json``.

Memory is flat when the worker's peak RSS at 100k rows is about the same as at 10k.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/crowdlab_bench_export"
BENCH_URL = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
os.environ["DATABASE_URL"] = BENCH_URL
os.environ["CELERY_BROKER_URL"] = "memory://"  # seeding must not enqueue inference anywhere
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crowdlab.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# DEBUG stays off as in production, which needs a key: a throwaway one per run.
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))

CLASSES = [f"class{index}" for index in range(8)]
FORMATS = ("csv", "json", "jsonl")


def ensure_database() -> None:
    import psycopg

    name = BENCH_URL.rsplit("/", 1)[1]
    admin_url = BENCH_URL.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')


def setup_django() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def seed(n_items: int, *, with_run: bool) -> tuple[int, str]:
    """Project id and an API token of its owner; seeds once per (size, kind)."""
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from rest_framework.authtoken.models import Token

    from crowdlab.labelling.models import Annotation, AnnotationSource
    from crowdlab.projects.models import Item, ItemKind, Project
    from crowdlab.results.models import AggregatedLabel, InferenceRun, LabelSource, RunStatus

    User = get_user_model()
    owner, _ = User.objects.get_or_create(username="bench-export-owner")
    token, _ = Token.objects.get_or_create(user=owner)
    name = f"export-{'run' if with_run else 'mv'}-{n_items}"
    project = Project.objects.filter(owner=owner, name=name).first()
    if project is not None:
        return project.pk, token.key
    started = time.perf_counter()
    rng = np.random.default_rng(n_items)
    with transaction.atomic():
        project = Project.objects.create(
            owner=owner, name=name, classes=[{"name": c, "key": None} for c in CLASSES], model="conal"
        )
        Item.objects.bulk_create(
            (
                Item(project=project, external_id=f"item-{index:07d}", kind=ItemKind.TEXT, text="x", n_annotations=3)
                for index in range(n_items)
            ),
            batch_size=5000,
        )
        item_ids = list(Item.objects.filter(project=project).order_by("id").values_list("id", flat=True))
        if with_run:
            run = InferenceRun.objects.create(
                project=project, model="conal", status=RunStatus.PUBLISHED, n_items=n_items
            )
            probabilities = rng.dirichlet(np.ones(len(CLASSES)), size=n_items)
            AggregatedLabel.objects.bulk_create(
                (
                    AggregatedLabel(
                        run=run,
                        item_id=item_id,
                        label=CLASSES[int(row.argmax())],
                        confidence=float(row.max()),
                        probabilities=[round(float(p), 6) for p in row],
                        source=LabelSource.CROWD,
                        n_annotations=3,
                    )
                    for item_id, row in zip(item_ids, probabilities, strict=True)
                ),
                batch_size=5000,
            )
        else:
            workers = [User.objects.get_or_create(username=f"bench-export-w{index}")[0].pk for index in range(30)]
            labels = rng.integers(0, len(CLASSES), size=(n_items, 3))
            Annotation.objects.bulk_create(
                (
                    Annotation(
                        project=project,
                        item_id=item_id,
                        annotator_id=workers[(position + offset) % 30],
                        label=CLASSES[int(labels[position, offset])],
                        source=AnnotationSource.IMPORT,
                    )
                    for position, item_id in enumerate(item_ids)
                    for offset in range(3)
                ),
                batch_size=5000,
            )
    from django.db import connection

    with connection.cursor() as cursor:
        # Fresh statistics, as autovacuum would have them on a live database;
        # without them the planner guesses 48 rows and picks nested loops.
        cursor.execute("ANALYZE projects_item, results_aggregatedlabel, labelling_annotation")
    print(f"seeded {name} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return project.pk, token.key


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_pid(master: int) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("gunicorn started no worker")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


@contextmanager
def gunicorn_server(token: str, *, timeout_s: int) -> Iterator[tuple[int, str]]:
    """One gunicorn worker on a free port, answered once (imports, DB connection,
    URL resolution warmed up: a 404 body is enough); yields (worker pid, base URL)."""
    import requests

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT)]), "DEBUG": "0"}
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "crowdlab.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--timeout",
            str(timeout_s),
            "--log-level",
            "warning",
        ],
        cwd=ROOT / "platform",
        env=env,
    )
    try:
        pid = worker_pid(server.pid)
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                requests.get(f"{base}/api/projects/0/export/", headers={"Authorization": f"Token {token}"}, timeout=30)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield pid, base
    finally:
        server.terminate()
        server.wait(timeout=30)


def measure(project_id: int, token: str, fmt: str, repeat: int) -> dict[str, Any]:
    import requests

    headers = {"Authorization": f"Token {token}"}
    with gunicorn_server(token, timeout_s=120) as (pid, base):
        rss_before = peak_rss_mib(pid)
        times: list[float] = []
        first_byte: list[float] = []
        size = rows = 0
        for _ in range(repeat):
            started = time.perf_counter()
            response = requests.get(
                f"{base}/api/projects/{project_id}/export/?as={fmt}", headers=headers, stream=True, timeout=120
            )
            response.raise_for_status()
            size = rows = 0
            got_first = None
            for chunk in response.iter_content(chunk_size=1 << 16):
                if got_first is None:
                    got_first = time.perf_counter() - started
                size += len(chunk)
                rows += chunk.count(b"\n")
            times.append(time.perf_counter() - started)
            first_byte.append(got_first or 0.0)
            content_type = response.headers["Content-Type"]
        return {
            "format": fmt,
            "seconds_median": statistics.median(times),
            "seconds_min": min(times),
            "first_byte_s": statistics.median(first_byte),
            "bytes": size,
            "lines": rows,
            "content_type": content_type,
            "worker_peak_rss_mib_before": round(rss_before, 1),
            "worker_peak_rss_mib_after": round(peak_rss_mib(pid), 1),
        }


def measure_imports(token: str, n_items: int) -> list[dict[str, Any]]:
    """Time the bulk item import (JSON, CSV) and a crowd import of 3 labels per item through gunicorn."""
    import requests
    from django.contrib.auth import get_user_model

    from crowdlab.projects.models import Project

    owner = get_user_model().objects.get(username="bench-export-owner")
    items_json = json.dumps(
        [
            {"external_id": f"imp-{index:07d}", "text": f"item text {index}", "features": [0.5, 1.5, 2.5, 3.5]}
            for index in range(n_items)
        ]
    ).encode()
    items_csv = (
        "external_id,text,f0,f1,f2,f3\n"
        + "".join(f"imp-{index:07d},item text {index},0.5,1.5,2.5,3.5\n" for index in range(n_items))
    ).encode()
    crowd_csv = (
        "item,annotator,label\n"
        + "".join(
            f"imp-{row // 3:07d},w{row % 3 + (row // 3) % 30},{CLASSES[row % len(CLASSES)]}\n"
            for row in range(3 * n_items)
        )
    ).encode()
    cases = [
        ("items", "JSON array", "application/json", items_json),
        ("items", "CSV", "text/csv", items_csv),
        ("crowd", "CSV item,annotator,label (3 per item, creates the items)", "text/csv", crowd_csv),
    ]
    results = []
    headers = {"Authorization": f"Token {token}"}
    with gunicorn_server(token, timeout_s=300) as (_pid, base):
        for kind, label, content_type, body in cases:
            Project.objects.filter(owner=owner, name="import-bench").delete()
            project = Project.objects.create(
                owner=owner, name="import-bench", classes=[{"name": c, "key": None} for c in CLASSES]
            )
            path = "items/import/" if kind == "items" else "crowd/import/"
            started = time.perf_counter()
            response = requests.post(
                f"{base}/api/projects/{project.pk}/{path}",
                data=body,
                timeout=300,
                headers={**headers, "Content-Type": content_type},
            )
            seconds = time.perf_counter() - started
            if response.status_code != 201:
                raise RuntimeError(f"{kind} import failed: {response.status_code} {response.text[:500]}")
            results.append(
                {
                    "import": kind,
                    "body": label,
                    "rows": n_items if content_type == "application/json" else body.count(b"\n") - 1,
                    "mib": len(body) / 2**20,
                    "seconds": seconds,
                    "response": response.json(),
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr)
            Project.objects.filter(pk=project.pk).delete()
    from django.db import connection

    with connection.cursor() as cursor:
        # The deleted import projects leave dead rows behind; clean up before timing exports.
        cursor.execute("VACUUM ANALYZE projects_item, labelling_annotation, results_aggregatedlabel")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--mv", action="store_true", help="also time the majority-vote path (no run) at the largest size"
    )
    parser.add_argument("--imports", action="store_true", help="also time 100k-item and 300k-label imports over HTTP")
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    ensure_database()
    setup_django()
    if options.imports:
        _, token = seed(min(sizes), with_run=True)
        imports = measure_imports(token, max(sizes))
        print(f"load average: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs", file=sys.stderr)
        print("| import | body | rows | MiB | time |")
        print("|---|---|---:|---:|---:|")
        for r in imports:
            print(f"| {r['import']} | {r['body']} | {r['rows']:,} | {r['mib']:.1f} | {r['seconds']:.2f} s |")
        print()
    cases = [(size, True) for size in sizes] + ([(max(sizes), False)] if options.mv else [])
    results = []
    for size, with_run in cases:
        project_id, token = seed(size, with_run=with_run)
        for fmt in FORMATS:
            result = {
                "rows": size,
                "source": "published run" if with_run else "majority vote (3 labels/item)",
                **measure(project_id, token, fmt, options.repeat),
            }
            results.append(result)
            print(json.dumps(result), file=sys.stderr)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "export.json").write_text(json.dumps(results, indent=2))
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs", file=sys.stderr)
    print(
        f"| rows | labels from | format | time (median of {options.repeat}) | min | first byte | MiB | worker peak RSS before → after |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---|")
    for r in results:
        print(
            f"| {r['rows']:,} | {r['source']} | {r['format']} | {r['seconds_median']:.2f} s | {r['seconds_min']:.2f} s | "
            f"{r['first_byte_s'] * 1000:.0f} ms | {r['bytes'] / 2**20:.1f} | {r['worker_peak_rss_mib_before']} → {r['worker_peak_rss_mib_after']} MiB |"
        )


if __name__ == "__main__":
    main()
