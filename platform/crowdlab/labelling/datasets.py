"""Import a dataset folder (the layout of ``/work/shared/datasets``: annotations, features, gold)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.db import transaction

from crowdlab.projects.importing import MAX_ITEMS_PER_REQUEST, ImportResult, items_import
from crowdlab.projects.models import Item, Project

from .importing import CrowdImportResult, crowd_import


@dataclass
class DatasetImportResult:
    project: Project
    project_created: bool
    items: ImportResult
    crowd: CrowdImportResult
    test_items: int

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.crowd.as_dict(),
            # After the crowd's counts: items the crowd import created (ids
            # seen only in annotations.csv) add to those of the item files.
            "project_id": self.project.pk,
            "project_created": self.project_created,
            "items_created": self.items.created + self.crowd.items_created,
            "test_items_created": self.test_items,
        }


def _read_utf8(path: Any) -> str:
    """A dataset file's text; a byte that is not UTF-8 is a ValueError naming the file, line and byte."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1].hex().upper()
        raise ValueError(f"{path}, line {line}: byte 0x{bad} is not UTF-8 text; save the file as UTF-8.") from None


def _read_csv_dicts(path: Any) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(_read_utf8(path), newline="")))


def _require_columns(path: Any, rows: list[dict[str, str]], columns: tuple[str, ...]) -> None:
    if rows and not set(columns) <= set(rows[0]):
        raise ValueError(f"{path}: expected the columns {', '.join(columns)}; found {', '.join(rows[0])}.")


def dataset_classes(directory: Any) -> list[dict[str, Any]]:
    """Classes of a dataset folder: the sorted labels of gold.csv and annotations.csv, keys 1..9."""
    directory = Path(directory)
    labels: set[str] = set()
    for name in ("gold.csv", "annotations.csv"):
        path = directory / name
        if path.exists():
            rows = _read_csv_dicts(path)
            _require_columns(path, rows, ("label",))
            labels.update(row["label"].strip() for row in rows if row["label"].strip())
    return [{"name": name, "key": str(index + 1) if index < 9 else None} for index, name in enumerate(sorted(labels))]


def dataset_import(
    *, directory: Any, project: Project, project_created: bool = False, with_test: bool = False
) -> DatasetImportResult:
    """Import a dataset folder (the layout of ``shared/datasets/*``) into ``project``.

    Files: ``annotations.csv`` (item,annotator,label; required), ``gold.csv``
    (item,label), ``features.npy`` + ``items.txt`` (row k ↔ line k), ``texts.csv``
    (item,text). ``test_*`` files hold items no crowd labelled; with
    ``with_test`` they become items ``test-<row>`` marked ``data.split = "test"``
    (with their gold label, to score the classifier), otherwise they are ignored.

    Idempotent: items already in the project are left as they are and crowd
    labels already stored are skipped.
    """
    directory = Path(directory)
    annotations_path = directory / "annotations.csv"
    if not annotations_path.exists():
        raise ValueError(f"{directory}: annotations.csv (item,annotator,label) is required.")
    allowed = set(project.class_names)
    rows: dict[str, dict[str, Any]] = {}

    def row_for(external_id: str) -> dict[str, Any]:
        return rows.setdefault(external_id, {"external_id": external_id})

    if (directory / "features.npy").exists():
        items_path = directory / "items.txt"
        if not items_path.exists():
            raise ValueError(f"{directory}: features.npy needs items.txt (one item id per line, row k ↔ line k).")
        item_ids = [line.strip() for line in _read_utf8(items_path).splitlines() if line.strip()]
        features = np.load(directory / "features.npy", allow_pickle=False)
        if features.ndim != 2 or features.shape[0] != len(item_ids):
            raise ValueError(
                f"{directory}: features.npy has shape {features.shape}; expected {len(item_ids)} rows (items.txt)."
            )
        for external_id, vector in zip(item_ids, features.astype(float).tolist(), strict=True):
            row_for(external_id)["features"] = vector
    if (directory / "texts.csv").exists():
        texts = _read_csv_dicts(directory / "texts.csv")
        _require_columns(directory / "texts.csv", texts, ("item", "text"))
        for text_row in texts:
            row_for(text_row["item"])["text"] = text_row["text"]
    if (directory / "gold.csv").exists():
        gold_rows = _read_csv_dicts(directory / "gold.csv")
        _require_columns(directory / "gold.csv", gold_rows, ("item", "label"))
        for gold_row in gold_rows:
            if gold_row["label"] not in allowed:
                raise ValueError(
                    f"gold.csv: label {gold_row['label']!r} is not a class of project {project.name!r}; "
                    f"allowed: {', '.join(project.class_names)}."
                )
            row_for(gold_row["item"])["gold"] = gold_row["label"]

    test_rows: dict[str, dict[str, Any]] = {}
    if with_test:
        test_gold: dict[str, str] = {}
        if (directory / "test_gold.csv").exists():
            for gold_row in _read_csv_dicts(directory / "test_gold.csv"):
                test_gold[gold_row["row"]] = gold_row["label"]
        if (directory / "test_features.npy").exists():
            test_features = np.load(directory / "test_features.npy", allow_pickle=False)
            for index, vector in enumerate(test_features.astype(float).tolist()):
                test_rows[f"test-{index}"] = {
                    "external_id": f"test-{index}",
                    "features": vector,
                    "data": {"split": "test"},
                    "gold": test_gold.get(str(index)),
                }
        if (directory / "test_texts.csv").exists():
            for text_row in _read_csv_dicts(directory / "test_texts.csv"):
                test_rows[f"test-{text_row['row']}"] = {
                    "external_id": f"test-{text_row['row']}",
                    "text": text_row["text"],
                    "data": {"split": "test"},
                    "gold": text_row.get("label") or test_gold.get(text_row["row"]),
                }
        for test_row in test_rows.values():
            if test_row["gold"] is not None and test_row["gold"] not in allowed:
                test_row["gold"] = None  # a test class no crowd item has: keep the item, drop the score label

    with transaction.atomic():
        existing = set(Item.objects.filter(project=project).values_list("external_id", flat=True))
        new_rows = [row for key, row in rows.items() if key not in existing]
        new_rows += [row for key, row in test_rows.items() if key not in existing]
        created = ImportResult(created=0)
        for start in range(0, len(new_rows), MAX_ITEMS_PER_REQUEST):
            batch = items_import(project=project, rows=new_rows[start : start + MAX_ITEMS_PER_REQUEST])
            created.created += batch.created
            for kind, count in batch.kinds.items():
                created.kinds[kind] = created.kinds.get(kind, 0) + count
        with open(annotations_path, "rb") as handle:
            crowd = crowd_import(project=project, stream=handle)
    n_test = sum(1 for key in test_rows if key not in existing)
    return DatasetImportResult(
        project=project,
        project_created=project_created,
        items=ImportResult(created=created.created - n_test, kinds=created.kinds),
        crowd=crowd,
        test_items=n_test,
    )
