"""Can a run's heartbeat thread keep beating while a 1M-annotation fit runs? (issue 14, item 10)

A running run beats from a thread of its own (``live.services.RunHeartbeat``),
because the progress callback is silent for whole phases (the final posterior,
and outside the fit the snapshot read, the features and the publish). The
thread needs the GIL; this measures how late a thread that wants to wake every
50 ms actually wakes while CoNAL (and DS) fit the 1M-annotation scale crowd of
``bench.aggregation`` in the main thread, next to the longest gap between two
progress calls (what a heartbeat riding on progress alone would see).

Usage::

    .venv/bin/python -m bench.heartbeat [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

from bench.aggregation import SCALE  # noqa: E402
from inference.models.conal import CoNAL  # noqa: E402
from inference.models.ds import DawidSkene  # noqa: E402
from inference.synthetic import make_synthetic_crowd  # noqa: E402

TICK_S = 0.05


class Sampler(threading.Thread):
    """Wakes every TICK_S and records how late it woke (the GIL wait)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.lags: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            due = time.perf_counter() + TICK_S
            time.sleep(TICK_S)
            self.lags.append(max(0.0, time.perf_counter() - due))


def measure(name: str, fit: Any) -> dict[str, Any]:
    calls: list[float] = []

    def progress(epoch: int, total: int, loss: float) -> None:
        calls.append(time.perf_counter())

    sampler = Sampler()
    sampler.start()
    start = time.perf_counter()
    fit(progress)
    end = time.perf_counter()
    sampler.stop.set()
    sampler.join()
    marks = [start, *calls, end]
    gaps = np.diff(marks)
    lags = np.asarray(sampler.lags)
    return {
        "model": name,
        "fit_s": round(end - start, 2),
        "progress_calls": len(calls),
        "longest_silence_between_progress_calls_s": round(float(gaps.max()), 2),
        "first_progress_after_s": round(float(gaps[0]), 2),
        "after_last_progress_s": round(float(gaps[-1]), 2),
        "thread_wakeups": int(lags.size),
        "thread_lag_max_s": round(float(lags.max()), 3),
        "thread_lag_p99_s": round(float(np.percentile(lags, 99)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (INFERENCE_THREADS)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    crowd = make_synthetic_crowd(**SCALE)  # type: ignore[arg-type]
    print(f"crowd: {crowd.data.n_annotations} annotations in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    rows = [
        measure("conal", lambda progress: CoNAL(seed=0, num_threads=args.threads).fit(crowd.data, progress=progress)),
        measure("ds", lambda progress: DawidSkene().fit(crowd.data, progress=progress)),
    ]
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
