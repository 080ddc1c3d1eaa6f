"""CoNAL's training loop: the label-weight probes, the fit itself (DS start, classifier
pre-training, joint epochs over item batches), noise-layer refinement and warm starts.

``CoNALTraining`` is a mixin of ``CoNAL`` (``model.py``), which holds the hyper-parameters
these methods read; it has no state of its own.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from inference.data import CrowdData
from inference.models._torch import fit_inputs
from inference.models.base import CrowdModel, ProgressFn, match_ids, report_progress
from inference.models.conal.network import CoNALNet, softmax
from inference.models.conal.posterior import choose_tau
from inference.models.noise import EPS, ds_init, np_softmax

if TYPE_CHECKING:  # the mixin's host class, which imports this module
    from inference.models.conal.model import CoNAL

__all__ = ["CoNALTraining", "weight_decay_rule"]

#: Below this many held-out annotations the criterion is too noisy: train on all, tau = 1.
_MIN_HELD_OUT = 20
#: Held-out annotations after which no further probe fold is run (large crowds need one).
_PROBE_ENOUGH = 1000


class CoNALTraining(CrowdModel):
    """The fitting methods of ``CoNAL``."""

    # What these methods read from their host, declared for the type checker. Bare
    # annotations on a plain (non-dataclass) class add no dataclass field and no class
    # attribute: ``CoNAL``'s fields and ``__post_init__`` still hold every value, and the
    # MRO (CoNAL, this mixin, CoNALPosterior, CrowdModel) is the one before.
    epochs: int | None
    target_steps: int
    batch_size: int | None
    lr: float
    weight_decay: float | None
    item_embedding_dim: int
    reg_lambda: float
    init_method: Literal["ds", "identity"]
    pretrain_epochs: int | None
    refine_init: bool
    holdout: float
    probe_items: int
    probe_folds: int
    warm_epochs: int
    warm_replay: float
    warm_lr_scale: float
    seed: int
    device: str
    # Fit state (set in ``CoNAL.__post_init__`` and by the fit).
    _net: CoNALNet | None
    _label_scores: np.ndarray | None
    item_counts_: np.ndarray
    feature_mean_: np.ndarray | None
    feature_scale_: np.ndarray | None

    if TYPE_CHECKING:
        # Defined by the host (``CoNAL``) and by the sibling mixin ``CoNALPosterior``,
        # which comes AFTER this class in the MRO: a real stub here would shadow its
        # ``_finalise``, so these exist for the type checker only.
        def _build_net(
            self, *, n_items: int, n_features: int, n_annotators: int, n_annotator_features: int, n_classes: int
        ) -> CoNALNet: ...

        def _finalise(
            self,
            data: CrowdData,
            net: CoNALNet,
            x_all: torch.Tensor | None,
            ann_feats: torch.Tensor | None,
            a_item: np.ndarray,
            a_ann: np.ndarray,
            a_lab: np.ndarray,
            order: np.ndarray,
            held: np.ndarray,
            prev: CoNAL | None,
            tau: float | None,
        ) -> None: ...

    def _probe_label_weight(self, data: CrowdData, progress: ProgressFn | None = None) -> tuple[float, int]:
        """tau from a probe fit with held-out annotations (see the module docstring), on a
        seeded sample of at most ``probe_items`` labelled items; and the number of probe
        epochs reported to ``progress``.

        ``progress`` sees the probes' epochs first, out of a total that counts the probes
        still allowed plus the main fit, so a live run keeps its heartbeat and the CLI bar
        moves during the probes; the total shrinks when the probes stop early."""
        rng = np.random.default_rng([int(self.seed), 1])
        labelled = np.flatnonzero(np.bincount(data.item_idx, minlength=data.n_items) > 0)
        sub = data
        params: dict[str, Any] = {**self.get_params(), "label_weight": None}
        main_schedule = self._schedule(len(labelled))
        if len(labelled) > int(self.probe_items):
            # Same number of passes over its items as the main fit makes over all of them
            # (the probe's own step budget would give a 5k-item sample 25 epochs: at 1M
            # annotations the probe cost more than a third of the main fit).
            params["epochs"] = main_schedule[0]
            keep_items = np.sort(rng.choice(labelled, size=int(self.probe_items), replace=False))
            new_idx = np.full(data.n_items, -1, dtype=np.int64)
            new_idx[keep_items] = np.arange(len(keep_items))
            keep = new_idx[data.item_idx] >= 0
            sub = CrowdData(
                items=tuple(data.items[i] for i in keep_items),
                annotators=data.annotators,
                classes=data.classes,
                item_idx=new_idx[data.item_idx[keep]],
                annotator_idx=data.annotator_idx[keep],
                label_idx=data.label_idx[keep],
                features=None if data.features is None else data.features[keep_items],
                annotator_features=data.annotator_features,
            )
        main_epochs = sum(main_schedule)
        scores: list[np.ndarray] = []
        done = 0
        n_folds = int(self.probe_folds)
        for k in range(n_folds):
            probe = type(self)(**{**params, "seed": int(self.seed) + 7919 * k})
            probe_progress = None
            if progress is not None:
                left = n_folds - k

                def probe_progress(epoch: int, total: int, loss: float, _done: int = done, _left: int = left) -> None:
                    report_progress(progress, _done + epoch, _done + _left * total + main_epochs, loss)

            probe._fit(sub, None, probe_progress, None)
            done += probe.n_epochs_
            if probe._label_scores is not None:  # set (None) by every CoNAL's __post_init__
                scores.append(probe._label_scores)
                if sum(sc.shape[1] for sc in scores) >= _PROBE_ENOUGH:
                    break  # enough held-out labels for a stable choice: skip further folds
        return (choose_tau(np.concatenate(scores, 1)) if scores else 1.0), done

    def _fit(self, data: CrowdData, prev: CoNAL | None, progress: ProgressFn | None, tau: float | None) -> None:
        t0 = self._start_fit(data)
        rng = np.random.default_rng(int(self.seed))
        gen = torch.Generator().manual_seed(int(self.seed))
        dev = torch.device(self.device)
        n_items, n_ann, n_cls = data.n_items, data.n_annotators, data.n_classes

        # --- features: standardised; a warm start reuses the previous scaler so the
        # copied classifier weights keep their meaning.
        x_all, n_features, ann_feats = fit_inputs(self, data, prev, dev)

        # --- CSR layout: annotations sorted by item (stable -> deterministic).
        order = np.argsort(data.item_idx, kind="stable")
        a_item = data.item_idx[order]
        a_ann = data.annotator_idx[order]
        a_lab = data.label_idx[order]
        counts = np.bincount(a_item, minlength=n_items)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.item_counts_ = counts.astype(np.int64)
        labelled = np.nonzero(counts > 0)[0]
        # Training sees every annotation but the held-out ones (CSR again, still by item).
        held = (
            self._holdout_mask(a_item, starts, rng)
            if prev is None and tau is None
            else np.zeros(len(a_item), dtype=bool)
        )
        tr_item, tr_ann, tr_lab = a_item[~held], a_ann[~held], a_lab[~held]
        tr_counts = np.bincount(tr_item, minlength=n_items)
        tr_starts = np.concatenate([[0], np.cumsum(tr_counts)[:-1]])

        net = self._build_net(
            n_items=n_items,
            n_features=n_features,
            n_annotators=n_ann,
            n_annotator_features=0 if ann_feats is None else ann_feats.shape[1],
            n_classes=n_cls,
        ).to(dev)

        soft_targets: np.ndarray | None = None
        if prev is not None:
            train_items = self._warm_items(data, prev, counts, labelled, rng)
            self._copy_from(net, prev, data)
            n_epochs, n_pre = int(self.warm_epochs), 0
        else:
            train_items = labelled
            n_epochs, n_pre = self._schedule(len(labelled))
            if self.init_method == "ds":
                # 10 EM steps: only a start (refined again after pre-training), but fewer let DS label swaps through.
                soft_targets, conf, common = ds_init(tr_item, tr_ann, tr_lab, n_items, n_ann, n_cls, n_iter=10)
                with torch.no_grad():
                    net.w_indiv.copy_(torch.from_numpy(np.log(conf)).float())
                    net.w_common.copy_(torch.from_numpy(np.log(common)).float())
            else:
                n_pre = 0

        batch = self._batch_size(len(train_items))
        t_ann = torch.from_numpy(tr_ann).to(dev)
        t_lab = torch.from_numpy(tr_lab).to(dev)
        t_starts = torch.from_numpy(tr_starts).to(dev)
        t_counts = torch.from_numpy(tr_counts).to(dev)
        t_train = torch.from_numpy(train_items.astype(np.int64)).to(dev)
        t_soft = None if soft_targets is None else torch.from_numpy(soft_targets.astype(np.float32)).to(dev)

        # Weight decay on the classifier (and its item embeddings) only: decaying W^g/W^r
        # would pull the confusions toward uniform rows, and decaying the auxiliary
        # network's embeddings starves omega of the signal that separates the two sources.
        decayed = list(net.classifier.parameters())
        if net.item_embedding is not None:
            decayed += list(net.item_embedding.parameters())
        decayed_ids = {id(p) for p in decayed}
        rest = [p for p in net.parameters() if id(p) not in decayed_ids]
        opt = torch.optim.Adam(
            [
                {
                    "params": decayed,
                    "weight_decay": self._weight_decay(n_features or int(self.item_embedding_dim), len(labelled)),
                },
                {"params": rest, "weight_decay": 0.0},
            ],
            # A warm refit starts Adam afresh on a converged network: its first steps move
            # every weight by about lr whatever the gradient, and at the cold fit's rate
            # a refit on 1 % more LabelMe labels lost 5 points (14 at worst) against a
            # cold fit; a tenth of it lost none (BENCHMARKS.md, "Live refit chain").
            lr=float(self.lr) * (float(self.warm_lr_scale) if prev is not None else 1.0),
            foreach=True,  # one multi-tensor update per step: less per-step overhead on small batches
        )

        total = n_pre + n_epochs
        self.loss_history_ = []
        net.train()
        for epoch in range(total):
            pretrain = epoch < n_pre
            if n_pre > 0 and epoch == n_pre and self.refine_init:
                self._refine_noise_layers(net, x_all, tr_item, tr_ann, tr_lab, n_items, n_ann, n_cls)
            perm = t_train[torch.randperm(len(t_train), generator=gen)]
            epoch_loss, n_seen = 0.0, 0
            for s in range(0, len(perm), batch):
                items_b = perm[s : s + batch]
                if len(items_b) < 2:
                    continue  # BatchNorm needs >= 2 rows; at most one item skipped per epoch
                x = net.inputs(items_b, None if x_all is None else x_all.index_select(0, items_b))
                logits = net.classifier(x)
                if pretrain:
                    if t_soft is None:  # pre-training only happens after the DS start
                        raise RuntimeError("pre-training needs the DS posterior")
                    loss = -(t_soft.index_select(0, items_b) * F.log_softmax(logits, 1)).sum(1).mean()
                else:
                    loss = self._crowd_loss(
                        net, x, logits, items_b, t_starts, t_counts, t_ann, t_lab, ann_feats, float(self.reg_lambda)
                    )
                opt.zero_grad(set_to_none=True)
                # What Tensor.backward calls, spelled so: torch leaves Tensor.backward unannotated.
                torch.autograd.backward(loss)
                opt.step()
                epoch_loss += float(loss.detach()) * len(items_b)
                n_seen += len(items_b)
            mean_loss = epoch_loss / max(n_seen, 1)
            self.loss_history_.append(mean_loss)
            report_progress(progress, epoch + 1, total, mean_loss)

        self._net = net
        self.n_epochs_ = total
        self._finalise(data, net, x_all, ann_feats, a_item, a_ann, a_lab, order, held, prev, tau)
        self.fit_seconds_ = time.perf_counter() - t0

    @staticmethod
    @torch.no_grad()
    def _refine_noise_layers(
        net: CoNALNet,
        x_all: torch.Tensor | None,
        a_item: np.ndarray,
        a_ann: np.ndarray,
        a_lab: np.ndarray,
        n_items: int,
        n_ann: int,
        n_cls: int,
    ) -> None:
        """Re-estimate the noise layers with the pre-trained classifier as item prior.

        The classifier trained on DS posteriors generalises past DS's mistakes (they are
        item-specific, not feature-driven), so EM with it as prior gives noise layers that
        no longer encode DS's label swaps; joint training from DS's own layers could stay
        stuck in them (observed on the default synthetic crowd).
        """
        net.eval()
        inputs = net.inputs(torch.arange(n_items), x_all)
        clf = np_softmax(net.eval_logits(inputs).double().numpy(), 1)
        net.train()
        _, conf, common = ds_init(a_item, a_ann, a_lab, n_items, n_ann, n_cls, n_iter=5, item_prior=clf)
        net.w_indiv.copy_(torch.from_numpy(np.log(conf)).float())
        net.w_common.copy_(torch.from_numpy(np.log(common)).float())

    @staticmethod
    def _crowd_loss(
        net: CoNALNet,
        x: torch.Tensor,
        logits: torch.Tensor,
        items_b: torch.Tensor,
        t_starts: torch.Tensor,
        t_counts: torch.Tensor,
        t_ann: torch.Tensor,
        t_lab: torch.Tensor,
        ann_feats: torch.Tensor | None,
        reg_lambda: float,
    ) -> torch.Tensor:
        """Mean CE of the batch items' annotations under the omega-mixed noise model.

        Gathers use ``index_select`` rather than ``tensor[idx]``: on CPU the advanced-
        indexing kernel (and its index_put backward) was the largest op of a 1M-annotation
        fit, and index_select (backward: index_add) computes the same rows 3-5x faster.
        """
        cnt = t_counts.index_select(0, items_b)
        local = torch.repeat_interleave(torch.arange(len(items_b), device=cnt.device), cnt)
        # Position of each annotation in the item-sorted arrays: the item's CSR start plus
        # its rank inside the item's run.
        shift = (t_starts.index_select(0, items_b) - (torch.cumsum(cnt, 0) - cnt)).index_select(0, local)
        pos = shift + torch.arange(len(local), device=cnt.device)
        r = t_ann.index_select(0, pos)
        y = t_lab.index_select(0, pos)
        n_cls = logits.shape[1]
        p_items = softmax(logits, 1)  # (B, C)
        pi_g = softmax(net.w_common, 1)  # (C, C)
        pi_r = softmax(net.w_indiv, 2)  # (R, C, C)
        # sum_z p(z) pi^g[z, y]: one (B, C) x (C, C) product per item, then a gather per
        # annotation (cheaper than gathering a C-column of pi^g for every annotation).
        p_common = (p_items @ pi_g).reshape(-1).index_select(0, local * n_cls + y)  # (A_b,)
        # Column y of pi^r as a contiguous row of the (R*C, C) table of transposed matrices:
        # a row gather whose backward is one index_add (advanced indexing with a middle
        # slice was the slowest op of a large-crowd step).
        cols = pi_r.transpose(1, 2).reshape(-1, n_cls).index_select(0, r * n_cls + y)  # (A_b, C)
        p_indiv = (p_items.index_select(0, local) * cols).sum(1)
        w = net.omega_batch(x, local, r, ann_feats)
        p_y = w * p_common + (1.0 - w) * p_indiv
        ce = -torch.log(p_y + EPS).mean()
        # Section 2.1.4: minus lambda * sum_r ||W^g - W^r||_2 keeps the two layers apart.
        reg: torch.Tensor = torch.linalg.matrix_norm(  # torch.linalg is typed as returning Any
            net.w_common.unsqueeze(0) - net.w_indiv
        ).sum()
        return ce - reg_lambda * reg

    def _holdout_mask(self, a_item: np.ndarray, starts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(A,) bool over the item-sorted annotations: those kept out of training to choose
        tau. Never an item's first annotation, so every labelled item keeps a training label;
        all False when too few would be held out to choose tau."""
        held = np.zeros(len(a_item), dtype=bool)
        if self.holdout <= 0.0:
            return held
        eligible = np.ones(len(a_item), dtype=bool)
        eligible[starts[np.bincount(a_item, minlength=len(starts)) > 0]] = False
        held = eligible & (rng.random(len(a_item)) < float(self.holdout))
        if held.sum() < _MIN_HELD_OUT:
            held[:] = False
        return held

    # ------------------------------------------------------------------ schedule
    def _schedule(self, n_labelled: int) -> tuple[int, int]:
        steps_per_epoch = max(1, math.ceil(n_labelled / self._batch_size(n_labelled)))
        if self.epochs is not None:
            epochs = int(self.epochs)
        else:
            epochs = int(np.clip(round(self.target_steps / steps_per_epoch), 5, 200))
        if self.init_method != "ds":
            return epochs, 0
        pre = max(1, epochs // 4) if self.pretrain_epochs is None else int(self.pretrain_epochs)
        return epochs, pre

    def _weight_decay(self, n_inputs: int, n_labelled: int) -> float:
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return weight_decay_rule(n_inputs, n_labelled)

    def _batch_size(self, n: int) -> int:
        if self.batch_size is not None:
            return int(self.batch_size)
        return int(np.clip(n // 16, 32, 4096))

    # ------------------------------------------------------------------ warm start
    def _warm_items(
        self, data: CrowdData, prev: CoNAL, counts: np.ndarray, labelled: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Items whose annotations changed (new item or new count) + a replay sample."""
        old_counts = np.full(data.n_items, -1, dtype=np.int64)
        new_pos, old_pos = match_items(prev.items_, data.items)
        old_counts[new_pos] = prev.item_counts_[old_pos]
        changed = labelled[counts[labelled] != old_counts[labelled]]
        rest = np.setdiff1d(labelled, changed, assume_unique=True)
        n_replay = round(self.warm_replay * len(rest))
        replay = rng.choice(rest, size=n_replay, replace=False) if n_replay else rest[:0]
        out = np.sort(np.concatenate([changed, replay]))
        return out if len(out) >= 2 else labelled

    def _copy_from(self, net: CoNALNet, prev: CoNAL, data: CrowdData) -> None:
        """Copy parameters from ``prev`` matching items, annotators and classes BY ID."""
        old = prev._net
        if old is None:
            raise ValueError("init CoNAL has no network state (was it fitted?)")
        c_new, c_old = match_ids(prev.classes_, data.classes)
        r_new, r_old = match_ids(prev.annotators_, data.annotators)
        with torch.no_grad():
            same_classes = len(c_new) == len(data.classes) == len(prev.classes_) and (c_new == c_old).all()
            # Noise layers: matched (class, class) cells of matched annotators.
            wc = net.w_common.clone()
            wc[np.ix_(c_new, c_new)] = old.w_common[np.ix_(c_old, c_old)]
            net.w_common.copy_(wc)
            if len(r_new):
                wi = net.w_indiv.clone()
                sub = old.w_indiv[r_old][:, c_old][:, :, c_old]
                wi[
                    torch.from_numpy(r_new)[:, None, None],
                    torch.from_numpy(c_new)[None, :, None],
                    torch.from_numpy(c_new)[None, None, :],
                ] = sub
                net.w_indiv.copy_(wi)
            net.omega_scale.copy_(old.omega_scale)
            net.omega_bias.copy_(old.omega_bias)
            # Auxiliary network.
            if type(net.annotator_proj) is type(old.annotator_proj):
                if isinstance(net.annotator_proj, nn.Embedding):
                    if len(r_new):
                        net.annotator_proj.weight[r_new] = old.annotator_proj.weight[r_old]
                elif net.annotator_proj.weight.shape == old.annotator_proj.weight.shape:
                    net.annotator_proj.load_state_dict(old.annotator_proj.state_dict())
            same_input = net.instance_proj.weight.shape == old.instance_proj.weight.shape
            if same_input:
                net.instance_proj.load_state_dict(old.instance_proj.state_dict())
                # Classifier: all layers but the output copy as is; output rows by class id.
                for k in range(4):
                    net.classifier[k].load_state_dict(old.classifier[k].state_dict())
                # The output layer: CoNALNet builds index 4 as an nn.Linear.
                out_new, out_old = cast(nn.Linear, net.classifier[4]), cast(nn.Linear, old.classifier[4])
                if same_classes:
                    out_new.load_state_dict(out_old.state_dict())
                else:
                    out_new.weight[c_new] = out_old.weight[c_old]
                    out_new.bias[c_new] = out_old.bias[c_old]
            if net.item_embedding is not None and old.item_embedding is not None and same_input:
                i_new, i_old = match_items(prev.items_, data.items)
                if len(i_new):
                    net.item_embedding.weight[i_new] = old.item_embedding.weight[i_old]


def shifted_progress(progress: ProgressFn, offset: int) -> ProgressFn:
    """``progress`` with ``offset`` epochs (the probes') added to the epoch and the total."""

    def call(epoch: int, total: int, loss: float) -> None:
        report_progress(progress, offset + epoch, offset + total, loss)

    return call


def weight_decay_rule(n_inputs: int, n_labelled: int) -> float:
    """The classifier's L2 from the data shape: 0.04 (D / N)^2 clipped to [1e-3, 1e-2].

    D = input width, N = labelled items: the more inputs per item, the easier the hidden
    layer memorises the noisy labels, so the stronger the decay.
    """
    ratio = n_inputs / max(n_labelled, 1)
    return float(np.clip(0.04 * ratio * ratio, 1e-3, 1e-2))


def match_items(old_ids: tuple[str, ...], new_ids: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``match_ids`` with a fast path: live refits usually keep the item list unchanged or
    only append to it, and a prefix compare avoids a Python loop over 300k ids."""
    n = len(old_ids)
    if len(new_ids) >= n and new_ids[:n] == old_ids:
        idx = np.arange(n, dtype=np.int64)
        return idx, idx
    return match_ids(old_ids, new_ids)
