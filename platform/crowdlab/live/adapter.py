"""The ONE place that turns database rows into ``inference.CrowdData`` and a
fitted model back into rows to publish.

Efficiency at 100k annotations matters (the warm end-to-end target is 10 s):
rows are read with raw cursors into numpy arrays, never as ORM objects, and
ids are mapped to indices with ``np.searchsorted`` instead of Python dicts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import connection, transaction

from crowdlab.results.models import LabelSource
from crowdlab.results.services import ConfusionRow, GeneratedRow, LabelRow, RunResults
from inference import CrowdData
from inference.embeddings import TFIDF, describe_text_model

from .embedding import embedding_model_name

logger = logging.getLogger(__name__)

# Text features (TF-IDF + SVD) cost seconds at 30k items and only change when the
# item set does, so they are cached per (project, item set) in the worker process;
# numeric features are cached per (project, md5 of the vectors). Callers get
# copies, so a model transforming its input cannot corrupt the cache.
TEXT_FEATURE_DIM = 64
_FEATURE_CACHE: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
_FEATURE_CACHE_SIZE = 4


@dataclass
class Snapshot:
    """A consistent read of a project's crowd, aligned with ``data``."""

    project_id: int
    data: CrowdData
    item_pks: np.ndarray  # (N,) int64 Item.pk of data.items[i]
    annotator_pks: np.ndarray  # (R,) int64 User.pk of data.annotators[r]
    gold_idx: np.ndarray  # (N,) int64 class index of the gold label, -1 where none
    snapshot_annotation_id: int
    feature_kind: str  # "numeric", "text" or "none"
    featurizer: str = ""  # text only: the embedding model's name, or "tfidf-svd"


class SnapshotDataError(ValueError):
    """Annotations the models cannot use, found after the snapshot's max id was
    read: ``snapshot_annotation_id`` tells which annotations were judged (the
    trigger's back-off waits for newer ones)."""

    def __init__(self, message: str, *, snapshot_annotation_id: int) -> None:
        super().__init__(message)
        self.snapshot_annotation_id = snapshot_annotation_id


def _parse_ints(text: str, count: int) -> np.ndarray:
    values = np.array(text.split(","), dtype=np.int64) if count else np.empty(0, dtype=np.int64)
    if values.size != count:
        raise ValueError(f"snapshot read {values.size} values where {count} were expected")
    return values


def _decode_json(value: Any) -> Any:
    # Django registers a text loader for jsonb (it decodes JSON itself), so raw
    # cursors hand back strings.
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _class_names(classes: Any) -> list[str]:
    return [entry["name"] if isinstance(entry, dict) else str(entry) for entry in classes]


def read_snapshot(*, project_id: int, with_features: bool = True) -> Snapshot:
    """Read annotations (id <= max id at start), all items and their features.

    Runs in one REPEATABLE READ transaction when called outside a transaction,
    so items, annotations and the max id all come from the same instant.
    Raises ValueError with a readable reason for data the models cannot use.
    """
    with transaction.atomic():
        if not _in_outer_transaction():
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return _read_snapshot(project_id, with_features)


def _in_outer_transaction() -> bool:
    # atomic() above opened one block; more means a caller (e.g. a test) already
    # runs inside a transaction, where the isolation level can no longer be set.
    return bool(connection.savepoint_ids)


def _read_snapshot(project_id: int, with_features: bool) -> Snapshot:
    with connection.cursor() as cursor:
        cursor.execute("SELECT classes FROM projects_project WHERE id = %s", [project_id])
        row = cursor.fetchone()
        if row is None:
            raise ValueError(f"project {project_id} does not exist")
        classes = _class_names(_decode_json(row[0]))
        if len(classes) < 2:
            raise ValueError(f"the project has {len(classes)} class(es) ({classes}); inference needs at least 2")

        cursor.execute("SELECT COALESCE(MAX(id), 0) FROM labelling_annotation WHERE project_id = %s", [project_id])
        snapshot_id = int(cursor.fetchone()[0])
        if snapshot_id == 0:
            raise ValueError("the project has no annotations yet; nothing to infer")

        # One row back: three comma-joined columns that numpy parses in C. The
        # label is mapped to its class position in SQL (0 = not a class).
        cursor.execute(
            "SELECT count(*), "
            "string_agg(item_id::text, ',' ORDER BY id), "
            "string_agg(annotator_id::text, ',' ORDER BY id), "
            "string_agg(COALESCE(array_position(%s::text[], label::text), 0)::text, ',' ORDER BY id) "
            "FROM labelling_annotation WHERE project_id = %s AND id <= %s",
            [classes, project_id, snapshot_id],
        )
        n_ann, item_text, user_text, label_text = cursor.fetchone()
        if not n_ann:
            raise ValueError("the project has no annotations yet; nothing to infer")
        ann_item = _parse_ints(item_text, n_ann)
        ann_user = _parse_ints(user_text, n_ann)
        label_pos = _parse_ints(label_text, n_ann)
        if (label_pos == 0).any():
            cursor.execute(
                "SELECT DISTINCT label FROM labelling_annotation "
                "WHERE project_id = %s AND id <= %s AND NOT (label = ANY(%s::text[])) LIMIT 5",
                [project_id, snapshot_id, classes],
            )
            unknown = [r[0] for r in cursor.fetchall()]
            raise SnapshotDataError(
                f"annotations use label(s) {unknown} that are not classes of the project; allowed: {classes}",
                snapshot_annotation_id=snapshot_id,
            )
        label_idx = label_pos - 1

        cursor.execute(
            "SELECT id, gold_label, features IS NOT NULL FROM projects_item WHERE project_id = %s ORDER BY id",
            [project_id],
        )
        item_rows = cursor.fetchall()
        item_pks = np.fromiter((r[0] for r in item_rows), dtype=np.int64, count=len(item_rows))
        item_idx = np.searchsorted(item_pks, ann_item)  # item_pks is sorted (ORDER BY id)
        annotator_pks, annotator_idx = np.unique(ann_user, return_inverse=True)
        class_pos = {name: i for i, name in enumerate(classes)}

        gold_idx = np.asarray([class_pos.get(r[1], -1) if r[1] else -1 for r in item_rows], dtype=np.int64)
        has_numeric = np.fromiter((bool(r[2]) for r in item_rows), dtype=bool, count=len(item_rows))
        if with_features:
            features, kind, featurizer = _features(cursor, project_id, item_pks, has_numeric)
        else:
            features, kind, featurizer = None, "none", ""

    n_labelled = int((np.bincount(item_idx, minlength=len(item_pks)) > 0).sum())
    n_classes_used = len(np.unique(label_idx))
    if n_classes_used < 2 and n_labelled > 0 and len(label_idx) >= 1:
        # A crowd that only ever used one class cannot identify confusions; say so
        # instead of publishing a degenerate model.
        raise SnapshotDataError(
            f"all {len(label_idx)} annotations use the single class {classes[int(label_idx[0])]!r}; "
            "inference needs labels from at least 2 classes",
            snapshot_annotation_id=snapshot_id,
        )
    data = CrowdData(
        items=tuple(str(pk) for pk in item_pks.tolist()),
        annotators=tuple(str(pk) for pk in annotator_pks.tolist()),
        classes=tuple(classes),
        item_idx=item_idx.astype(np.int64),
        annotator_idx=annotator_idx.reshape(-1).astype(np.int64),
        label_idx=label_idx,
        features=features,
    )
    return Snapshot(
        project_id=project_id,
        data=data,
        item_pks=item_pks,
        annotator_pks=annotator_pks.astype(np.int64),
        gold_idx=gold_idx,
        snapshot_annotation_id=snapshot_id,
        feature_kind=kind,
        featurizer=featurizer,
    )


def _features(
    cursor: Any, project_id: int, item_pks: np.ndarray, has_numeric: np.ndarray
) -> tuple[np.ndarray | None, str, str]:
    """(matrix, kind, featurizer): numeric vectors when every item has one; else text features; else none.

    Text features are the stored sentence embeddings (``live.embedding``; never
    computed here) or, with ``TEXT_EMBEDDING_MODEL=tfidf``, TF-IDF + SVD.
    """
    if len(item_pks) and has_numeric.all():
        # Flat text of all vectors ("1.0, 2.5, ...") split and parsed by numpy:
        # JSON decoding 30k lists in Python costs seconds on a busy machine.
        # Its md5 (computed in SQL) keys a per-process cache, so a warm run
        # over unchanged features skips the transfer and the parse.
        flat_sql = (
            "string_agg(CASE WHEN jsonb_typeof(features) = 'array' THEN btrim(features::text, '[]') END, ',' "
            "ORDER BY id)"
        )
        cursor.execute(
            "SELECT min(CASE WHEN jsonb_typeof(features) = 'array' THEN jsonb_array_length(features) ELSE -1 END), "
            "max(CASE WHEN jsonb_typeof(features) = 'array' THEN jsonb_array_length(features) ELSE -1 END), "
            f"md5({flat_sql}) FROM projects_item WHERE project_id = %s",
            [project_id],
        )
        min_len, max_len, digest = cursor.fetchone()
        numeric_key = (project_id, f"numeric:{digest}:{hashlib.sha1(item_pks.tobytes()).hexdigest()}")
        cached = _FEATURE_CACHE.get(numeric_key)
        if cached is not None:
            _FEATURE_CACHE.move_to_end(numeric_key)
            return cached.copy(), "numeric", ""  # a copy: a model may transform it in place
        flat = ""
        if min_len is not None and min_len == max_len and min_len > 0:
            cursor.execute(f"SELECT {flat_sql} FROM projects_item WHERE project_id = %s", [project_id])
            flat = cursor.fetchone()[0]
        if min_len is not None and min_len == max_len and min_len > 0:
            dim = int(min_len)
            try:
                values = np.array(flat.split(","), dtype=np.float64)
            except ValueError as exc:
                raise ValueError(f"item features must be lists of numbers: {exc}") from exc
            if values.size != len(item_pks) * dim:
                raise ValueError("item features must be flat lists of numbers (no nesting)")
            matrix = values.reshape(len(item_pks), dim)
            if not np.isfinite(matrix).all():
                raise ValueError("item features contain NaN or infinite values")
            # Imported here, not at the top: it loads scikit-learn (about a
            # second), which runs on projects without features never need.
            from inference.features import standardise_numeric

            standardised, _scaler = standardise_numeric(matrix)
            result = np.asarray(standardised, dtype=np.float32)
            _remember(numeric_key, result.copy())
            return result, "numeric", ""
        lengths = sorted({min_len, max_len})
        logger.warning(
            "project %s: item feature vectors have different lengths %s; ignoring them", project_id, sorted(lengths)
        )

    name = embedding_model_name()
    if name is not None:
        stored = _stored_embeddings(cursor, project_id, name, len(item_pks))
        return (stored, "text", name) if stored is not None else (None, "none", "")

    tfidf = describe_text_model(TFIDF)
    key = (project_id, hashlib.sha1(item_pks.tobytes()).hexdigest())
    cached = _FEATURE_CACHE.get(key)
    if cached is not None:
        _FEATURE_CACHE.move_to_end(key)
        return cached.copy(), "text", tfidf
    cursor.execute("SELECT COALESCE(text, '') FROM projects_item WHERE project_id = %s ORDER BY id", [project_id])
    texts = [r[0] for r in cursor.fetchall()]
    if sum(1 for t in texts if t.strip()) < 2:
        return None, "none", ""
    # Imported here for the same reason as standardise_numeric (scikit-learn).
    from inference.features import text_features

    dim = max(2, min(TEXT_FEATURE_DIM, len(texts) - 1))
    matrix = np.asarray(text_features(texts, dim=dim), dtype=np.float32)
    _remember(key, matrix.copy())
    return matrix, "text", tfidf


def _stored_embeddings(cursor: Any, project_id: int, model_name: str, n_items: int) -> np.ndarray | None:
    """(N, dim) stored vectors in item order; zeros for items without one, None if no item has one.

    An item without a vector has no text, or arrived after the run embedded the
    missing ones (``live.embedding.embed_missing_items``); the next run has it.
    """
    cursor.execute(
        "SELECT e.vector FROM projects_item i LEFT JOIN live_itemembedding e ON e.item_id = i.id AND e.model = %s "
        "WHERE i.project_id = %s ORDER BY i.id",
        [model_name, project_id],
    )
    vectors = [None if row[0] is None else bytes(row[0]) for row in cursor.fetchall()]
    if len(vectors) != n_items:
        raise ValueError(f"read {len(vectors)} item embeddings where {n_items} items were expected")
    present = [v for v in vectors if v is not None]
    if len(present) < 2:
        return None
    dim = len(present[0]) // 4
    if any(len(v) != 4 * dim for v in present):
        raise ValueError(f"stored embeddings under {model_name!r} have different lengths")
    matrix = np.zeros((n_items, dim), dtype=np.float32)
    rows = np.fromiter((k for k, v in enumerate(vectors) if v is not None), dtype=np.int64)
    matrix[rows] = np.frombuffer(b"".join(present), dtype="<f4").reshape(len(present), dim)
    missing = n_items - len(present)
    if missing:
        logger.info("project %s: %d item(s) without an embedding get zero features this run", project_id, missing)
    return matrix


def _remember(key: tuple[int, str], matrix: np.ndarray) -> None:
    _FEATURE_CACHE[key] = matrix
    while len(_FEATURE_CACHE) > _FEATURE_CACHE_SIZE:
        _FEATURE_CACHE.popitem(last=False)


# --------------------------------------------------------------------------- results → rows


def _rows(matrix: np.ndarray, decimals: int = 6) -> list[list[float]]:
    # tolist() is typed Any for an array of unknown rank; callers pass 2-D matrices.
    rows: list[list[float]] = np.round(np.asarray(matrix, dtype=np.float64), decimals).tolist()
    return rows


def build_results(
    *,
    snapshot: Snapshot,
    model: Any,
    timings: dict[str, float],
    warm_start_from_id: int | None,
) -> RunResults:
    """Shape a fitted model as rows + metrics for ``results.services.run_publish``."""
    data = snapshot.data
    n, c = data.n_items, data.n_classes
    classes = list(data.classes)
    labels = np.asarray(model.labels_, dtype=np.int64)
    probas = np.asarray(model.probas_, dtype=np.float64)
    if labels.shape != (n,) or probas.shape != (n, c):
        raise ValueError(f"model returned labels {labels.shape} / probas {probas.shape}; expected ({n},) / ({n}, {c})")
    per_item = np.bincount(data.item_idx, minlength=n)
    labelled = per_item > 0
    classifier = getattr(model, "classifier_probas_", None)

    # Unlabelled items get the classifier's prediction; models without a
    # classifier (mv, ds) have nothing honest to say about them, so no row.
    source = np.where(labelled, LabelSource.CROWD.value, LabelSource.PREDICTED.value)
    out_probas = probas.copy()
    out_labels = labels.copy()
    if classifier is not None:
        classifier = np.asarray(classifier, dtype=np.float64)
        out_probas[~labelled] = classifier[~labelled]
        out_labels[~labelled] = classifier[~labelled].argmax(axis=1)
        rows_mask = np.ones(n, dtype=bool)
    else:
        rows_mask = labelled
    confidence = out_probas[np.arange(n), out_labels]
    probas_rounded = np.round(out_probas, 6).tolist()
    item_pks = snapshot.item_pks.tolist()
    per_item_list = per_item.tolist()
    conf_list = confidence.tolist()
    label_rows = [
        LabelRow(
            item_id=item_pks[i],
            label=classes[out_labels[i]],
            confidence=conf_list[i],
            probabilities=probas_rounded[i],
            source=str(source[i]),
            n_annotations=per_item_list[i],
        )
        for i in np.flatnonzero(rows_mask).tolist()
    ]

    # Per-annotator confusions; learned accuracy weights the diagonal by the
    # class frequency of the aggregated labels (what the annotator will see).
    confusions = np.asarray(model.confusions_, dtype=np.float64)
    prior = np.bincount(labels[labelled], minlength=c).astype(np.float64)
    prior = prior / prior.sum() if prior.sum() > 0 else np.full(c, 1.0 / c)
    learned = np.einsum("rcc,c->r", confusions, prior)
    per_annotator = np.bincount(data.annotator_idx, minlength=data.n_annotators)
    omega = getattr(model, "omega_", None)
    annotator_omega = getattr(model, "annotator_omega_", None)
    omega_lists: list[list[float] | None] = [None] * data.n_annotators
    if omega is not None:
        omega = np.asarray(omega, dtype=np.float64)
        order = np.argsort(data.annotator_idx, kind="stable")
        splits = np.split(np.round(omega[order], 4), np.cumsum(per_annotator)[:-1])
        omega_lists = [s.tolist() for s in splits]
    confusion_rows = [
        ConfusionRow(
            annotator_id=int(snapshot.annotator_pks[r]),
            matrix=_rows(confusions[r]),
            omega=None if annotator_omega is None else float(annotator_omega[r]),
            omegas=omega_lists[r],
            n_annotations=int(per_annotator[r]),
            learned_accuracy=float(learned[r]),
        )
        for r in range(data.n_annotators)
    ]
    common = getattr(model, "common_confusion_", None)

    # Metrics: agreement with majority vote (labelled items) and gold accuracy.
    metrics: dict[str, Any] = {"n_labelled_items": int(labelled.sum()), "n_unlabelled_items": int((~labelled).sum())}
    counts = data.counts()
    if labelled.any():
        mv = counts[labelled].argmax(axis=1)
        metrics["agreement_with_mv"] = float((mv == labels[labelled]).mean())
    gold_mask = snapshot.gold_idx >= 0
    if gold_mask.any():
        metrics["gold_accuracy"] = float((out_labels[gold_mask] == snapshot.gold_idx[gold_mask]).mean())
        metrics["n_gold"] = int(gold_mask.sum())
    metrics["feature_kind"] = snapshot.feature_kind
    features = snapshot.feature_kind if not snapshot.featurizer else f"{snapshot.feature_kind}: {snapshot.featurizer}"
    metrics["n_epochs"] = int(getattr(model, "n_epochs_", 0) or 0)

    generated_rows = build_generated_rows(snapshot=snapshot, model=model)
    if generated_rows:
        metrics["n_generated"] = len(generated_rows)

    checkpoint: bytes | None = None
    try:
        checkpoint = model.dumps()
    except NotImplementedError:
        logger.info("model %s has no checkpoint", type(model).__name__)

    return RunResults(
        snapshot_annotation_id=snapshot.snapshot_annotation_id,
        n_items=n,
        n_annotations=data.n_annotations,
        n_annotators=data.n_annotators,
        labels=label_rows,
        confusions=confusion_rows,
        common_confusion=None if common is None else _rows(common),
        checkpoint=checkpoint,
        loss_history=[float(x) for x in getattr(model, "loss_history_", [])],
        metrics=metrics,
        timings=timings,
        warm_start_from_id=warm_start_from_id,
        generated=generated_rows,
        features=features,
    )


def build_generated_rows(*, snapshot: Snapshot, model: Any) -> list[GeneratedRow]:
    """CrowdInG's generated annotations as rows keyed by the real Item/User pks.

    Read from the raw index arrays (not the ``generated_`` records, whose ids are
    the CrowdData strings): the indices map straight onto ``snapshot.item_pks`` /
    ``snapshot.annotator_pks``, the same alignment the fit used. Models without
    generated annotations (everything but CrowdInG) give an empty list.
    """
    item_idx = getattr(model, "generated_item_idx_", None)
    if item_idx is None:
        return []
    item_idx = np.asarray(item_idx, dtype=np.int64)
    annotator_idx = np.asarray(model.generated_annotator_idx_, dtype=np.int64)
    label_idx = np.asarray(model.generated_label_idx_, dtype=np.int64)
    probability = np.asarray(model.generated_probability_, dtype=np.float64)
    n, r, c = snapshot.data.n_items, snapshot.data.n_annotators, snapshot.data.n_classes
    if not (len(item_idx) == len(annotator_idx) == len(label_idx) == len(probability)):
        raise ValueError("model returned generated_* arrays of different lengths")
    if len(item_idx) and (
        item_idx.min() < 0
        or item_idx.max() >= n
        or annotator_idx.min() < 0
        or annotator_idx.max() >= r
        or label_idx.min() < 0
        or label_idx.max() >= c
    ):
        raise ValueError(
            f"model returned generated annotations outside the crowd ({n} items, {r} annotators, {c} classes)"
        )
    classes = list(snapshot.data.classes)
    item_pks = snapshot.item_pks[item_idx].tolist()
    annotator_pks = snapshot.annotator_pks[annotator_idx].tolist()
    labels = label_idx.tolist()
    probs = np.round(probability, 6).tolist()
    return [
        GeneratedRow(item_id=item_pks[g], annotator_id=annotator_pks[g], label=classes[labels[g]], probability=probs[g])
        for g in range(len(item_pks))
    ]
