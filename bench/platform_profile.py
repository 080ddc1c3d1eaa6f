"""In-process CPU per request of submit and next-task (issue 3 perf work).

Drives Django's WSGI handler through the test client on the ``crowdlab_bench``
database (seed it with ``bench/platform_load.py`` first), prints the SQL of one
submit and one next-task (``CaptureQueriesContext``) and the CPU
(``time.process_time``) per request; ``prof`` adds a cProfile listing.

    python bench/platform_profile.py 300                  # timing
    python bench/platform_profile.py 300 prof tottime 40  # + profile

Uses the last bench client pair (bench-submit-31 / bench-next-31) and resets
the bench annotators' rows first, like ``platform_load.reset``.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import secrets
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "platform"), ROOT]
os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/crowdlab_bench")
os.environ["DEBUG"] = "false"
os.environ["LOG_LEVEL"] = "ERROR"
os.environ["CELERY_BROKER_URL"] = "redis://127.0.0.1:6379/14"
os.environ["CELERY_INFERENCE_QUEUE"] = "perf-bench"
os.environ["DJANGO_SETTINGS_MODULE"] = "crowdlab.settings"
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # DEBUG off needs a key: a throwaway one
# Django and what loads it come after the environment above and django.setup().
import django  # noqa: E402

django.setup()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import platform_load  # noqa: E402
import psycopg  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

url = os.environ["DATABASE_URL"]
platform_load.reset(url)
with psycopg.connect(url) as c:
    pid = c.execute("select id from projects_project where name='bench-load'").fetchone()[0]
client = Client(HTTP_AUTHORIZATION="Token bench" + "s" + f"{31:034d}")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
mode = sys.argv[2] if len(sys.argv) > 2 else "time"


def submit(j: int) -> None:
    body = json.dumps({"item": f"s31-{j}", "label": "dog", "time_spent_ms": 900})
    r = client.post(f"/api/projects/{pid}/annotations/", data=body, content_type="application/json")
    assert r.status_code == 201, (r.status_code, r.content)


nclient = Client(HTTP_AUTHORIZATION="Token bench" + "n" + f"{31:034d}")


def nexttask(j: int = 0) -> None:
    r = nclient.post(f"/api/projects/{pid}/next-task/")
    assert r.status_code == 200, (r.status_code, r.content)
    ext = r.json()["item"]["external_id"]
    body = json.dumps({"item": ext, "label": "cat"})
    r = nclient.post(f"/api/projects/{pid}/annotations/", data=body, content_type="application/json")
    assert r.status_code == 201, (r.status_code, r.content)


def print_queries(what: str, queries: CaptureQueriesContext) -> None:
    print(f"{what} queries:", len(queries))
    for query in queries.captured_queries:
        print("  ", query["sql"][:150].replace("\n", " "))


submit(2990)
nexttask()
with CaptureQueriesContext(connection) as q:
    submit(2991)
print_queries("submit", q)
with CaptureQueriesContext(connection) as q:
    r = nclient.post(f"/api/projects/{pid}/next-task/")
print_queries("next-task", q)
nclient.post(
    f"/api/projects/{pid}/annotations/",
    data=json.dumps({"item": r.json()["item"]["external_id"], "label": "cat"}),
    content_type="application/json",
)
pr = cProfile.Profile()
if mode == "prof":
    pr.enable()
for fn, name in ((submit, "submit"), (nexttask, "next+submit")):
    t0 = time.process_time()
    w0 = time.perf_counter()
    for j in range(N):
        fn(2000 + j if name == "submit" else j)
    cpu_ms = (time.process_time() - t0) / N * 1000
    wall_ms = (time.perf_counter() - w0) / N * 1000
    print(f"{name}: {cpu_ms:.2f} ms CPU/iter, {wall_ms:.2f} ms wall/iter")
if mode == "prof":
    pr.disable()
    sort_key = sys.argv[3] if len(sys.argv) > 3 else "cumulative"
    pstats.Stats(pr).sort_stats(sort_key).print_stats(int(sys.argv[4]) if len(sys.argv) > 4 else 45)
