"""Command line: ``python -m inference fit --annotations A.csv --model M --out DIR ...``.

This interface is a contract the platform and outside checks depend on; keep it stable.

Inputs
  A.csv      header ``item,annotator,label`` (or crowd-kit's ``task,worker,label``)
  F.npy+I.txt  dense features, row k belongs to line k of I.txt
  F.csv      ``item`` column followed by numeric columns
  T.csv      ``item,text``; turned into features by ``--text-model``: sentence embeddings
             (the extra ``crowdlab[text]``; default all-MiniLM-L6-v2) or ``tfidf``
             (TF-IDF + TruncatedSVD, the fallback without the extra)
  G.csv      ``item,label`` gold labels, only used to print the accuracy
Outputs (in DIR)
  labels.csv       ``item,label,confidence,p:<class>...`` for every item
  confusions.json  ``{"classes", "common", "annotators": {id: {"confusion", "omega", "n"}}}``
  run.json         model, parameters, seconds, epochs, counts, loss history (+ accuracy)

Malformed input exits with status 2 and a single ``error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from inference.data import CrowdData
from inference.metrics import accuracy_against_gold
from inference.models import MODELS, UNAVAILABLE, make_model
from inference.models.base import CrowdModel, TqdmProgress

__all__ = ["CliError", "load_features", "main", "read_annotations", "read_gold"]

# Accepted header spellings for the annotation file, in order of preference.
_ANNOTATION_HEADERS = (("item", "annotator", "label"), ("task", "worker", "label"))
# Hyper-parameter names that --epochs maps to when a model does not declare epochs_param.
_EPOCH_NAMES = ("epochs", "n_epochs", "max_epochs", "n_iter")


class CliError(Exception):
    """Malformed input or arguments: reported as one ``error:`` line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints usage + message over several lines; the contract is one line.
        raise CliError(message)


# ---------------------------------------------------------------------- readers
def _open_csv(path: Path, what: str) -> tuple[list[str], list[list[str]]]:
    """Header (lower-cased, stripped) and rows of a CSV file; errors name the file."""
    if not path.is_file():
        raise CliError(f"{what} file {str(path)!r} does not exist")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise CliError(f"{what} file {str(path)!r} is empty")
            rows = [row for row in reader if row and any(cell.strip() for cell in row)]
    except UnicodeDecodeError as exc:
        raise CliError(f"{what} file {str(path)!r} is not UTF-8 text: {exc.reason}") from exc
    except csv.Error as exc:
        raise CliError(f"{what} file {str(path)!r} is not valid CSV: {exc}") from exc
    return [h.strip().lower() for h in header], rows


def _columns(header: list[str], wanted: Sequence[str], path: Path, what: str) -> list[int]:
    missing = [w for w in wanted if w not in header]
    if missing:
        raise CliError(
            f"{what} file {str(path)!r} lacks column(s) {', '.join(missing)}; "
            f"header is {','.join(header)!r}, expected {','.join(wanted)!r}"
        )
    return [header.index(w) for w in wanted]


def read_annotations(path: Path) -> tuple[list[str], list[str], list[str]]:
    """Three aligned columns (items, annotators, labels) from the annotation CSV."""
    header, rows = _open_csv(path, "annotations")
    for names in _ANNOTATION_HEADERS:
        if all(n in header for n in names):
            cols = [header.index(n) for n in names]
            break
    else:
        expected = " or ".join(repr(",".join(n)) for n in _ANNOTATION_HEADERS)
        raise CliError(f"annotations file {str(path)!r} has header {','.join(header)!r}; expected {expected}")
    if not rows:
        raise CliError(f"annotations file {str(path)!r} has a header but no annotations")
    width = max(cols) + 1
    items: list[str] = []
    anns: list[str] = []
    labels: list[str] = []
    for lineno, row in enumerate(rows, start=2):
        if len(row) < width:
            raise CliError(
                f"annotations file {str(path)!r}: line {lineno} has {len(row)} fields, expected {len(header)}"
            )
        it, an, lab = (row[c].strip() for c in cols)
        if not it or not an or not lab:
            raise CliError(f"annotations file {str(path)!r}: line {lineno} has an empty item, annotator or label")
        items.append(it)
        anns.append(an)
        labels.append(lab)
    return items, anns, labels


def read_gold(path: Path) -> dict[str, str]:
    header, rows = _open_csv(path, "gold")
    ci, cl = _columns(header, ("item", "label"), path, "gold")
    gold: dict[str, str] = {}
    for lineno, row in enumerate(rows, start=2):
        if len(row) <= max(ci, cl):
            raise CliError(f"gold file {str(path)!r}: line {lineno} has too few fields")
        gold[row[ci].strip()] = row[cl].strip()
    if not gold:
        raise CliError(f"gold file {str(path)!r} has no labels")
    return gold


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise CliError(f"{what} file {str(path)!r} does not exist")
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError as exc:
        raise CliError(f"{what} file {str(path)!r} is not UTF-8 text: {exc.reason}") from exc
    lines = [ln for ln in lines if ln]
    if not lines:
        raise CliError(f"{what} file {str(path)!r} is empty")
    return lines


def load_features(
    *,
    features: Path | None,
    items: Path | None,
    texts: Path | None,
    seed: int,
    standardise_numeric: bool = True,
    text_model: str | None = None,
    described: dict[str, Any] | None = None,
) -> tuple[list[str] | None, np.ndarray | None]:
    """(item ids, feature matrix) from one of the three feature inputs, or (None, None).

    ``described``, when given, receives what the features were made with
    (``kind``, and ``featurizer`` for texts) for run.json.
    """
    info: dict[str, Any] = described if described is not None else {}
    info["kind"] = "none"
    if text_model is not None and texts is None:
        raise CliError("--text-model only goes with --texts")
    if texts is not None:
        if features is not None:
            raise CliError("use either --features or --texts, not both")
        header, rows = _open_csv(texts, "texts")
        ci, ct = _columns(header, ("item", "text"), texts, "texts")
        if not rows:
            raise CliError(f"texts file {str(texts)!r} has a header but no rows")
        ids = [row[ci].strip() if len(row) > ci else "" for row in rows]
        if any(not i for i in ids):
            raise CliError(f"texts file {str(texts)!r} has a row without an item id")
        docs = [row[ct] if len(row) > ct else "" for row in rows]
        from inference.embeddings import TFIDF, resolve_text_model  # light: no torch
        from inference.features import featurize_texts  # sklearn (and torch) only when needed

        try:
            resolved = resolve_text_model(text_model)
        except ValueError as exc:
            raise CliError(f"--text-model: {exc}") from exc
        if resolved == TFIDF and text_model in (None, "auto"):
            print("texts: sentence-transformers is not installed; using TF-IDF + SVD", file=sys.stderr)
        matrix, name = featurize_texts(docs, model=resolved, seed=seed, progress=_EmbeddingLines())
        info.update(kind="text", featurizer=name)
        return ids, matrix
    if features is None:
        if items is not None:
            raise CliError("--items only goes with --features F.npy")
        return None, None

    suffix = features.suffix.lower()
    if suffix == ".npy":
        if items is None:
            raise CliError("--features F.npy needs --items I.txt (one item id per line, row order)")
        if not features.is_file():
            raise CliError(f"features file {str(features)!r} does not exist")
        try:
            matrix = np.load(features, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise CliError(f"features file {str(features)!r} is not a readable .npy matrix: {exc}") from exc
        if not np.issubdtype(matrix.dtype, np.number):
            raise CliError(f"features file {str(features)!r} is not numeric (dtype {matrix.dtype})")
        ids = _read_lines(items, "items")
    elif suffix == ".csv":
        if items is not None:
            raise CliError("--items only goes with --features F.npy; F.csv carries its own item column")
        header, rows = _open_csv(features, "features")
        if not header or header[0] != "item":
            raise CliError(
                f"features file {str(features)!r} must start with an 'item' column, header is {','.join(header)!r}"
            )
        if len(header) < 2:
            raise CliError(f"features file {str(features)!r} has no feature columns after 'item'")
        if not rows:
            raise CliError(f"features file {str(features)!r} has a header but no rows")
        ids = []
        matrix = np.empty((len(rows), len(header) - 1), dtype=np.float64)
        for k, row in enumerate(rows):
            if len(row) != len(header):
                raise CliError(
                    f"features file {str(features)!r}: line {k + 2} has {len(row)} fields, expected {len(header)}"
                )
            ids.append(row[0].strip())
            try:
                matrix[k] = [float(v) for v in row[1:]]
            except ValueError:
                bad = next(v for v in row[1:] if not _is_float(v))
                raise CliError(f"features file {str(features)!r}: line {k + 2}: {bad!r} is not a number") from None
    else:
        raise CliError(f"--features must be a .npy or .csv file, got {str(features)!r}")

    if matrix.ndim != 2:
        raise CliError(f"features must be a 2-D matrix, got shape {matrix.shape}")
    if matrix.shape[0] != len(ids):
        raise CliError(f"features have {matrix.shape[0]} rows but {len(ids)} item ids were given")
    if len(set(ids)) != len(ids):
        raise CliError("feature item ids must be unique")
    if not np.isfinite(matrix).all():
        raise CliError("features contain NaN or inf values")
    if standardise_numeric:
        from inference.features import standardise

        matrix, _ = standardise(matrix)
    info["kind"] = "numeric"
    return ids, np.asarray(matrix, dtype=np.float32)


class _EmbeddingLines:
    """Embedding progress as plain stderr lines (about every 10 %): it takes minutes,
    and unlike a tqdm bar the lines also show in logs and non-terminal runs."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self._next = 0.0

    def __call__(self, done: int, total: int) -> None:
        if done >= total or done / total >= self._next:
            elapsed = time.perf_counter() - self.started
            print(f"embedding texts: {done}/{total} ({elapsed:.0f} s)", file=sys.stderr, flush=True)
            self._next = done / total + 0.1


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------- model set-up
def _model_params(cls: type[CrowdModel], *, seed: int, epochs: int | None, extra: list[str]) -> dict[str, Any]:
    fields: dict[str, dataclasses.Field[Any]] = (
        {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    )
    params: dict[str, Any] = {}
    if "seed" in fields:
        params["seed"] = seed
    if epochs is not None:
        if epochs < 1:
            raise CliError(f"--epochs must be >= 1, got {epochs}")
        target = cls.epochs_param or next((n for n in _EPOCH_NAMES if n in fields), None)
        if target is not None:
            params[target] = epochs
    for kv in extra:
        key, sep, raw = kv.partition("=")
        if not sep or key not in fields:
            raise CliError(f"--param expects NAME=VALUE with NAME one of {sorted(fields)}, got {kv!r}")
        params[key] = _parse_value(raw)
    return params


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


# ---------------------------------------------------------------------- outputs
def _write_outputs(out: Path, model: CrowdModel, data: CrowdData) -> None:
    out.mkdir(parents=True, exist_ok=True)
    probas = np.asarray(model.probas_, dtype=np.float64)
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["item", "label", "confidence", *(f"p:{c}" for c in data.classes)])
        for i, item in enumerate(data.items):
            lab = int(model.labels_[i])
            w.writerow([item, data.classes[lab], f"{probas[i, lab]:.6f}", *(f"{p:.6f}" for p in probas[i])])

    n_per = data.annotations_per_annotator()
    omega = model.annotator_omega_
    annotators = {
        a: {
            "confusion": np.round(model.confusions_[r], 6).tolist(),
            "omega": None if omega is None else round(float(omega[r]), 6),
            "n": int(n_per[r]),
        }
        for r, a in enumerate(data.annotators)
    }
    common = model.common_confusion_
    (out / "confusions.json").write_text(
        json.dumps(
            {
                "classes": list(data.classes),
                "common": None if common is None else np.round(common, 6).tolist(),
                "annotators": annotators,
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    # Hook for models with extra outputs (e.g. CrowdInG's generated.csv).
    writer = getattr(model, "write_outputs", None)
    if callable(writer):
        writer(out, data)


def _run_info(
    model: CrowdModel, data: CrowdData, seconds: float, accuracy: dict[str, Any] | None, features: dict[str, Any]
) -> dict[str, Any]:
    return {
        "model": model.name,
        "features": features,
        "params": {k: v for k, v in model.get_params().items() if _jsonable(v)},
        "seconds": round(seconds, 4),
        "fit_seconds": round(float(model.fit_seconds_), 4),
        "epochs": int(model.n_epochs_),
        "counts": {
            "items": data.n_items,
            "labelled_items": int(data.labelled_mask().sum()),
            "annotators": data.n_annotators,
            "annotations": data.n_annotations,
            "classes": data.n_classes,
        },
        "classes": list(data.classes),
        "loss_history": [float(x) for x in model.loss_history_],
        "accuracy": accuracy,
    }


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


# ---------------------------------------------------------------------- commands
def _build_parser() -> _Parser:
    parser = _Parser(prog="python -m inference", description="crowdlab learning-from-crowds engine")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    fit = sub.add_parser("fit", help="aggregate crowd labels (and train a classifier if the model has one)")
    fit.add_argument(
        "--annotations", required=True, type=Path, help="A.csv: item,annotator,label (or task,worker,label)"
    )
    fit.add_argument("--model", required=True, help=f"one of: {', '.join(MODELS.names())}")
    fit.add_argument("--out", required=True, type=Path, help="output directory")
    fit.add_argument("--features", type=Path, help="F.npy (with --items) or F.csv (item + numeric columns)")
    fit.add_argument("--items", type=Path, help="I.txt: item id of each row of F.npy")
    fit.add_argument("--texts", type=Path, help="T.csv: item,text")
    fit.add_argument(
        "--text-model",
        help="featurizer of --texts: 'auto' (default: all-MiniLM-L6-v2 with crowdlab[text], else TF-IDF), "
        "'tfidf', a sentence-transformers model folder or hub name",
    )
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--epochs", type=int, default=None, help="epochs / iterations, when the model has them")
    fit.add_argument("--gold", type=Path, help="G.csv: item,label; prints the accuracy")
    fit.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="other hyper-parameters")
    fit.add_argument("--no-standardise", action="store_true", help="use numeric features as given")
    return parser


def _fit(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    cls = MODELS.get(args.model)
    if cls is None:
        if args.model in UNAVAILABLE:
            raise CliError(f"model {args.model!r} failed to import: {UNAVAILABLE[args.model]}")
        raise CliError(f"unknown model {args.model!r}; allowed: {', '.join(MODELS.names())}")
    params = _model_params(cls, seed=args.seed, epochs=args.epochs, extra=args.param)
    items, anns, labels = read_annotations(args.annotations)
    described: dict[str, Any] = {}
    feat_ids, feats = load_features(
        features=args.features,
        items=args.items,
        texts=args.texts,
        seed=args.seed,
        standardise_numeric=not args.no_standardise,
        text_model=args.text_model,
        described=described,
    )
    item_order: list[str] | None = None
    if feat_ids is not None:
        known = set(feat_ids)
        missing = sorted({i for i in items if i not in known})
        if missing:
            raise CliError(f"{len(missing)} annotated item(s) have no feature row, e.g. {missing[0]!r}")
        item_order = feat_ids  # unlabelled feature rows are kept: they get the classifier's prediction
    gold = read_gold(args.gold) if args.gold is not None else None

    data = CrowdData.from_records((items, anns, labels), items=item_order, features=feats)
    try:
        model = make_model(args.model, **params)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    with TqdmProgress(desc=f"fit {args.model}") as bar:
        model.fit(data, progress=bar)

    accuracy = None
    if gold is not None:
        names = [data.classes[int(k)] for k in model.labels_]
        acc, n = accuracy_against_gold(data.items, names, gold)
        accuracy = {"aggregated": acc, "n": n}
        line = f"accuracy: {acc:.4f} ({n} items with gold)"
        if model.classifier_probas_ is not None:
            cls_names = [data.classes[int(k)] for k in np.argmax(model.classifier_probas_, axis=1)]
            cacc, _ = accuracy_against_gold(data.items, cls_names, gold)
            accuracy["classifier"] = cacc
            line += f"; classifier: {cacc:.4f}"
        print(line)
    _write_outputs(args.out, model, data)
    info = _run_info(model, data, time.perf_counter() - started, accuracy, described)
    (args.out / "run.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command != "fit":
            raise CliError("a command is required: fit")
        return _fit(args)
    except (CliError, ValueError, OSError) as exc:
        # One line, no traceback: these are problems with the input, not bugs.
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
