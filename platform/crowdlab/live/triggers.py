"""When to start an inference run.

* ``notify_new_annotations(project_id)`` runs after annotation commits and
  starts a run when N new annotations arrived since the last published run's
  snapshot and no run is active. ``labelling`` does not import this module:
  it tells its registered listener (``labelling.hooks``, ``ThresholdListener``
  here, registered by ``LiveConfig.ready``). Crowd imports and the general
  submit path call it after every commit (``notify_on_commit``); the
  one-statement submits compute the threshold in the same statement
  (``threshold_due_sql``) and call it only when it is due.
* ``sweep()`` (Celery beat, every minute) starts a run after T minutes with any
  new annotation or when N were reached without one starting (concurrent last
  submits), fails runs whose heartbeat stopped and re-sends pending runs whose
  message was lost.
* ``request_run`` is "run now" (API, admin).
* **Settling.** A warm refit is as good as the cold fit it descends from, and no
  better: on a crowd whose cold fits themselves differ by points from one label
  batch to the next, the warm runs inherit their ancestor's result. So once the
  labels stop changing, the sweep replaces a warm result by a cold one: when the
  project's newest run is a published warm run, no annotation arrived after its
  snapshot and it is ``INFERENCE_SETTLE_AFTER_S`` old, the sweep starts a full
  cold refit (trigger ``settle``). Warm runs give fast feedback while labels
  flow; what a requester downloads after the work stops is a cold fit. A failed
  or cancelled settle run is not retried (it is then the newest run).

At most one active run per project is enforced by the database (partial
unique index), so two triggers at the same moment create one run. A running
run whose heartbeat is stale (its worker was killed) does not count as active
here: the trigger fails it and starts a fresh one.

**Back-off.** A run that failed on its data with the project's own settings
(e.g. every label is one class), or that was cancelled, sets
``retry_after_annotation_id``; the threshold and the timer then count only
annotations newer than that (as they count those newer than the last published
run's snapshot), so the next automatic run waits for new annotations instead of
failing again every few minutes. "Run now" is never held back.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from crowdlab.labelling.models import Annotation
from crowdlab.projects.models import Project
from crowdlab.results.models import InferenceRun, RunStatus, RunTrigger
from crowdlab.results.services import run_create, runs_fail_stale
from inference.embeddings import TFIDF

logger = logging.getLogger(__name__)

# Pending runs older than this get their task sent again (the first message may
# have been lost, e.g. the broker was down at commit time). Claims are
# conditional, so a duplicate message is harmless.
RESEND_PENDING_AFTER_S = 60

# SQL fragments over a project row ``p``, shared by the check below and by the
# one-statement submit (``threshold_due_sql``). A running run whose heartbeat is
# stale is not active: the trigger then fails it and starts a fresh run
# (``request_run``). The timeout is a literal: it is fixed per process.
_RUN_ACTIVE_SQL = f"""EXISTS (SELECT 1 FROM results_inferencerun r
               WHERE r.project_id = p.id AND (r.status = 'pending' OR (r.status = 'running'
                 AND r.heartbeat_at >= now() - interval '{int(settings.INFERENCE_HEARTBEAT_TIMEOUT_S)} seconds')))"""

# The annotation id automatic runs count from: the last published run's
# snapshot, or a later back-off mark (a failed-on-its-data or cancelled run's
# ``retry_after_annotation_id``), whichever is newer. Two index lookups on
# run_project_status_idx.
_BASELINE_SQL = """GREATEST(
              COALESCE((SELECT r.snapshot_annotation_id FROM results_inferencerun r
                        WHERE r.project_id = p.id AND r.status = 'published'
                        ORDER BY r.id DESC LIMIT 1), 0),
              COALESCE((SELECT r.retry_after_annotation_id FROM results_inferencerun r
                        WHERE r.project_id = p.id AND r.status IN ('failed', 'cancelled')
                          AND r.retry_after_annotation_id IS NOT NULL
                        ORDER BY r.id DESC LIMIT 1), 0))"""


def _new_annotations_sql(limit: str) -> str:
    """Annotations newer than the automatic baseline (``_BASELINE_SQL``), counted up to ``limit`` (SQL)."""
    return f"""(SELECT count(*) FROM (
            SELECT 1 FROM labelling_annotation a
            WHERE a.project_id = p.id
              AND a.id > {_BASELINE_SQL}
            LIMIT {limit}) AS bounded)"""


_BASELINE_QUERY = f"SELECT {_BASELINE_SQL} FROM projects_project p WHERE p.id = %s"


_CHECK_SQL = f"""
SELECT p.retrain_every_n,
       p.is_active,
       {_RUN_ACTIVE_SQL} AS active,
       {_new_annotations_sql("GREATEST(p.retrain_every_n, 1)")} AS n_new
FROM projects_project p WHERE p.id = %s
"""


# The task ``live.tasks`` registers under this name. Sent by name: the tasks
# module sits above this one (it calls the triggers and the services), and a
# web process that only sends runs never needs to import it (nor, through the
# services, ``inference``).
EXECUTE_RUN_TASK = "live.tasks.execute_run"
EMBED_ITEMS_TASK = "live.tasks.embed_items"


def enqueue_run(run_id: int) -> bool:
    """Send the Celery task; False (logged) when the broker is unreachable.

    The pending run stays in the database either way and the sweep re-sends it.
    """
    try:
        # By name: the web process never imports the tasks (nor, through them, torch).
        current_app.send_task(EXECUTE_RUN_TASK, args=[run_id])
    except Exception as exc:  # noqa: BLE001 - kombu/redis raise many connection error types
        logger.warning("run %s: could not send the task (%s); the sweep will retry", run_id, exc)
        return False
    return True


def request_run(
    *,
    project: Project,
    trigger: str = RunTrigger.MANUAL,
    requested_by: Any | None = None,
    params: dict[str, Any] | None = None,
    cold: bool = False,
) -> InferenceRun | None:
    """Create a pending run and send it after commit; None if one is already active.
    ``cold``: a full cold refit (no warm start from any earlier run)."""
    run = run_create(project=project, trigger=trigger, requested_by=requested_by, params=params, cold=cold)
    if run is None and runs_fail_stale(project_id=project.pk):
        # The active run's worker was killed (stale heartbeat): fail it now rather
        # than refuse this trigger until a periodic check gets to it.
        logger.warning("project %s: failed a run whose worker stopped beating; starting a fresh one", project.pk)
        run = run_create(project=project, trigger=trigger, requested_by=requested_by, params=params, cold=cold)
    if run is not None:
        transaction.on_commit(partial(enqueue_run, run.pk), robust=True)
    return run


def new_annotations_count(project_id: int) -> tuple[int, bool, int, bool]:
    """(n_new bounded by N, run active?, N, project active?) in one statement."""
    with connection.cursor() as cursor:
        cursor.execute(_CHECK_SQL, [project_id])
        row = cursor.fetchone()
    if row is None:
        return 0, False, 0, False
    retrain_n, is_active, active, n_new = row
    return int(n_new), bool(active), int(retrain_n), bool(is_active)


def notify_new_annotations(project_id: int) -> InferenceRun | None:
    """Start a threshold run if N new annotations arrived and none is active."""
    n_new, active, retrain_n, is_active = new_annotations_count(project_id)
    if active or not is_active or n_new < max(retrain_n, 1):
        return None
    project = Project.objects.get(pk=project_id)
    run = request_run(project=project, trigger=RunTrigger.THRESHOLD)
    if run is not None:
        logger.info("project %s: %d new annotations, run %s requested", project_id, n_new, run.pk)
    return run


def notify_on_commit(project_id: int) -> None:
    """Register ``notify_new_annotations`` to run after the current transaction commits.

    Every commit checks (one bounded SQL statement). A per-process debounce was
    tried for throughput and removed: each web process counted only its own
    submits, so with several gunicorn workers the threshold run started late or
    not at all until the sweep's timer — the trigger policy must hold across
    processes.
    ``robust=True``: a failing check never turns a saved annotation into an error.
    """
    transaction.on_commit(partial(notify_new_annotations, project_id), robust=True)


class ThresholdListener:
    """live's ``labelling.hooks.AnnotationListener`` (registered by
    ``LiveConfig.ready``): a submit's statement carries ``threshold_due_sql``,
    and stored annotations register ``notify_new_annotations`` for after commit."""

    def due_sql(self, *, inserted_id: str) -> str:
        return threshold_due_sql(inserted_id=inserted_id)

    def annotations_stored(self, *, project_id: int) -> None:
        notify_on_commit(project_id)


LISTENER = ThresholdListener()


def threshold_due_sql(*, inserted_id: str) -> str:
    """A result column for a one-statement submit: TRUE when, counting the
    annotation it inserts (``inserted_id``, SQL, NULL when nothing was
    inserted), the project has N new annotations since the last snapshot and
    no run is active; the caller then runs ``notify_new_annotations`` after
    commit, which re-checks authoritatively and starts the run.

    Why in the statement: a separate check cost a round trip plus ~0.7 ms of
    PostgreSQL planning on every submit, the platform's hottest request, and
    per-process debouncing let multi-worker deployments miss the threshold.
    Here the check rides on the submit. Its snapshot does not see the row being
    inserted (hence ``>= N - 1``) nor submits committing at the same instant:
    when the last few labels of a threshold arrive concurrently each may count
    one short; the next submit or the sweep (every minute) then starts the run.
    For large N the count (bounded by N) is only evaluated on 1 in N/50
    annotation ids (a database sequence shared by every process), so a submit
    reads at most ~50 index entries on average; a run then starts within N/50
    annotations of the threshold. ``CASE`` guarantees the order of evaluation.
    """
    return f"""
(SELECT CASE WHEN {inserted_id} IS NULL OR NOT p.is_active THEN FALSE
             WHEN {inserted_id} %% GREATEST(p.retrain_every_n / 50, 1) <> 0 THEN FALSE
             WHEN {_RUN_ACTIVE_SQL} THEN FALSE
             ELSE {_new_annotations_sql("GREATEST(p.retrain_every_n - 1, 1)")} >= p.retrain_every_n - 1
        END
 FROM projects_project p WHERE p.id = %(project)s)"""


def automatic_baseline(project_id: int) -> int:
    """The annotation id the threshold and the timer count from (see ``_BASELINE_SQL``)."""
    with connection.cursor() as cursor:
        cursor.execute(_BASELINE_QUERY, [project_id])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def _timer_due(project: Project, now: Any) -> bool:
    """Any annotation newer than the automatic baseline that has waited T minutes?"""
    first_new = (
        Annotation.objects.filter(project=project, id__gt=automatic_baseline(project.pk))
        .order_by("id")
        .values_list("created_at", flat=True)
        .first()
    )
    return first_new is not None and first_new <= now - timedelta(minutes=project.retrain_every_minutes)


def _settle_due(project: Project, now: Any) -> bool:
    """Is the project's newest run a published WARM run at least
    ``INFERENCE_SETTLE_AFTER_S`` old? (The caller checked that no annotation is newer
    than its snapshot.)"""
    newest = (
        InferenceRun.objects.filter(project=project)
        .order_by("-id")
        .values("status", "fit_mode", "published_at")
        .first()
    )
    return (
        newest is not None
        and newest["status"] == RunStatus.PUBLISHED
        and newest["fit_mode"] == "warm"
        and newest["published_at"] is not None
        and newest["published_at"] <= now - timedelta(seconds=settings.INFERENCE_SETTLE_AFTER_S)
    )


def sweep() -> dict[str, list[int]]:
    """The periodic housekeeping task body (see module docstring)."""
    now = timezone.now()
    failed = runs_fail_stale()
    resent: list[int] = []
    for run_id in InferenceRun.objects.filter(
        status=RunStatus.PENDING, created_at__lt=now - timedelta(seconds=RESEND_PENDING_AFTER_S)
    ).values_list("id", flat=True):
        if enqueue_run(run_id):
            resent.append(run_id)
    started: list[int] = []
    busy = set(
        InferenceRun.objects.filter(status__in=(RunStatus.PENDING, RunStatus.RUNNING)).values_list(
            "project_id", flat=True
        )
    )
    for project in Project.objects.filter(is_active=True).exclude(id__in=busy):
        # The threshold too: a submit's in-statement check can count one short
        # when the threshold's last labels commit at the same instant.
        n_new, _active, retrain_n, _is_active = new_annotations_count(project.pk)
        cold = False
        if n_new > 0 and n_new >= max(retrain_n, 1):
            trigger = RunTrigger.THRESHOLD
        elif project.retrain_every_minutes > 0 and _timer_due(project, now):
            trigger = RunTrigger.TIMER
        elif n_new == 0 and _settle_due(project, now):
            trigger, cold = RunTrigger.SETTLE, True
        else:
            continue
        run = request_run(project=project, trigger=trigger, cold=cold)
        if run is not None:
            started.append(run.pk)
    if failed or resent or started:
        logger.info("sweep: failed stale %s, resent %s, started runs %s", failed, resent, started)
    return {"failed": failed, "resent": resent, "started": started}


def embed_items_on_commit(project_id: int) -> None:
    """After an item import commits, send the task that embeds the new text items.

    The import stays fast (embedding 5,000 texts takes minutes on two cores); a
    lost message costs nothing but time, since the next run embeds what is missing.
    No task without sentence embeddings (TF-IDF is computed by each run).
    """
    if settings.TEXT_EMBEDDING_MODEL == TFIDF:
        return
    transaction.on_commit(partial(_send_embed_items, project_id), robust=True)


def _send_embed_items(project_id: int) -> None:
    try:
        # By name, like the runs: the web never imports the tasks (nor torch).
        current_app.send_task(EMBED_ITEMS_TASK, args=[project_id])
    except Exception as exc:  # noqa: BLE001 - kombu/redis raise many connection error types
        logger.warning("project %s: could not send the embedding task (%s); the next run embeds", project_id, exc)
