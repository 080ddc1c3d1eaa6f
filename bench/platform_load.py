"""Platform API load benchmark (issue 3): annotation submit and next-task
against gunicorn + PostgreSQL with ~1M annotations stored.

    python bench/platform_load.py                 # seed once (if needed), run both scenarios
    python bench/platform_load.py --reseed        # drop and re-seed the bench database
    python bench/platform_load.py --scenario submit --duration 30

What it does:

1. creates the database ``crowdlab_bench`` (``--db``), migrates it and seeds, in
   SQL on the server (``INSERT … SELECT generate_series``, the fastest path, no
   Python rows): one project (3 classes, k=3), 1,064 annotators, 400k items of which
   300k are complete (3 labels) and 100k carry 0–2 labels, ≈1.0M annotations, a
   published inference run snapshotting them, and for the load: 32 "submit"
   annotators each holding 3,000 active leases and 32 "next-task" annotators
   with none;
2. starts gunicorn (``--chdir platform crowdlab.wsgi``, gthread workers) with
   its own Celery queue/Redis DB so the live-inference trigger never reaches
   anyone else's worker;
3. drives 32 concurrent clients with ``wrk`` (C, one connection per thread,
   Lua scripts generated below): scenario *submit* POSTs a fresh label for the
   next leased item (expects 201); scenario *next-task* loops next-task → submit
   like a labelling client (expects 200 then 201); wrk reports client-side
   latency for all requests of a scenario, and gunicorn's access log (``%(D)s``
   µs per request) splits the server-side time by endpoint;
4. resets the bench annotators' rows after each scenario so runs are repeatable.

Reports req/s, p50/p95/p99, errors (non-expected statuses + socket errors) and
the machine load (``os.getloadavg``) before each run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

N_CROWD = 1000
N_CLIENTS = 32
LEASES_PER_SUBMITTER = 3000
N_FULL_ITEMS = 300_000
N_OPEN_ITEMS = 100_000
CLASSES = [{"name": "cat", "key": "1"}, {"name": "dog", "key": "2"}, {"name": "bird", "key": "3"}]
PROJECT_NAME = "bench-load"
TOKEN_PREFIX = {"submit": "s", "next": "n"}


def token_for(kind: str, index: int) -> str:
    # Deterministic 40-character keys so the Lua scripts can be generated.
    return f"bench{TOKEN_PREFIX[kind]}{index:034d}"


def admin_url(base: str) -> str:
    return re.sub(r"/[^/]*$", "/postgres", base)


def ensure_database(url: str, name: str, drop: bool) -> None:
    with psycopg.connect(admin_url(url), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and drop:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def run_manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def seed(url: str, env: dict[str, str]) -> None:
    """Everything in SQL on the server: ~1M annotations in well under a minute.

    ``env`` is the bench's environment (DEBUG off, a throwaway SECRET_KEY, its own
    broker): the ORM step below loads the settings, which refuse to start without a key."""
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=False) as conn:
        cur = conn.cursor()
        if cur.execute("SELECT 1 FROM projects_project WHERE name = %s", [PROJECT_NAME]).fetchone():
            print("bench data already present (use --reseed to rebuild)")
            return
        cur.execute(
            """INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                                      is_staff, is_active, date_joined)
               VALUES ('!', false, 'bench-owner', '', '', '', false, true, now()) RETURNING id"""
        )
        owner_id = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO projects_project (owner_id, name, instructions, classes, k, model, retrain_every_n,
                   retrain_every_minutes, require_confirmation, lease_seconds, is_active, created_at, updated_at)
               VALUES (%s, %s, '', %s, 3, 'conal', 50, 10, false, 86400, true, now(), now()) RETURNING id""",
            [owner_id, PROJECT_NAME, json.dumps(CLASSES)],
        )
        project_id = cur.fetchone()[0]
        # Crowd annotators crowd0..crowd999, then the load clients.
        cur.execute(
            """INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                                      is_staff, is_active, date_joined)
               SELECT '!', false, 'crowd' || g, '', '', '', false, true, now() FROM generate_series(0, %s) g""",
            [N_CROWD - 1],
        )
        for kind in ("submit", "next"):
            cur.execute(
                """INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                                          is_staff, is_active, date_joined)
                   SELECT '!', false, %s || g, '', '', '', false, true, now() FROM generate_series(0, %s) g""",
                [f"bench-{kind}-", N_CLIENTS - 1],
            )
            cur.executemany(
                """INSERT INTO authtoken_token (key, user_id, created)
                   SELECT %s, id, now() FROM auth_user WHERE username = %s""",
                [(token_for(kind, i), f"bench-{kind}-{i}") for i in range(N_CLIENTS)],
            )
        cur.execute(
            """INSERT INTO projects_membership (project_id, user_id, created_at)
               SELECT %s, id, now() FROM auth_user WHERE username <> 'bench-owner'""",
            [project_id],
        )
        # Items: 0..299999 complete, 300000..399999 with 0-2 labels, then the
        # submit clients' leased items s<client>-<j>.
        cur.execute(
            """INSERT INTO projects_item (project_id, external_id, kind, text, image, url, gold_label,
                                          n_annotations, created_at)
               SELECT %(p)s, 'i' || g, 'text', 'bench item ' || g, '', '',
                      CASE WHEN g %% 50 = 0 THEN 'cat' END,
                      CASE WHEN g < %(full)s THEN 3 ELSE (g::bigint * 7919) %% 3 END, now()
               FROM generate_series(0, %(n)s) g""",
            {"p": project_id, "full": N_FULL_ITEMS, "n": N_FULL_ITEMS + N_OPEN_ITEMS - 1},
        )
        cur.execute(
            """INSERT INTO projects_item (project_id, external_id, kind, text, image, url, n_annotations, created_at)
               SELECT %(p)s, 's' || c || '-' || j, 'text', 'leased item', '', '', 0, now()
               FROM generate_series(0, %(c)s) c, generate_series(0, %(j)s) j""",
            {"p": project_id, "c": N_CLIENTS - 1, "j": LEASES_PER_SUBMITTER - 1},
        )
        # Annotations: item i gets n_annotations labels from distinct crowd
        # members (i + r*337) mod 1000, r = 0..n-1; labels skewed like a real crowd.
        cur.execute(
            """INSERT INTO labelling_annotation (project_id, item_id, annotator_id, label, source,
                                                 time_spent_ms, created_at, updated_at)
               SELECT %(p)s, i.id, u.id,
                      (ARRAY['cat','dog','bird'])[1 + ((i.id * 31 + r * 17) %% 10 >= 7)::int
                                                    + ((i.id * 31 + r * 17) %% 10 >= 9)::int],
                      'import', 1500, now(), now()
               FROM projects_item i
               CROSS JOIN LATERAL generate_series(0, i.n_annotations - 1) r
               JOIN auth_user u ON u.username = 'crowd' || ((i.id + r * 337) %% %(crowd)s)
               WHERE i.project_id = %(p)s""",
            {"p": project_id, "crowd": N_CROWD},
        )
        # Imported crowd labels carry no assignments (like dataio's crowd import).
        cur.execute(
            """INSERT INTO labelling_assignment (project_id, item_id, annotator_id, status, created_at, expires_at)
               SELECT %(p)s, i.id, u.id, 'active', now(), now() + interval '30 days'
               FROM projects_item i
               JOIN auth_user u ON u.username = 'bench-submit-' || split_part(substr(i.external_id, 2), '-', 1)
               WHERE i.project_id = %(p)s AND i.external_id LIKE 's%%'""",
            {"p": project_id},
        )
        n = cur.execute("SELECT count(*) FROM labelling_annotation").fetchone()[0]
        conn.commit()
    # A published run snapshotting the seeded labels (steady state: the live
    # trigger counts only newer annotations). Through the ORM so that columns
    # the results app adds later get their defaults.
    run_manage(
        env,
        "shell",
        "-c",
        "from django.db.models import Max; from crowdlab.projects.models import Project; "
        "from crowdlab.results.models import InferenceRun; "
        f"p = Project.objects.get(name={PROJECT_NAME!r}); "
        "InferenceRun.objects.create(project=p, model='ds', status='published', "
        "snapshot_annotation_id=p.annotations.aggregate(m=Max('id'))['m'], n_annotations=p.annotations.count())",
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    print(f"seeded {n:,} annotations in {time.perf_counter() - t0:.1f} s")


def project_id_of(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id FROM projects_project WHERE name = %s", [PROJECT_NAME]).fetchone()[0]


def reset(url: str) -> None:
    """Undo what the load clients wrote, so each run starts from the same state."""
    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute(
            """WITH bench AS (SELECT id FROM auth_user WHERE username LIKE 'bench-submit-%%'
                                                          OR username LIKE 'bench-next-%%'),
                    gone AS (DELETE FROM labelling_annotation a USING bench b WHERE a.annotator_id = b.id
                             RETURNING a.item_id)
               UPDATE projects_item i SET n_annotations = i.n_annotations - c.n
               FROM (SELECT item_id, count(*) AS n FROM gone GROUP BY item_id) c WHERE i.id = c.item_id"""
        )
        conn.execute(
            """DELETE FROM labelling_assignment a USING auth_user u
               WHERE a.annotator_id = u.id AND u.username LIKE 'bench-next-%%'"""
        )
        conn.execute(
            """UPDATE labelling_assignment a SET status = 'active', expires_at = now() + interval '30 days'
               FROM auth_user u WHERE a.annotator_id = u.id AND u.username LIKE 'bench-submit-%%'"""
        )
        conn.execute("""DELETE FROM results_inferencerun WHERE status <> 'published'""")
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE labelling_annotation, labelling_assignment, projects_item")


LUA_COMMON = r"""
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } cl_timespec; int clock_gettime(int, cl_timespec*); ]]
local ts = ffi.new("cl_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end
local threads = {}
local counter = 0
function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end
-- Open loop (--rate): each connection sends on a fixed schedule of one request
-- every INTERVAL_US (staggered across connections), whatever the server does,
-- and a request's latency counts from its SCHEDULED send time, so a stalled
-- server cannot hide its backlog (coordinated omission). INTERVAL_US = 0:
-- closed loop, each connection sends as soon as its previous answer came.
local interval = INTERVAL_US
local next_at = nil
local sched = 0
local sent = 0
seen = 0
lat = {}
kinds = {}
starts = {}
badcodes = {}
function unexpected(status)
  bad = bad + 1
  badcodes[tostring(status)] = (badcodes[tostring(status)] or 0) + 1
end
function delay()
  if interval == 0 then return 0 end
  local now = now_us()
  if next_at == nil then next_at = now + (id % CLIENTS) * interval / CLIENTS end
  local wait = (next_at - now) / 1000
  if wait < 0 then return 0 end
  return wait
end
local function stamp()
  sent = now_us()
  if interval == 0 or next_at == nil then sched = sent
  else sched = next_at; next_at = next_at + interval end
end
local function record(kind)
  seen = seen + 1
  -- The first answer per connection is skipped: all connections send their
  -- first request at once, before the schedule starts.
  if seen == 1 then return end
  table.insert(lat, now_us() - math.min(sched, sent))
  table.insert(kinds, kind)
  table.insert(starts, math.min(sched, sent))
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("bad")
    io.write(string.format("REQS %d\n", t:get("seen")))
    for code, n in pairs(t:get("badcodes")) do io.write(string.format("BAD %s %d\n", code, n)) end
    local l, k, st = t:get("lat"), t:get("kinds"), t:get("starts")
    for i = 1, #l do io.write(string.format("LAT %s %.0f %.0f\n", k[i], l[i], st[i])) end
  end
  io.write(string.format("RESULT %d %d %d %d %d %d %d %d %d\n",
    summary.requests, summary.duration, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""

LUA_SUBMIT = (
    LUA_COMMON
    + r"""
local j = 0
bad = 0
function init(args)
  token = "Token " .. string.format("benchs%034d", id)
  j = 0
end
function request()
  stamp()
  local body = string.format('{"item": "s%d-%d", "label": "dog", "time_spent_ms": 900}', id, j)
  j = j + 1
  return wrk.format("POST", "/api/projects/PROJECT/annotations/",
    {["Authorization"] = token, ["Content-Type"] = "application/json"}, body)
end
function response(status, headers, body)
  record("submit")
  if status ~= 201 then unexpected(status) end
end
"""
)

LUA_NEXT = (
    LUA_COMMON
    + r"""
bad = 0
local pending = nil
function init(args)
  token = "Token " .. string.format("benchn%034d", id)
end
function request()
  stamp()
  if pending then
    local body = string.format('{"item": "%s", "label": "cat"}', pending)
    return wrk.format("POST", "/api/projects/PROJECT/annotations/",
      {["Authorization"] = token, ["Content-Type"] = "application/json"}, body)
  end
  return wrk.format("POST", "/api/projects/PROJECT/next-task/", {["Authorization"] = token})
end
function response(status, headers, body)
  record(pending and "submit" or "next-task")
  if pending then
    if status ~= 201 then unexpected(status) end
    pending = nil
  else
    if status == 200 then
      pending = string.match(body, '"external_id":"([^"]+)"')
      if not pending then unexpected("200 without an item") end
    else
      unexpected(status)
    end
  end
end
"""
)


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not listen on {port} within {timeout} s")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def server_pids(gunicorn_pid: int, url: str) -> list[int]:
    """gunicorn master + workers and the PostgreSQL backends serving the bench database."""
    # pgrep exits 1 when it finds none: an empty list, not an error.
    workers = subprocess.run(
        ["pgrep", "-P", str(gunicorn_pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    with psycopg.connect(url, autocommit=True) as conn:
        me = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        backends = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> %s", [me]
            )
        ]
    return [gunicorn_pid, *map(int, workers), *backends]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def server_side(access_log: Path) -> dict[str, dict[str, Any]]:
    per: dict[str, list[float]] = {}
    codes: dict[str, dict[str, int]] = {}
    for line in access_log.read_text().splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        path, code, micros = parts
        endpoint = "next-task" if path.endswith("/next-task/") else "submit" if path.endswith("/annotations/") else path
        per.setdefault(endpoint, []).append(int(micros) / 1000)
        codes.setdefault(endpoint, {}).setdefault(code, 0)
        codes[endpoint][code] += 1
    return {
        name: {
            "statuses": codes[name],
            "n": len(ms),
            "p50": percentile(ms, 50),
            "p95": percentile(ms, 95),
            "p99": percentile(ms, 99),
            "mean": statistics.fmean(ms),
        }
        for name, ms in per.items()
    }


def run_scenario(name: str, lua: str, args: argparse.Namespace, env: dict[str, str], project_id: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"core-bench-{name}-"))
    access_log = workdir / "access.log"
    script = workdir / f"{name}.lua"
    interval_us = 0 if not args.rate else round(args.clients / args.rate * 1e6)
    script.write_text(
        lua.replace("PROJECT", str(project_id))
        .replace("INTERVAL_US", str(interval_us))
        .replace("CLIENTS", str(args.clients))
    )
    warm_script = workdir / f"{name}-warm.lua"
    # The warm-up (imports, connections, prepared statements) always runs the
    # next-task loop, so it uses none of the submit clients' leased items
    # (reset() clears the next-task clients' rows before each scenario).
    warm_script.write_text(
        LUA_NEXT.replace("PROJECT", str(project_id)).replace("INTERVAL_US", "0").replace("CLIENTS", "4")
    )
    with open(workdir / "gunicorn.err", "w") as err:  # gunicorn keeps its own descriptor
        gunicorn = subprocess.Popen(
            [
                str(Path(PY).parent / "gunicorn"),
                "--chdir",
                "platform",
                "crowdlab.wsgi",
                "--bind",
                f"127.0.0.1:{args.port}",
                "--workers",
                str(args.workers),
                "--threads",
                str(args.threads),
                "--worker-class",
                "gthread" if args.threads > 1 else "sync",
                "--backlog",
                "256",
                *(
                    ["--access-logfile", str(access_log), "--access-logformat", "%(U)s %(s)s %(D)s"]
                    if args.access_log
                    else []
                ),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        wait_for_port(args.port)
        # Warm-up: import paths, connections, caches (not measured).
        subprocess.run(
            ["wrk", "-t4", "-c4", "-d3s", "-s", str(warm_script), f"http://127.0.0.1:{args.port}"],
            check=True,
            capture_output=True,
            text=True,
        )
        # Let the warm-up's in-flight requests finish: a submit still running
        # when the measured run starts would make its next-task see a lease that
        # is about to close (then the measured submit is an idempotent 200).
        time.sleep(2)
        access_log.write_text("")  # stays empty without --access-log
        load_before = os.getloadavg()
        # CPU the server side (gunicorn + its PostgreSQL backends) and wrk burn
        # per request: on a shared box it shows what the app costs, apart from
        # what the other processes take away.
        before = {pid: cpu_seconds(pid) for pid in server_pids(gunicorn.pid, args.url)}
        children_before = os.times()
        out = subprocess.run(
            [
                "wrk",
                f"-t{args.clients}",
                f"-c{args.clients}",
                f"-d{args.duration}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                f"http://127.0.0.1:{args.port}",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        children_after = os.times()
        after_pids = server_pids(gunicorn.pid, args.url)
        gunicorn_pids = {
            gunicorn.pid,
            *map(
                int,
                subprocess.run(
                    ["pgrep", "-P", str(gunicorn.pid)], capture_output=True, text=True, check=False
                ).stdout.split(),
            ),
        }
        app_cpu = sum(cpu_seconds(pid) - before.get(pid, 0.0) for pid in after_pids if pid in gunicorn_pids)
        db_cpu = sum(cpu_seconds(pid) - before.get(pid, 0.0) for pid in after_pids if pid not in gunicorn_pids)
        server_cpu = app_cpu + db_cpu
        wrk_cpu = (children_after.children_user + children_after.children_system) - (
            children_before.children_user + children_before.children_system
        )
    finally:
        os.killpg(gunicorn.pid, signal.SIGTERM)
        gunicorn.wait(timeout=30)
    match = re.search(r"^RESULT (.+)$", out, re.M)
    if match is None:
        raise RuntimeError(f"wrk output without RESULT line:\n{out}")
    requests, duration_us, bad, sock_errors, _non2xx, p50, p95, p99, lmax = map(int, match.group(1).split())
    per_client = [int(n) for n in re.findall(r"^REQS (\d+)$", out, re.M)]
    bad_statuses: dict[str, int] = {}
    for code, n in re.findall(r"^BAD (.+) (\d+)$", out, re.M):
        bad_statuses[code] = bad_statuses.get(code, 0) + int(n)
    latencies: dict[str, list[float]] = {"all": []}
    samples = [
        (kind, int(micros) / 1000, int(start) / 1e6)
        for kind, micros, start in re.findall(r"^LAT (\S+) (\d+) (\d+)$", out, re.M)
    ]
    first = min((start for _, _, start in samples), default=0.0)
    slow: list[tuple[float, float]] = []
    for kind, ms, start in samples:
        # The first second is left out: every connection sends its first
        # request at the same instant and the schedule settles from there.
        if start - first < 1.0:
            continue
        latencies.setdefault(kind, []).append(ms)
        latencies["all"].append(ms)
        slow.append((start, ms))
    # When the slowest 1 % started (seconds into the run): a cluster is a stall.
    slow.sort(key=lambda pair: -pair[1])
    slowest = sorted((round(start - first, 1), round(ms)) for start, ms in slow[: max(1, len(slow) // 100)])
    time.sleep(0.5)
    result = {
        "scenario": name,
        "mode": f"open loop, {args.rate:g} req/s offered" if args.rate else "closed loop",
        "offered_rps": args.rate,
        # From the scheduled send time (open loop) or the actual send (closed
        # loop); the first answer per connection and the first second are left out.
        "latency_ms": {
            kind: {
                "n": len(ms),
                "p50": percentile(ms, 50),
                "p95": percentile(ms, 95),
                "p99": percentile(ms, 99),
                "max": max(ms) if ms else float("nan"),
            }
            for kind, ms in latencies.items()
        },
        "requests": requests,
        "rps": requests / (duration_us / 1e6),
        "bad_status": bad,
        "bad_statuses": bad_statuses,
        "requests_per_client_min_max": [min(per_client, default=0), max(per_client, default=0)],
        "slowest_1pct_start_s": sorted({start for start, _ in slowest}),
        "socket_errors": sock_errors,
        "client_p50_ms": p50 / 1000,
        "client_p95_ms": p95 / 1000,
        "client_p99_ms": p99 / 1000,
        "client_max_ms": lmax / 1000,
        "server": server_side(access_log),
        "loadavg_before": load_before,
        "server_cpu_ms_per_request": server_cpu / max(requests, 1) * 1000,
        "app_cpu_ms_per_request": app_cpu / max(requests, 1) * 1000,
        "db_cpu_ms_per_request": db_cpu / max(requests, 1) * 1000,
        "wrk_cpu_ms_per_request": wrk_cpu / max(requests, 1) * 1000,
    }
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def print_result(result: dict[str, Any]) -> None:
    print(
        f"\n== {result['scenario']}: {result['requests']:,} requests, {result['rps']:.0f} req/s, "
        f"errors: {result['bad_status']} unexpected status {result['bad_statuses'] or ''} + {result['socket_errors']} socket; "
        f"load before {result['loadavg_before'][0]:.2f}"
    )
    for kind, lat in result["latency_ms"].items():
        print(
            f"   client {kind:>9} ({result['mode']}): n={lat['n']:,}  p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms  "
            f"p99 {lat['p99']:.1f} ms  max {lat['max']:.1f} ms"
        )
    low, high = result["requests_per_client_min_max"]
    print(f"   answers per client: min {low:,}, max {high:,}")
    starts = result["slowest_1pct_start_s"]
    if starts:
        print(f"   slowest 1 % started at (s into the run): {starts[:12]}{' …' if len(starts) > 12 else ''}")
    print(
        f"   client (wrk's own, from actual send, all requests): p50 {result['client_p50_ms']:.1f} ms  p95 {result['client_p95_ms']:.1f} ms  "
        f"p99 {result['client_p99_ms']:.1f} ms  max {result['client_max_ms']:.1f} ms"
    )
    print(
        f"   CPU per request: server {result['server_cpu_ms_per_request']:.1f} ms (gunicorn "
        f"{result['app_cpu_ms_per_request']:.1f} + postgres {result['db_cpu_ms_per_request']:.1f}), "
        f"wrk {result['wrk_cpu_ms_per_request']:.2f} ms → at most "
        f"{2000 / (result['server_cpu_ms_per_request'] + result['wrk_cpu_ms_per_request']):.0f} req/s "
        f"on 2 otherwise idle cores"
    )
    for endpoint, s in result["server"].items():
        print(
            f"   server {endpoint:>9}: n={s['n']:,}  p50 {s['p50']:.1f} ms  p95 {s['p95']:.1f} ms  "
            f"p99 {s['p99']:.1f} ms  mean {s['mean']:.1f} ms  statuses {s['statuses']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="crowdlab_bench")
    parser.add_argument("--reseed", action="store_true", help="drop and re-create the bench database")
    parser.add_argument("--scenario", choices=["submit", "next-task", "both"], default="both")
    parser.add_argument("--clients", type=int, default=N_CLIENTS)
    parser.add_argument("--duration", type=int, default=30, help="seconds per scenario")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--port", type=int, default=8731)
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gunicorn access log for the server-side split per endpoint (costs server CPU; --no-access-log for the "
        "throughput figure)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="open loop: offer this many requests/s in total, evenly over the clients, and measure latency from "
        "each request's scheduled send time (0: closed loop, each client sends when its previous answer came)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.clients > N_CLIENTS:
        parser.error(f"--clients: at most {N_CLIENTS} (one seeded annotator per client)")
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")

    base_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/crowdlab")
    url = re.sub(r"/[^/]*$", f"/{args.db}", base_url)
    args.url = url
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DEBUG": "false",
        # DEBUG off as in production needs a key: a throwaway one per run.
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
        "LOG_LEVEL": "ERROR",
        # The live-inference trigger may enqueue a run: keep it on a queue and
        # Redis DB nobody else consumes.
        "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14"),
        "CELERY_INFERENCE_QUEUE": "core-bench-inference",
    }
    ensure_database(base_url, args.db, drop=args.reseed)
    run_manage(env, "migrate", "--noinput")
    seed(url, env)
    project_id = project_id_of(url)
    with psycopg.connect(url) as conn:
        n = conn.execute("SELECT count(*) FROM labelling_annotation").fetchone()[0]
    print(
        f"bench database {args.db}: {n:,} annotations stored; {os.cpu_count()} CPUs; "
        f"gunicorn {args.workers} workers × {args.threads} threads; {args.clients} clients × {args.duration} s; "
        + (f"open loop at {args.rate:g} req/s" if args.rate else "closed loop")
    )

    scenarios = {"submit": LUA_SUBMIT, "next-task": LUA_NEXT}
    chosen = list(scenarios) if args.scenario == "both" else [args.scenario]
    results = []
    for name in chosen:
        reset(url)
        result = run_scenario(name, scenarios[name], args, env, project_id)
        print_result(result)
        results.append(result)
    reset(url)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
