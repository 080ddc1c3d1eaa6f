"""The suspects of the live chain's loss, measured one at a time (BENCHMARKS.md, "Live refit chain").

Two tables, both on the model level with the chain helpers of ``bench/chain.py``:

``--table chain``: the whole 12-batch chain of warm refits as it ran before the fix
(every run warm from the one before, full learning rate), with one thing changed per
row; the last run is scored against a cold fit on all the labels.

``--table warm``: ONE warm refit from a cold fit after 1 % more labels (anchors at 50,
70 and 90 % of the crowd, seeds 0 and 1), per variant of the warm refit, against a
cold fit on the same labels.

Usage::

    .venv/bin/python -m bench.refit_suspects --table chain --crowd synthetic
    .venv/bin/python -m bench.refit_suspects --table warm --crowd labelme=../shared/datasets/labelme
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bench.chain import arrival_order, batch_ends, load_chain_crowd, prefix, score
from inference.data import CrowdData
from inference.models._torch import torch_fit_context
from inference.models.base import CrowdModel, ProgressFn
from inference.models.conal import CoNAL
from inference.models.noise import ds_init, np_softmax

#: The behaviour before the fix: every refit warm, at the cold fit's learning rate.
AS_BEFORE: dict[str, Any] = {"warm_min_annotations": 0, "warm_max_growth": float("inf"), "warm_lr_scale": 1.0}


class TauEveryRun(CoNAL):
    """tau re-chosen by the held-out probes at every run (a warm run keeps the cold choice)."""

    def fit(self, data: CrowdData, *, init: CrowdModel | None = None, progress: ProgressFn | None = None) -> CoNAL:
        prev = self._plan_start(init, data, width=None if data.features is None else data.features.shape[1])
        with torch_fit_context(num_threads=self.num_threads, seed=self.seed):
            tau, _ = self._probe_label_weight(data, None)
            self._fit(data, prev, None, tau)  # type: ignore[arg-type]
        return self


class FreshNoise(CoNAL):
    """Warm classifier; the noise layers re-estimated from the current labels (EM with the
    warm classifier's prediction as the item prior, as a cold fit's refinement step)."""

    def _copy_from(self, net: Any, prev: CoNAL, data: CrowdData) -> None:
        super()._copy_from(net, prev, data)
        assert prev.feature_mean_ is not None and prev.feature_scale_ is not None and data.features is not None
        with torch.no_grad():
            x = (torch.from_numpy(np.asarray(data.features, np.float32)) - torch.from_numpy(prev.feature_mean_)) / (
                torch.from_numpy(prev.feature_scale_)
            )
            net.eval()
            clf = np_softmax(net.eval_logits(x).double().numpy(), 1)
            net.train()
            _, conf, common = ds_init(
                data.item_idx,
                data.annotator_idx,
                data.label_idx,
                data.n_items,
                data.n_annotators,
                data.n_classes,
                n_iter=5,
                item_prior=clf,
            )
            net.w_indiv.copy_(torch.from_numpy(np.log(conf)).float())
            net.w_common.copy_(torch.from_numpy(np.log(common)).float())


class FreshClassifier(CoNAL):
    """Warm noise layers and auxiliary network; the classifier re-initialised."""

    def _copy_from(self, net: Any, prev: CoNAL, data: CrowdData) -> None:
        keep = {k: v.clone() for k, v in net.classifier.state_dict().items()}
        super()._copy_from(net, prev, data)
        net.classifier.load_state_dict(keep)


class FrozenBatchNorm(CoNAL):
    """A warm refit that leaves the classifier's BatchNorm running statistics as they were."""

    def _copy_from(self, net: Any, prev: CoNAL, data: CrowdData) -> None:
        super()._copy_from(net, prev, data)
        net.classifier[1].momentum = 0.0


CHAIN_VARIANTS: dict[str, tuple[type[CoNAL], dict[str, Any]]] = {
    "as before the fix (2 epochs over the changed items + 5 % replay)": (CoNAL, {}),
    "warm_epochs=20": (CoNAL, {"warm_epochs": 20}),
    "warm over all items, 100 epochs": (CoNAL, {"warm_epochs": 100, "warm_replay": 1.0}),
    "tau re-chosen at every run": (TauEveryRun, {}),
    "noise layers re-estimated at every warm run": (FreshNoise, {}),
    "classifier re-initialised, noise layers carried": (FreshClassifier, {}),
    "learning rate x 0.1 (no policy)": (CoNAL, {"warm_lr_scale": 0.1}),
}

WARM_VARIANTS: dict[str, tuple[type[CoNAL], dict[str, Any]]] = {
    "as before the fix": (CoNAL, {}),
    "BatchNorm running statistics frozen": (FrozenBatchNorm, {}),
    "learning rate x 0.1": (CoNAL, {"warm_lr_scale": 0.1}),
    "BatchNorm frozen and learning rate x 0.1": (FrozenBatchNorm, {"warm_lr_scale": 0.1}),
    "no optimiser step (only the posterior recomputed)": (FrozenBatchNorm, {"lr": 1e-12}),
}


def chain_table(spec: str, n_batches: int) -> str:
    crowd = load_chain_crowd(spec)
    data = crowd.data
    arrival = arrival_order(data, "items", 0)
    ends = batch_ends(data.n_annotations, n_batches)
    final = prefix(data, arrival, ends[-1])
    cold = score(CoNAL(seed=0, num_threads=1).fit(final), final, crowd.gold)
    lines = [
        f"{crowd.name}, CoNAL, seed 0, {n_batches} batches; cold fit on all labels: "
        f"{100 * cold['accuracy']:.2f} % (ECE {cold['ece']:.4f})",
        "| chain variant | last published acc | Δ vs cold (pts) | ECE |",
        "|---|---|---|---|",
    ]
    for name, (cls, kw) in CHAIN_VARIANTS.items():
        previous: CoNAL | None = None
        for end in ends:
            snap = prefix(data, arrival, end)
            init = None if previous is None else cls.loads(previous.dumps())
            previous = cls(seed=0, num_threads=1, **{**AS_BEFORE, **kw}).fit(snap, init=init)
        assert previous is not None
        s = score(previous, final, crowd.gold)
        lines.append(
            f"| {name} | {100 * s['accuracy']:.2f} | {100 * (s['accuracy'] - cold['accuracy']):+.2f} | {s['ece']:.4f} |"
        )
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def warm_table(spec: str, growth: float) -> str:
    crowd = load_chain_crowd(spec)
    data = crowd.data
    arrival = arrival_order(data, "items", 0)
    gaps: dict[str, list[tuple[float, float]]] = {name: [] for name in WARM_VARIANTS}
    for anchor in (0.5, 0.7, 0.9):
        for seed in (0, 1):
            n0 = int(anchor * data.n_annotations)
            snap = prefix(data, arrival, int(n0 * (1 + growth)))
            blob = CoNAL(seed=seed, num_threads=1).fit(prefix(data, arrival, n0)).dumps()
            cold = score(CoNAL(seed=seed, num_threads=1).fit(snap), snap, crowd.gold)
            for name, (cls, kw) in WARM_VARIANTS.items():
                warm = cls(seed=seed, num_threads=1, **{**AS_BEFORE, **kw}).fit(snap, init=cls.loads(blob))
                w = score(warm, snap, crowd.gold)
                gaps[name].append((100 * (w["accuracy"] - cold["accuracy"]), w["ece"] - cold["ece"]))
    lines = [
        f"{crowd.name}, CoNAL, one warm refit after +{growth:.0%} labels, 6 fits (anchors 50/70/90 %, seeds 0/1)",
        "| warm refit variant | Δ acc mean | Δ acc worst | Δ ECE mean |",
        "|---|---|---|---|",
    ]
    for name, values in gaps.items():
        a = np.array(values)
        worst = a[np.argmax(np.abs(a[:, 0])), 0]
        lines.append(f"| {name} | {a[:, 0].mean():+.2f} | {worst:+.2f} | {a[:, 1].mean():+.4f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, choices=["chain", "warm"])
    parser.add_argument("--crowd", default="synthetic", help="'synthetic' or name=folder")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--growth", type=float, default=0.01)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(chain_table(args.crowd, args.batches) if args.table == "chain" else warm_table(args.crowd, args.growth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
