"""Helpers for the aggregation benchmark: dataset loading, memory sampling, two-stage baseline."""

from __future__ import annotations

import csv
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from inference.data import CrowdData
from inference.models.conal.training import weight_decay_rule

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


@dataclass
class Measured:
    value: Any
    seconds: float
    cpu_seconds: float  # process CPU time: less sensitive than wall time to the shared cores
    peak_rss_delta: int  # bytes above the RSS at the start, sampled every 5 ms


def measure(fn: Callable[[], Any]) -> Measured:
    """Run ``fn`` and record wall seconds and the peak RSS increase while it ran.

    RSS (not tracemalloc) because torch tensors bypass tracemalloc; a sampling thread
    every 5 ms can miss a very short spike, so this is a lower bound on the true peak.
    """
    start = rss_bytes()
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            stop.wait(0.005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        value = fn()
    finally:
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        stop.set()
        th.join()
    peak[0] = max(peak[0], rss_bytes())
    return Measured(value, secs, cpu, max(0, peak[0] - start))


@dataclass
class Crowd:
    name: str
    data: CrowdData
    gold: np.ndarray  # (N,) int64 class index, -1 where unknown
    test_features: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    truth: Any = None  # SyntheticCrowd for synthetic crowds


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load_folder(name: str, folder: str | Path) -> Crowd:
    """A dataset folder: annotations.csv, gold.csv and features.npy+items.txt or texts.csv."""
    folder = Path(folder)
    ann = _read_csv(folder / "annotations.csv")
    records = ([r["item"] for r in ann], [r["annotator"] for r in ann], [r["label"] for r in ann])
    gold_map = {r["item"]: r["label"] for r in _read_csv(folder / "gold.csv")}
    test_x: np.ndarray | None = None
    test_gold: list[str] | None = None
    if (folder / "features.npy").exists():
        items = (folder / "items.txt").read_text().split()
        feats = np.load(folder / "features.npy")
        if (folder / "test_features.npy").exists():
            test_x = np.load(folder / "test_features.npy")
            test_gold = [r["label"] for r in _read_csv(folder / "test_gold.csv")]
    elif (folder / "texts.csv").exists():
        from inference.features import text_features

        texts = _read_csv(folder / "texts.csv")
        items = [r["item"] for r in texts]
        all_texts = [r["text"] for r in texts]
        test_rows = _read_csv(folder / "test_texts.csv") if (folder / "test_texts.csv").exists() else []
        # One vectoriser fitted on train + test text (unsupervised), as the brief asks.
        both = text_features(all_texts + [r["text"] for r in test_rows], n_components=128, seed=0)
        feats = both[: len(items)]
        if test_rows:
            test_x = both[len(items) :]
            test_gold = [r["label"] for r in test_rows]
    else:
        raise ValueError(f"{folder}: expected features.npy + items.txt or texts.csv")
    classes = sorted(set(records[2]) | set(gold_map.values()))
    data = CrowdData.from_records(records, classes=classes, items=items, features=feats)
    cidx = {c: i for i, c in enumerate(classes)}
    gold = np.array([cidx.get(gold_map.get(i, ""), -1) for i in data.items], dtype=np.int64)
    test_y = None if test_gold is None else np.array([cidx[v] for v in test_gold], dtype=np.int64)
    return Crowd(name, data, gold, test_x, test_y)


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    ok = gold >= 0
    return float((pred[ok] == gold[ok]).mean())


class TwoStageClassifier:
    """The "DS labels -> the same classifier" baseline: CoNAL's classifier architecture
    (FC 128 + BatchNorm + ReLU + dropout 0.5) trained by cross-entropy on hard labels,
    with CoNAL's optimiser, learning rate, weight decay (the same data-shape rule when
    ``weight_decay`` is None) and step budget."""

    def __init__(
        self,
        *,
        hidden: int = 128,
        dropout: float = 0.5,
        lr: float = 0.01,
        weight_decay: float | None = None,
        target_steps: int = 400,
        seed: int = 0,
    ) -> None:
        self.hidden, self.dropout, self.lr, self.weight_decay = hidden, dropout, lr, weight_decay
        self.target_steps, self.seed = target_steps, seed

    def fit(self, features: np.ndarray, labels: np.ndarray, n_classes: int) -> TwoStageClassifier:
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        x = np.asarray(features, np.float32)
        self.mean_, self.scale_ = x.mean(0), np.where(x.std(0) > 1e-8, x.std(0), 1.0).astype(np.float32)
        xt = torch.from_numpy((x - self.mean_) / self.scale_)
        yt = torch.from_numpy(np.asarray(labels, np.int64))
        self.net_ = nn.Sequential(
            nn.Linear(x.shape[1], self.hidden),
            nn.BatchNorm1d(self.hidden),
            nn.ReLU(),
            nn.Dropout(self.dropout),
            nn.Linear(self.hidden, n_classes),
        )
        wd = weight_decay_rule(x.shape[1], len(x)) if self.weight_decay is None else float(self.weight_decay)
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr, weight_decay=wd)
        n = len(xt)
        batch = int(np.clip(n // 16, 32, 4096))
        epochs = int(np.clip(round(self.target_steps / max(1, math.ceil(n / batch))), 5, 200))
        self.net_.train()
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for s in range(0, n, batch):
                b = perm[s : s + batch]
                if len(b) < 2:
                    continue
                loss = F.cross_entropy(self.net_(xt[b]), yt[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return self

    @torch.no_grad()
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Softmax class probabilities (the calibration columns score them)."""
        self.net_.eval()
        x = torch.from_numpy((np.asarray(features, np.float32) - self.mean_) / self.scale_)
        return torch.softmax(self.net_(x).double(), dim=1).numpy()

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.predict_proba(features).argmax(1)
