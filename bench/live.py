"""Live inference benchmark (issue 4): cold run and warm end-to-end latency.

With a synthetic crowd stored (default: 30k items with 32 features, 10 classes,
~100k annotations from 100 annotators, known truth), against gunicorn +
PostgreSQL + Redis + ONE real Celery worker process, it measures:

(a) cold: "Run now" over HTTP on a project with no checkpoint → the new labels
    readable through ``GET /api/projects/{id}/results/labels/``;
(b) warm end-to-end: an annotator submits annotations over HTTP; the clock
    starts just before the POST of the annotation that crosses the project's
    threshold (``retrain_every_n``) and stops when the labels endpoint serves
    the new run's labels (the run warm-starts from (a)'s checkpoint).

``--chain`` measures the live refit chain instead: an EMPTY project per crowd and
model, labels arriving in ``--batches`` batches through the crowd-import API (each
batch crosses ``retrain_every_n``, so the real trigger starts the run), and after
each run its published accuracy, ECE and seconds next to a cold fit of the same
model, seed and platform defaults on exactly the labels that run read (fitted in
this process from the same database snapshot).

It uses its own database (dropped at the end unless --keep-db), its own Celery
queue and Redis DB, so it can run next to other work. Usage::

    .venv/bin/python bench/live.py                 # defaults as above, model conal
    .venv/bin/python bench/live.py --model ds --items 3000 --annotations 10000   # quick
    .venv/bin/python bench/live.py --chain --crowd synthetic \
        --crowd labelme=../shared/datasets/labelme --crowd music=../shared/datasets/music \
        --model mv --model ds --model conal --model crowding
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "platform"), str(REPO)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=30_000)
    parser.add_argument("--annotations", type=int, default=100_000, help="approximate number stored")
    parser.add_argument("--annotators", type=int, default=100)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument(
        "--model",
        action="append",
        choices=["mv", "ds", "conal", "crowding"],
        help="latency mode: one model (default conal); --chain: repeatable (default all four)",
    )
    parser.add_argument("--chain", action="store_true", help="the live refit chain from an empty project")
    parser.add_argument(
        "--crowd",
        action="append",
        default=[],
        help="--chain: 'synthetic', 'synthetic:N_ITEMS' or name=folder (repeatable)",
    )
    parser.add_argument("--batches", type=int, default=12, help="--chain: batches the labels arrive in")
    parser.add_argument("--seed", type=int, default=0, help="--chain: the crowd's arrival order and the fits' seed")
    parser.add_argument("--retrain-every", type=int, default=50, help="N: the threshold crossed in (b)")
    parser.add_argument("--warm-repeats", type=int, default=3)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--db", default="crowdlab_bench_live")
    parser.add_argument("--redis-db", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2, help="INFERENCE_THREADS of the worker")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "live.json"))
    args = parser.parse_args()
    if not args.chain:
        if args.model and len(args.model) > 1:
            parser.error("the latency mode takes one --model")
        args.model = (args.model or ["conal"])[0]
        if args.model == "crowding":
            parser.error("the latency mode measures mv, ds or conal")
    if args.batches < 2:
        parser.error("--batches must be >= 2")
    if args.items < 10 or args.annotations < args.items or args.classes < 2:
        parser.error("--items >= 10, --annotations >= --items and --classes >= 2 are required")
    return args


def recreate_database(name: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def load_crowd(args: argparse.Namespace) -> dict[str, Any]:
    """Store the synthetic crowd; returns ids and tokens."""
    from django.contrib.auth import get_user_model
    from django.db.models import Count
    from rest_framework.authtoken.models import Token

    from crowdlab.labelling.models import Annotation, AnnotationSource
    from crowdlab.projects.models import Item, ItemKind, Membership, Project
    from crowdlab.projects.roles import make_requester
    from inference.synthetic import make_synthetic_crowd

    User = get_user_model()
    t0 = time.perf_counter()
    crowd = make_synthetic_crowd(
        n_items=args.items,
        n_test=10,
        n_annotators=args.annotators,
        n_classes=args.classes,
        n_features=args.features,
        labels_per_item=args.annotations / args.items,
        seed=0,
    )
    data = crowd.data
    classes = [{"name": f"class{c}", "key": None} for c in range(args.classes)]
    owner = User.objects.create_user("bench_owner", password="bench-pass-123")
    make_requester(owner)
    project = Project.objects.create(
        owner=owner,
        name="Live bench",
        classes=classes,
        k=int(np.ceil(args.annotations / args.items)) + 3,
        model=args.model,
        retrain_every_n=10**9,
        retrain_every_minutes=10**6,
    )
    counts = np.bincount(data.item_idx, minlength=data.n_items)
    rng = np.random.default_rng(1)
    gold = set(rng.choice(data.n_items, size=min(1000, data.n_items), replace=False).tolist())
    features = np.round(np.asarray(data.features, dtype=np.float64), 4)
    items = Item.objects.bulk_create(
        [
            Item(
                project=project,
                external_id=f"item{i:06d}",
                kind=ItemKind.JSON,
                data={"i": i},
                features=features[i].tolist(),
                n_annotations=int(counts[i]),
                gold_label=f"class{crowd.true_labels[i]}" if i in gold else None,
            )
            for i in range(data.n_items)
        ],
        batch_size=5000,
    )
    annotators = User.objects.bulk_create(
        [User(username=f"bench_ann{r:03d}", password="!") for r in range(data.n_annotators)], batch_size=1000
    )
    Membership.objects.bulk_create([Membership(project=project, user=u) for u in annotators], batch_size=1000)
    Annotation.objects.bulk_create(
        [
            Annotation(
                project=project,
                item_id=items[i].pk,
                annotator_id=annotators[r].pk,
                label=f"class{lab}",
                source=AnnotationSource.IMPORT,
            )
            for i, r, lab in zip(
                data.item_idx.tolist(), data.annotator_idx.tolist(), data.label_idx.tolist(), strict=True
            )
        ],
        batch_size=10_000,
    )
    live = User.objects.create_user("bench_live_annotator", password="bench-pass-123")
    Membership.objects.create(project=project, user=live)
    # A tiny project to load the worker's imports before the timed runs.
    tiny = Project.objects.create(owner=owner, name="Warm-up", classes=classes, model=args.model)
    tiny_items = Item.objects.bulk_create(
        [Item(project=tiny, external_id=f"t{i}", features=features[i].tolist()) for i in range(20)]
    )
    Annotation.objects.bulk_create(
        [
            Annotation(project=tiny, item=it, annotator=annotators[r], label=f"class{(i + r) % 2}")
            for i, it in enumerate(tiny_items)
            for r in range(3)
        ]
    )
    stored = Annotation.objects.filter(project=project).aggregate(n=Count("id"))["n"]
    return {
        "project": project.pk,
        "tiny": tiny.pk,
        "owner_token": Token.objects.create(user=owner).key,
        "annotator_token": Token.objects.create(user=live).key,
        "stored_annotations": stored,
        "n_items": data.n_items,
        "n_annotators": data.n_annotators,
        "truth": {f"item{i:06d}": f"class{c}" for i, c in enumerate(crowd.true_labels.tolist())},
        "load_seconds": round(time.perf_counter() - t0, 1),
    }


class Services:
    """gunicorn + one celery worker, with the bench database and queue."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: list[subprocess.Popen[bytes]] = []
        self.worker_name = f"bench_live_{os.getpid()}@localhost"
        self.log_dir = REPO / "bench" / "out"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        self.env.update(
            DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{args.db}",
            CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{args.redis_db}",
            CELERY_INFERENCE_QUEUE=f"bench_live_{os.getpid()}",
            INFERENCE_THREADS=str(args.threads),
            PYTHONPATH=os.pathsep.join([str(REPO / "platform"), str(REPO)]),
            LOG_LEVEL="WARNING",
        )

    def start(self) -> None:
        import socket

        # A gunicorn left over from an interrupted run would answer instead of ours,
        # with another database and queue: refuse to start rather than measure it.
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", self.args.port)) == 0:
                raise SystemExit(f"port {self.args.port} is already taken (a leftover gunicorn?); use --port")
        bin_dir = Path(sys.executable).parent
        for name, cmd in (
            (
                "gunicorn",
                [
                    str(bin_dir / "gunicorn"),
                    "crowdlab.wsgi",
                    "-b",
                    f"127.0.0.1:{self.args.port}",
                    "-w",
                    "2",
                    "--access-logfile",
                    "-",
                ],
            ),
            (
                "worker",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "crowdlab",
                    "worker",
                    "-Q",
                    self.env["CELERY_INFERENCE_QUEUE"],
                    "--concurrency",
                    "1",
                    "-P",
                    "prefork",
                    "-n",
                    self.worker_name,
                    "--loglevel",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                ],
            ),
        ):
            # The child keeps its own descriptor: ours closes at once.
            with open(self.log_dir / f"live-{name}.log", "wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        cmd,
                        cwd=REPO / "platform",
                        env=self.env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def wait_worker(self, timeout: float = 120) -> None:
        """Until the worker answers a ping: a task sent before it bound its queue is lost."""
        from crowdlab.celery import app

        deadline = time.monotonic() + timeout
        while not app.control.ping(destination=[self.worker_name], timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {self.worker_name} not ready after {timeout} s")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


class Api:
    def __init__(self, base: str, token: str) -> None:
        import requests

        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def get(self, path: str, **params: Any) -> Any:
        response = self.session.get(self.base + path, params=params, timeout=30)
        return response

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.session.post(self.base + path, json=body or {}, timeout=30)


def wait_published(api: Api, project: int, run_id: int, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/api/projects/{project}/runs/{run_id}/").json()
        if run["status"] in ("published", "failed", "discarded", "cancelled"):
            if run["status"] != "published":
                raise RuntimeError(f"run {run_id} ended {run['status']}: {run['error']}")
            return run
        time.sleep(0.05)
    raise TimeoutError(f"run {run_id} not published after {timeout} s")


def phases(run: dict[str, Any], t_request_wall: float, t_readable_wall: float) -> dict[str, float]:
    """Where the end-to-end time went, from the run row's timestamps (same clock)."""
    from datetime import datetime

    def ts(name: str) -> float:
        return datetime.fromisoformat(run[name].replace("Z", "+00:00")).timestamp()

    return {
        "request_to_run_created": round(ts("created_at") - t_request_wall, 3),
        "queued": round(ts("started_at") - ts("created_at"), 3),
        "running": round(ts("published_at") - ts("started_at"), 3),
        "published_to_readable": round(t_readable_wall - ts("published_at"), 3),
    }


def labels_run(api: Api, project: int) -> int | None:
    response = api.get(f"/api/projects/{project}/results/labels/", limit=1)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    results = response.json()["results"]
    return results[0]["run"] if results else None


def accuracy(api: Api, project: int, truth: dict[str, str]) -> float:
    rows = _all_label_rows(api, project)
    return sum(row["label"] == truth[row["item_external_id"]] for row in rows) / max(len(rows), 1)


#: The bench's ``INFERENCE_SETTLE_AFTER_S``: how long after a warm last run the settle
#: sweep may start the cold refit (production default: 60 s).
SETTLE_AFTER_S = 2


def _publishing_run(api: Api, project: int, after: int, timeout: float = 1800) -> dict[str, Any]:
    """The first run of ``project`` with an id above ``after``, once it has finished.

    A run still pending after a minute has its task sent again, as the beat sweep (not
    running here) would do; claims are conditional, so a duplicate is harmless."""
    from crowdlab.live.triggers import enqueue_run

    deadline = time.monotonic() + timeout
    resend_at = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = api.get(f"/api/projects/{project}/runs/", limit=5).json()["results"]
        newer = [r for r in runs if r["id"] > after]
        if newer:
            run = min(newer, key=lambda r: r["id"])
            if run["status"] in ("published", "failed", "discarded", "cancelled"):
                return run
            if run["status"] == "pending" and time.monotonic() > resend_at:
                print(f"run {run['id']} still pending after 60 s: task sent again", flush=True)
                enqueue_run(run["id"])
                resend_at = time.monotonic() + 60
        time.sleep(0.25)
    raise TimeoutError(f"project {project}: no run after {after} finished in {timeout} s")


def _published_predictions(api: Api, project: int, classes: list[str]) -> dict[str, tuple[int, float]]:
    """external id -> (class index, confidence) of every label row the API serves."""
    pred: dict[str, tuple[int, float]] = {}
    for row in _all_label_rows(api, project):
        pred[row["item_external_id"]] = (classes.index(row["label"]), float(row["confidence"]))
    return pred


def _all_label_rows(api: Api, project: int) -> list[dict[str, Any]]:
    """Every row of the latest labels, page by page (the API caps ``limit`` at 1,000, so
    the next offset is what the page really held)."""
    rows: list[dict[str, Any]] = []
    while True:
        page = api.get(f"/api/projects/{project}/results/labels/", limit=1000, offset=len(rows)).json()
        rows += page["results"]
        if not page["next"] or not page["results"]:
            return rows


def _score_rows(pred: dict[str, tuple[int, float]], gold: dict[str, int], rows: list[str]) -> tuple[float, float]:
    from inference.metrics import expected_calibration_error

    labels = np.array([pred[e][0] for e in rows])
    conf = np.array([pred[e][1] for e in rows])
    truth = np.array([gold[e] for e in rows])
    correct = labels == truth
    return float(correct.mean()), expected_calibration_error(conf, correct)


def chain_main(args: argparse.Namespace) -> None:
    """The live refit chain (see the module docstring)."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from bench.chain import arrival_order, batch_ends, load_chain_crowd, published
    from crowdlab.live import adapter
    from crowdlab.live.services import _model_params
    from crowdlab.live.triggers import sweep
    from crowdlab.projects.models import Item, ItemKind, Project
    from crowdlab.projects.roles import make_requester
    from inference import make_model

    call_command("migrate", verbosity=0)
    owner = get_user_model().objects.create_user("bench_owner", password="bench-pass-123")
    make_requester(owner)
    token = Token.objects.create(user=owner).key
    models = args.model or ["mv", "ds", "conal", "crowding"]
    out = Path(args.out).with_name("live_chain.json") if args.out.endswith("live.json") else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    services = Services(args)
    services.start()
    base = f"http://127.0.0.1:{args.port}"
    api = Api(base, token)
    report: list[dict[str, Any]] = []
    try:
        _wait_for_server(api)
        services.wait_worker()
        for spec in args.crowd or ["synthetic"]:
            crowd = load_chain_crowd(spec, seed=args.seed)
            data = crowd.data
            classes = list(data.classes)
            arrival = arrival_order(data, "items", args.seed)
            ends = batch_ends(data.n_annotations, args.batches)
            gold = {data.items[i]: int(g) for i, g in enumerate(crowd.gold) if g >= 0}
            per_item = np.bincount(data.item_idx, minlength=data.n_items)
            features = None if data.features is None else np.round(np.asarray(data.features, np.float64), 6)
            for name in models:
                project = Project.objects.create(
                    owner=owner,
                    name=f"chain {crowd.name} {name}",
                    classes=[{"name": c, "key": None} for c in classes],
                    # The smallest batch: rounding makes batches differ by one label, and a
                    # batch one short of the threshold would start no run.
                    k=int(per_item.max()),
                    model=name,
                    retrain_every_n=int(np.diff([0, *ends]).min()),
                    retrain_every_minutes=10**6,
                )
                Item.objects.bulk_create(
                    [
                        Item(
                            project=project,
                            external_id=item,
                            kind=ItemKind.JSON,
                            data={"i": i},
                            features=None if features is None else features[i].tolist(),
                        )
                        for i, item in enumerate(data.items)
                    ],
                    batch_size=2000,
                )
                params = {**_model_params(name, {}, project_k=project.k)}
                if "num_threads" in params:
                    params["num_threads"] = args.threads

                def score_run(run: dict[str, Any], *, batch: int | str, n_annotations: int, seconds: float) -> None:
                    """Score what the API serves after ``run`` against a cold fit on the labels it read."""
                    record: dict[str, Any] = {
                        "crowd": crowd.name,
                        "model": name,
                        "batch": batch,
                        "n_annotations": n_annotations,
                        "run": run["id"],
                        "status": run["status"],
                        "trigger": run["trigger"],
                        "fit_mode": run.get("fit_mode"),
                        "fit_reason": run.get("fit_reason"),
                        "warm_start_from": run.get("warm_start_from"),
                        "end_to_end_s": round(seconds, 3),
                        "run_fit_s": run["timings"].get("fit"),
                    }
                    report.append(record)
                    if run["status"] != "published":
                        record["error"] = run["error"]
                        out.write_text(json.dumps(report, indent=1))
                        print(
                            f"{crowd.name} {name} batch {batch}: run {run['id']} {run['status']}: {run['error'][:120]}",
                            flush=True,
                        )
                        return
                    snapshot = adapter.read_snapshot(project_id=project.pk, with_features=name not in ("mv", "ds"))
                    if snapshot.snapshot_annotation_id != run["snapshot_annotation_id"]:
                        raise RuntimeError("the run and the reference read different labels")
                    t1 = time.process_time()
                    cold = make_model(name, **params).fit(snapshot.data)
                    record["cold_fit_cpu_s"] = round(time.process_time() - t1, 3)
                    ext = {
                        str(pk): e for pk, e in Item.objects.filter(project=project).values_list("pk", "external_id")
                    }
                    keep, cold_labels, cold_conf = published(cold, snapshot.data)
                    cold_pred = {
                        ext[snapshot.data.items[i]]: (int(cold_labels[i]), float(cold_conf[i]))
                        for i in np.flatnonzero(keep)
                    }
                    served = _published_predictions(api, project.pk, classes)
                    scored = sorted(e for e in cold_pred if e in gold)
                    if set(served) != set(cold_pred):
                        raise RuntimeError("the run and the reference label different item sets")
                    record["accuracy"], record["ece"] = _score_rows(served, gold, scored)
                    record["cold_accuracy"], record["cold_ece"] = _score_rows(cold_pred, gold, scored)
                    record["n_scored"] = len(scored)
                    out.write_text(json.dumps(report, indent=1))  # as it goes: a long run may be stopped
                    print(
                        f"{crowd.name} {name} batch {batch}/{len(ends)}: run {run['id']} {run['fit_mode']} "
                        f"acc {100 * record['accuracy']:.2f} (cold {100 * record['cold_accuracy']:.2f}) "
                        f"ECE {record['ece']:.4f} (cold {record['cold_ece']:.4f}) fit {record['run_fit_s']} s",
                        flush=True,
                    )

                last_run = 0
                start = 0
                for b, end in enumerate(ends):
                    rows = arrival[start:end]
                    start = end
                    body = "item,annotator,label\n" + "".join(
                        f"{data.items[data.item_idx[a]]},{data.annotators[data.annotator_idx[a]]},{classes[data.label_idx[a]]}\n"
                        for a in rows
                    )
                    t0 = time.perf_counter()
                    response = api.session.post(
                        f"{base}/api/projects/{project.pk}/crowd/import/",
                        data=body.encode(),
                        headers={"Content-Type": "text/csv"},
                        timeout=120,
                    )
                    if response.status_code != 201:
                        raise RuntimeError(f"crowd import: {response.status_code} {response.text[:300]}")
                    run = _publishing_run(api, project.pk, last_run)
                    last_run = run["id"]
                    score_run(run, batch=b + 1, n_annotations=end, seconds=time.perf_counter() - t0)
                # Labels have stopped: after a warm last run the beat sweep starts a cold
                # refit (live.triggers, "Settling"). No beat runs here: call its sweep.
                if report[-1]["status"] == "published" and report[-1]["fit_mode"] == "warm":
                    time.sleep(SETTLE_AFTER_S + 1)
                    started = sweep()["started"]
                    if not started:
                        raise RuntimeError("the sweep started no settle run after a warm last run")
                    t0 = time.perf_counter()
                    run = _publishing_run(api, project.pk, last_run)
                    score_run(run, batch="settled", n_annotations=ends[-1], seconds=time.perf_counter() - t0)
    finally:
        services.stop()
        from django.db import connections

        connections.close_all()
        if not args.keep_db:
            drop_database(args.db)
    print()
    print(chain_table(report))
    print(f"report: {out}")


def chain_table(report: list[dict[str, Any]]) -> str:
    """Per crowd and model: the last batch's run and the final published result (after
    the settle run where the last run was warm) against the cold fit, and the worst run."""
    lines = [
        "| crowd | model | runs (cold / warm) | last batch's run: mode, Δ acc, Δ ECE | final published acc | cold acc "
        "| Δ acc (pts) | published ECE | cold ECE | Δ ECE | worst run Δ acc | worst run Δ ECE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in dict.fromkeys((r["crowd"], r["model"]) for r in report):
        recs = [r for r in report if (r["crowd"], r["model"]) == key and r["status"] == "published"]
        if not recs:
            lines.append(f"| {key[0]} | {key[1]} | no published run |||||||||||")
            continue
        final = recs[-1]
        batches = [r for r in recs if r["batch"] != "settled"]
        last = batches[-1]
        d_acc = [100 * (r["accuracy"] - r["cold_accuracy"]) for r in recs]
        d_ece = [r["ece"] - r["cold_ece"] for r in recs]
        n_cold = sum(r["fit_mode"] == "cold" for r in recs)
        settled = " (settled)" if final["batch"] == "settled" else ""
        lines.append(
            f"| {key[0]} | {key[1]} | {len(recs)} ({n_cold} / {len(recs) - n_cold}) | {last['fit_mode']}, "
            f"{100 * (last['accuracy'] - last['cold_accuracy']):+.2f}, {last['ece'] - last['cold_ece']:+.4f} | "
            f"{100 * final['accuracy']:.2f}{settled} | {100 * final['cold_accuracy']:.2f} | {d_acc[-1]:+.2f} | "
            f"{final['ece']:.4f} | {final['cold_ece']:.4f} | {d_ece[-1]:+.4f} | {max(d_acc, key=abs):+.2f} | "
            f"{max(d_ece, key=abs):+.4f} |"
        )
    return "\n".join(lines)


def _wait_for_server(api: Api, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        # Connection refused (an OSError under requests') until gunicorn listens.
        with contextlib.suppress(OSError):
            if api.get("/api/projects/").status_code == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError("gunicorn did not start")
        time.sleep(0.3)


def main() -> None:
    args = parse_args()
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{args.db}"
    os.environ["CELERY_BROKER_URL"] = f"redis://127.0.0.1:6379/{args.redis_db}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crowdlab.settings")
    os.environ["LOG_LEVEL"] = "WARNING"
    # DEBUG stays off as in production, which needs a key: a throwaway one per run.
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ["CELERY_INFERENCE_QUEUE"] = f"bench_live_{os.getpid()}"  # the worker's queue (Services)
    os.environ["INFERENCE_SETTLE_AFTER_S"] = str(SETTLE_AFTER_S)
    recreate_database(args.db)
    if args.chain:
        chain_main(args)
        return
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    info = load_crowd(args)
    print(
        f"stored {info['stored_annotations']} annotations on {info['n_items']} items "
        f"from {info['n_annotators']} annotators in {info['load_seconds']} s",
        flush=True,
    )

    services = Services(args)
    services.start()
    base = f"http://127.0.0.1:{args.port}"
    owner = Api(base, info["owner_token"])
    annotator = Api(base, info["annotator_token"])
    report: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "stored_annotations": info["stored_annotations"],
    }
    try:
        _wait_for_server(owner)
        project = info["project"]
        from inference.models import MODELS

        # The warm-up only loads the worker's imports: keep its training short.
        epochs_param = MODELS[args.model].epochs_param
        warmup = owner.post(
            f"/api/projects/{info['tiny']}/runs/", {"params": {epochs_param: 2} if epochs_param else {}}
        ).json()
        wait_published(owner, info["tiny"], warmup["id"], timeout=180)

        # (a) cold run
        t0 = time.perf_counter()
        wall0 = time.time()
        created = owner.post(f"/api/projects/{project}/runs/")
        created.raise_for_status()
        run_id = created.json()["id"]
        cold_run = wait_published(owner, project, run_id)
        while labels_run(owner, project) != run_id:
            time.sleep(0.02)
        cold_s = time.perf_counter() - t0
        report["cold"] = {
            "end_to_end_s": round(cold_s, 3),
            "run": run_id,
            "timings": cold_run["timings"],
            "phases": phases(cold_run, wall0, time.time()),
            "metrics": cold_run["metrics"],
            "accuracy_vs_truth": round(accuracy(owner, project, info["truth"]), 4),
        }
        print(
            f"(a) cold: {cold_s:.2f} s end to end; phases {report['cold']['phases']}; "
            f"run timings {cold_run['timings']}",
            flush=True,
        )

        # (b) warm end-to-end from the threshold-crossing annotation
        import django.db

        from crowdlab.projects.models import Project

        Project.objects.filter(pk=project).update(retrain_every_n=args.retrain_every)
        django.db.connections.close_all()
        warm: list[dict[str, Any]] = []
        previous = run_id
        for repeat in range(args.warm_repeats):
            for index in range(args.retrain_every):
                task = annotator.post(f"/api/projects/{project}/next-task/")
                if task.status_code != 200:
                    raise RuntimeError(f"next-task: {task.status_code} {task.text[:200]}")
                external_id = task.json()["item"]["external_id"]
                body = {"item": external_id, "label": info["truth"][external_id]}
                last = index == args.retrain_every - 1
                if last:
                    t0 = time.perf_counter()
                    wall0 = time.time()
                response = annotator.post(f"/api/projects/{project}/annotations/", body)
                if response.status_code != 201:
                    raise RuntimeError(f"submit: {response.status_code} {response.text[:200]}")
            while True:
                current = labels_run(owner, project)
                if current is not None and current > previous:
                    break
                if time.perf_counter() - t0 > 600:
                    raise TimeoutError("no new labels after 600 s")
                time.sleep(0.02)
            warm_s = time.perf_counter() - t0
            wall1 = time.time()
            run = owner.get(f"/api/projects/{project}/runs/{current}/").json()
            warm.append(
                {
                    "end_to_end_s": round(warm_s, 3),
                    "run": current,
                    "timings": run["timings"],
                    "phases": phases(run, wall0, wall1),
                    "warm_start_from": run["warm_start_from"],
                    "trigger": run["trigger"],
                }
            )
            print(
                f"(b) warm #{repeat + 1}: {warm_s:.2f} s end to end (run {current}, trigger {run['trigger']}, "
                f"warm start from {run['warm_start_from']}); phases {warm[-1]['phases']}; run timings {run['timings']}",
                flush=True,
            )
            previous = current
        report["warm"] = warm
        report["warm_accuracy_vs_truth"] = round(accuracy(owner, project, info["truth"]), 4)
        median_warm = float(np.median([w["end_to_end_s"] for w in warm]))
        report["warm_median_s"] = round(median_warm, 3)
        report["warm_over_cold"] = round(median_warm / cold_s, 3)
        print(f"warm median {median_warm:.2f} s, cold {cold_s:.2f} s, warm/cold = {median_warm / cold_s:.2f}")
    finally:
        services.stop()
        from django.db import connections

        connections.close_all()
        if not args.keep_db:
            drop_database(args.db)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
