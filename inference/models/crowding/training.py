"""CrowdInG's training loop: pre-training (through a CoNAL fit, or DL-CL), the generator's
and the D/Q pre-training, the adversarial CrowdInG epochs with their CRM updates, and
warm starts.

``CrowdInGTraining`` is a mixin of ``CrowdInG`` (``model.py``), which holds the
hyper-parameters these methods read; it has no state of its own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from inference.data import CrowdData
from inference.models._crowding_ops import (
    entropy,
    lca_adjacency,
    sample_candidate_pairs,
    select_by_entropy,
)
from inference.models._torch import fit_inputs
from inference.models.base import CrowdModel, ProgressFn, match_ids, report_progress
from inference.models.conal import CoNAL
from inference.models.conal.training import weight_decay_rule
from inference.models.crowding.network import EPS, CrowdInGNet
from inference.models.noise import (
    ds_init,
    mixture_likelihood,
    shrink_confusions,
)

if TYPE_CHECKING:  # the mixin's host class, which imports this module
    from inference.models.crowding.model import CrowdInG

__all__ = ["CrowdInGTraining", "FitTensors", "repeat_share"]


class CrowdInGTraining(CrowdModel):
    """The fitting methods of ``CrowdInG``."""

    # What these methods read from their host, declared for the type checker. Bare
    # annotations on a plain (non-dataclass) class add no dataclass field and no class
    # attribute: ``CrowdInG``'s fields and ``__post_init__`` still hold every value, and
    # the MRO (CrowdInG, this mixin, CrowdInGPosterior, CrowdModel) is the one before.
    pretrain: Literal["conal", "dlcl"]
    pretrain_epochs: int | None
    pretrain_steps: int
    soft_epochs: float
    gd_pretrain_epochs: int
    crowding_epochs: int
    inner_steps: int
    batch_size: int | None
    lr: float
    lr_classifier: float
    lr_generator: float
    lr_discriminator: float
    lr_crowd_layer: float
    weight_decay: float | None
    label_weight: float | None
    hidden: int
    dropout: float
    item_embedding_dim: int
    omega_dim: int
    noise_dim: int
    lca: bool
    reg_lambda: float
    t: float
    mu: float | None
    ratio_clip: float
    disc_l2: float
    classifier_anchor: float
    generator_anchor: float
    candidate_factor: float
    max_pairs: int
    shrinkage: float
    warm_pretrain_epochs: int
    warm_crowding_epochs: int
    warm_lr_scale: float
    seed: int
    device: str
    num_threads: int
    # Fit state (set in ``CrowdInG.__post_init__`` and by the fit).
    _net: CrowdInGNet | None
    _tau: float | None
    _noise_tables: tuple[np.ndarray, np.ndarray] | None
    _progress_offset: int
    item_counts_: np.ndarray
    lca_adjacency_: np.ndarray
    feature_mean_: np.ndarray | None
    feature_scale_: np.ndarray | None

    if TYPE_CHECKING:
        # Defined by the host (``CrowdInG``) and by the sibling mixin ``CrowdInGPosterior``,
        # which comes AFTER this class in the MRO: a real stub here would shadow its
        # ``_finalise``, so these exist for the type checker only.
        def _build_net(
            self,
            *,
            n_items: int,
            n_features: int,
            n_annotators: int,
            n_annotator_features: int,
            n_classes: int,
            adjacency: np.ndarray,
        ) -> CrowdInGNet: ...

        def _finalise(
            self,
            data: CrowdData,
            net: CrowdInGNet,
            t: FitTensors,
            n_per_ann: np.ndarray,
            rng: np.random.Generator,
            gen: torch.Generator,
        ) -> None: ...

    def _fit(self, data: CrowdData, prev: CrowdInG | None, progress: ProgressFn | None) -> None:
        t0 = self._start_fit(data)
        rng = np.random.default_rng(int(self.seed))
        gen = torch.Generator().manual_seed(int(self.seed))
        dev = torch.device(self.device)
        n_items, n_ann, n_cls = data.n_items, data.n_annotators, data.n_classes

        # --- features (standardised; a warm start keeps the previous scaler)
        x_all, n_features, ann_feats = fit_inputs(self, data, prev, dev)

        a_item = np.asarray(data.item_idx, np.int64)
        a_ann = np.asarray(data.annotator_idx, np.int64)
        a_lab = np.asarray(data.label_idx, np.int64)
        counts = np.bincount(a_item, minlength=n_items)
        self.item_counts_ = counts.astype(np.int64)
        labelled = np.nonzero(counts > 0)[0]
        n_per_ann = np.bincount(a_ann, minlength=n_ann).astype(np.int64)
        self.lca_adjacency_ = lca_adjacency(data) if self.lca else np.eye(n_cls)

        net = self._build_net(
            n_items=n_items,
            n_features=n_features,
            n_annotators=n_ann,
            n_annotator_features=0 if ann_feats is None else ann_feats.shape[1],
            n_classes=n_cls,
            adjacency=self.lca_adjacency_,
        ).to(dev)

        warm = prev is not None and self._copy_from(net, prev, data)
        if prev is not None and not warm:
            self.fit_mode_, self.cold_n_annotations_, self.cold_n_items_ = "cold", data.n_annotations, data.n_items
            self.fit_reason_ = "the previous network does not match this crowd's shape"
        # A warm refit fine-tunes a converged network with FRESH Adam states, whose first
        # steps move every weight by about the learning rate: at the cold fit's rate that
        # undid CoNAL's fit (see CoNAL.warm_lr_scale), so every rate is scaled down.
        lr_scale = float(self.warm_lr_scale) if warm else 1.0
        conal_losses: list[float] = []
        self._noise_tables = None
        # tau of the posterior: given, else CoNAL's held-out choice (set by the
        # pre-training), else the previous fit's on a warm refit, else None (1 + calibration).
        self._tau = None if self.label_weight is None else float(self.label_weight)
        self._progress_offset = 0
        if self._tau is None and prev is not None and warm:
            self._tau = getattr(prev, "label_weight_", None)
        wd = self._weight_decay(n_features or int(self.item_embedding_dim), len(labelled))
        if not warm and self.pretrain == "conal":
            # Section 2.2.5's "classifier pre-trained with a crowd layer", done by CoNAL
            # (a crowd-layer model: common + individual noise layers) through its public
            # API, so CrowdInG starts where CoNAL ends and inherits its improvements.
            n_gd, n_crowd = int(self.gd_pretrain_epochs), int(self.crowding_epochs)
            soft, conal_losses = self._pretrain_with_conal(net, data, progress, n_gd + n_crowd)
            n_pre = n_soft = 0
        elif not warm:
            soft, conf, _ = ds_init(a_item, a_ann, a_lab, n_items, n_ann, n_cls)
            with torch.no_grad():
                net.w_crowd.copy_(torch.from_numpy(np.log(conf)).float())
            n_pre = self._pretrain_epochs(len(labelled))
            n_soft = math.floor(self.soft_epochs * n_pre)
            n_gd, n_crowd = int(self.gd_pretrain_epochs), int(self.crowding_epochs)
        else:
            soft = np.full((n_items, n_cls), 1.0 / n_cls)  # only the soft epochs read it
            n_pre, n_soft = int(self.warm_pretrain_epochs), 0
            n_gd, n_crowd = 0, int(self.warm_crowding_epochs)

        t = FitTensors(
            x_all=x_all,
            ann_feats=ann_feats,
            a_item=torch.from_numpy(a_item).to(dev),
            a_ann=torch.from_numpy(a_ann).to(dev),
            a_lab=torch.from_numpy(a_lab).to(dev),
            soft=torch.from_numpy(soft.astype(np.float32)).to(dev),
            labelled=torch.from_numpy(labelled).to(dev),
            anchor_lik=None
            if self._noise_tables is None
            else torch.from_numpy(self._noise_tables[0].astype(np.float32)).to(dev),
        )
        # CoNAL's epochs count as the pre-training (history and progress start after them).
        self.loss_history_ = list(conal_losses)
        epoch = len(conal_losses)
        total = epoch + n_pre + n_gd + n_crowd

        # --- 1. DL-CL pre-training of the classifier (+ crowd layer)
        opt_pre = torch.optim.Adam(
            [
                {"params": net.classifier_params(), "weight_decay": wd},
                {"params": [net.w_crowd], "weight_decay": 0.0},
            ],
            lr=float(self.lr) * lr_scale,
        )
        batch = self._batch_size(len(labelled))
        # CSR layout of annotations by item, to gather a batch's annotations without a loop.
        csr = t.csr
        for ep in range(n_pre):
            net.train()
            perm = t.labelled[torch.randperm(len(t.labelled), generator=gen)]
            tot_loss, seen = 0.0, 0
            for s in range(0, len(perm), batch):
                items_b = perm[s : s + batch]
                if len(items_b) < 2:
                    continue  # BatchNorm needs two rows
                logits = net.classifier(net.inputs(items_b, x_all))
                if ep < n_soft:
                    loss = -(t.soft[items_b] * F.log_softmax(logits, 1)).sum(1).mean()
                else:
                    pos = _gather_annotations(items_b, *csr)
                    local = _local_index(items_b, csr[2])
                    zhat = torch.softmax(logits, 1)[local]
                    loss = -torch.log(net.crowd_probs(zhat, t.a_ann[pos], t.a_lab[pos]) + EPS).mean()
                opt_pre.zero_grad(set_to_none=True)
                # What Tensor.backward calls, spelled so: torch leaves Tensor.backward unannotated.
                torch.autograd.backward(loss)
                opt_pre.step()
                tot_loss += float(loss.detach()) * len(items_b)
                seen += len(items_b)
            epoch += 1
            self._log(progress, epoch, total, tot_loss / max(seen, 1))

        # --- 2 and 3. generator / discriminator pre-training, then CrowdInG epochs
        # Data-shape rule (see lr_classifier): near-zero classifier steps when items carry
        # about one label each (sparse crowds), close to lr_classifier with many labels.
        lr_c = float(self.lr_classifier) * repeat_share(len(a_item), len(labelled)) ** 2 * lr_scale
        opt_c = torch.optim.Adam(net.classifier_params(), lr=lr_c, weight_decay=wd)
        # The crowd layer has its own rate (default 0: kept as pre-trained). Fitting it to
        # the real annotations alone during these epochs moved it off CoNAL's common /
        # individual split and cost about 0.5 points on the synthetic crowd at 0 % removal.
        groups: list[dict[str, Any]] = [
            {"params": [p for p in net.generator_params() if p is not net.w_crowd], "weight_decay": wd}
        ]
        if float(self.lr_crowd_layer) > 0:
            groups.append({"params": [net.w_crowd], "weight_decay": 0.0, "lr": float(self.lr_crowd_layer) * lr_scale})
        else:
            net.w_crowd.requires_grad_(False)
        opt_g = torch.optim.Adam(groups, lr=float(self.lr_generator) * lr_scale)
        opt_d = torch.optim.Adam(net.discriminator_params(), lr=float(self.lr_discriminator) * lr_scale)
        opt_q = torch.optim.Adam(net.q_params(), lr=float(self.lr_discriminator) * lr_scale)
        n_pairs = int(min(self.max_pairs, max(64, round(self.candidate_factor * len(a_item)))))
        for ep in range(n_gd + n_crowd):
            crowding = ep >= n_gd
            nll = self._adversarial_epoch(
                net, t, n_per_ann, n_pairs, rng, gen, opt_c, opt_g, opt_d, opt_q, crowding=crowding
            )
            epoch += 1
            self._log(progress, epoch, total, nll)

        net.w_crowd.requires_grad_(True)  # frozen only for the epochs above
        self._net = net
        self.n_epochs_ = total
        self._finalise(data, net, t, n_per_ann, rng, gen)
        self.fit_seconds_ = time.perf_counter() - t0

    def _pretrain_with_conal(
        self, net: CrowdInGNet, data: CrowdData, progress: ProgressFn | None, n_after: int
    ) -> tuple[np.ndarray, list[float]]:
        """Fit a CoNAL with this model's classifier hyper-parameters and start from it.

        Copies its classifier (same layers) and, per annotator r, its omega-mixed confusion
        w_r pi^g + (1 - w_r) pi^r (w_r: r's mean omega over its annotations; (R, C, C))
        into the crowd layer, whose softmax rows it becomes. Returns CoNAL's posterior
        (N, C) and its loss per epoch; ``progress`` sees CoNAL's epochs as the first of
        theirs + ``n_after``. CoNAL keeps its own weight decay and schedule: on LabelMe at 60 % removal,
        forcing CrowdInG's stronger decay rule onto it cost 3 points (BENCHMARKS.md).
        """
        conal = CoNAL(
            epochs=None if self.pretrain_epochs is None else int(self.pretrain_epochs),
            lr=float(self.lr),
            hidden=int(self.hidden),
            dropout=float(self.dropout),
            item_embedding_dim=int(self.item_embedding_dim),
            embedding_dim=int(self.omega_dim),
            shrinkage=float(self.shrinkage),
            seed=int(self.seed),
            device=self.device,
            num_threads=int(self.num_threads),
        )

        reported = [0]

        def conal_progress(epoch: int, total: int, loss: float) -> None:
            reported[0] = epoch
            report_progress(progress, epoch, total + n_after, loss)

        conal.fit(data, progress=conal_progress)
        # CoNAL reports its tau probes' epochs before its own; ours continue after them.
        self._progress_offset = max(0, reported[0] - len(conal.loss_history_))
        # The fitted network itself: CoNAL exposes no public weights accessor, and its
        # classifier is the part CrowdInG shares (same package, same layer list).
        src = conal._net
        if src is None or conal.common_confusion_ is None or conal.annotator_omega_ is None or conal.omega_ is None:
            raise ValueError("the CoNAL pre-training left no network")  # pragma: no cover
        # A crowd layer that is to be trained (lr_crowd_layer > 0) is the generator's base
        # and the anchor's noise model; else CoNAL's pair-wise model, fixed, is both.
        fixed_noise = float(self.lr_crowd_layer) == 0
        omega = np.asarray(conal.annotator_omega_, np.float64)[:, None, None]
        mixed = omega * conal.common_confusion_[None] + (1.0 - omega) * conal.confusions_
        with torch.no_grad():
            # Same layer list (Linear, BatchNorm, ReLU, dropout, Linear): the state dicts
            # share their keys, and a CoNAL whose classifier changed shape fails loudly here.
            net.classifier.load_state_dict(src.classifier.state_dict())
            if net.item_embedding is not None and src.item_embedding is not None:
                net.item_embedding.weight.copy_(src.item_embedding.weight)
            net.w_crowd.copy_(torch.from_numpy(np.log(np.clip(mixed, EPS, None))).float())
            # CoNAL's pair-wise noise model becomes the generator's fixed base (noise_base).
            net.mix_inst.load_state_dict(src.instance_proj.state_dict())
            net.mix_ann.load_state_dict(src.annotator_proj.state_dict())
            net.mix_scale.copy_(src.omega_scale.detach())
            net.mix_bias.copy_(src.omega_bias.detach())
            net.mix_common.copy_(torch.from_numpy(np.asarray(conal.common_confusion_, np.float32)))
            net.mix_indiv.copy_(torch.from_numpy(np.asarray(conal.confusions_, np.float32)))
            net.use_mixture.fill_(fixed_noise)
        # CoNAL's own noise model per annotation, omega_a pi^g + (1 - omega_a) pi^r: the
        # classifier anchor (unshrunk, as CoNAL trains) and the posterior (pi^r shrunk
        # toward pi^g, as CoNAL aggregates) use it while the crowd layer stays fixed.
        # Anchoring through the per-annotator average of omega instead moved the
        # classifier off CoNAL's optimum (synthetic crowd, 60 % removal: -1.6 points).
        self._noise_tables = None
        if fixed_noise:
            w = np.asarray(conal.omega_, np.float64)
            pi_g, pi_r = conal.common_confusion_, conal.confusions_
            r, y = np.asarray(data.annotator_idx), np.asarray(data.label_idx)
            pi_s = shrink_confusions(pi_r, pi_g, np.bincount(r, minlength=data.n_annotators), float(self.shrinkage))
            self._noise_tables = (mixture_likelihood(pi_g, pi_r, w, r, y), mixture_likelihood(pi_g, pi_s, w, r, y))
        if self._tau is None:
            # CoNAL (since its label-weight change) chooses tau on held-out annotations;
            # an older CoNAL without it leaves CrowdInG's own calibration in charge.
            inherited = getattr(conal, "label_weight_", None)
            self._tau = None if inherited is None else float(inherited)
        return np.asarray(conal.posterior_probas_, np.float64), list(conal.loss_history_)

    def _log(self, progress: ProgressFn | None, epoch: int, total: int, loss: float) -> None:
        self.loss_history_.append(float(loss))
        off = self._progress_offset
        report_progress(progress, epoch + off, total + off, loss)

    # ------------------------------------------------------------------ one adversarial epoch
    def _adversarial_epoch(
        self,
        net: CrowdInGNet,
        t: FitTensors,
        n_per_ann: np.ndarray,
        n_pairs: int,
        rng: np.random.Generator,
        gen: torch.Generator,
        opt_c: torch.optim.Optimizer,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        opt_q: torch.optim.Optimizer,
        *,
        crowding: bool,
    ) -> float:
        """One epoch: log from G0, train D/Q on selected annotations, then update G and C.

        Before ``crowding`` (pre-training) G only fits the real annotations and C is fixed.
        Returns the negative log-likelihood of the real annotations under the generator.
        """
        n_items = len(t.soft)
        n_ann = len(n_per_ann)
        steps = int(self.inner_steps)
        x_every = net.inputs(torch.arange(n_items, device=t.a_item.device), t.x_all).detach()

        # Logging policy G0: classifier (eval mode) + current generator, no gradients.
        net.eval()
        with torch.no_grad():
            zhat_all = net.classify(x_every)
        ent_c = entropy(zhat_all.double().numpy()) / math.log(zhat_all.shape[1])
        p_it, p_an = sample_candidate_pairs(n_items, n_ann, t.a_item.numpy(), t.a_ann.numpy(), n_pairs, rng)
        pi = torch.from_numpy(p_it)
        pr = torch.from_numpy(p_an)
        pr_in = pr if t.ann_feats is None else t.ann_feats[pr]
        eps = self._noise(len(pi), gen)
        with torch.no_grad():
            g0 = net.generate(x_every[pi], pr_in, pr, eps, zhat_all[pi]).clamp_min(EPS)
            y = torch.multinomial(g0, 1, generator=gen).squeeze(1)
            p0 = g0[torch.arange(len(y)), y]
        sel = torch.from_numpy(select_by_entropy(p_an, entropy(g0.double().numpy()), n_per_ann, rng))

        # Real annotations (a sample of at most n_pairs when the crowd is large).
        n_real = len(t.a_item)
        real = torch.arange(n_real) if n_real <= n_pairs else torch.randperm(n_real, generator=gen)[:n_pairs]
        ri, rr, ry = t.a_item[real], t.a_ann[real], t.a_lab[real]
        rr_in = rr if t.ann_feats is None else t.ann_feats[rr]

        # --- discriminator and Q: real (1) vs selected generated (0)
        net.train()
        si, sy = pi[sel], y[sel]
        sr_in = pr_in[sel]
        target = torch.cat([torch.ones(len(ri)), torch.zeros(len(si))])
        for _ in range(steps):
            u, v = net.encode(torch.cat([x_every[ri], x_every[si]]), torch.cat([rr_in, sr_in]))
            logits_all = net.disc_logits(u, v)
            labels = torch.cat([ry, sy])
            logit = logits_all[torch.arange(len(labels)), labels]
            loss_d = F.binary_cross_entropy_with_logits(logit, target) + float(self.disc_l2) * logits_all.pow(2).mean()
            opt_d.zero_grad(set_to_none=True)
            torch.autograd.backward(loss_d)
            opt_d.step()
            if len(si):
                us, vs = u[len(ri) :], v[len(ri) :]
                logq = net.q_log_probs(us, vs, sy)
                loss_q = -(zhat_all[si] * logq).sum(1).mean()
                opt_q.zero_grad(set_to_none=True)
                torch.autograd.backward(loss_q)
                opt_q.step()

        # --- losses of the logged annotations with D and Q fixed
        with torch.no_grad():
            u, v = net.encode(x_every[pi], pr_in)
            d_y = torch.sigmoid(net.disc_logits(u, v)[torch.arange(len(y)), y])
            loss_g_signal = torch.log1p(-d_y.clamp(max=1 - 1e-6))  # L_G = log(1 - D(y))
            info = (zhat_all[pi] * net.q_log_probs(u, v, y)).sum(1)  # L_I up to H(z^)
            delta = loss_g_signal - float(self.reg_lambda) * info

        low = torch.from_numpy(ent_c[p_it] < float(self.t))
        nll_value = 0.0
        # --- generator: Eq. (2.12) on low-entropy items (+ anchor); pre-training: anchor only
        for _ in range(steps):
            loss = self._anchor_generator(net, x_every, zhat_all, ri, rr, rr_in, ry, gen)
            nll_value = float(loss.detach())
            loss = float(self.generator_anchor if crowding else 1.0) * loss
            if crowding and bool(low.any()):
                idx = torch.nonzero(low).squeeze(1)
                # eps is None with noise_dim=0 (a generator without noise input).
                eps_idx = None if eps is None else eps[idx]
                g = net.generate(x_every[pi[idx]], pr_in[idx], pr[idx], eps_idx, zhat_all[pi[idx]])
                ratio = (g[torch.arange(len(idx)), y[idx]] / p0[idx]).clamp(max=float(self.ratio_clip))
                d = delta[idx]
                base = d.mean() if self.mu is None else float(self.mu)
                loss = loss + ((d - base) * ratio).mean()
            opt_g.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            opt_g.step()

        # --- classifier: Eq. (2.13) on the other items with the updated generator (+ anchor)
        if crowding:
            high = torch.nonzero(~low).squeeze(1)
            lab_items = t.labelled
            for _ in range(steps):
                net.train()
                # BatchNorm keeps the statistics of the pre-training: the CRM rows are the
                # high-entropy items only (repeated once per sampled annotator), and
                # updating the running statistics from them shifts the eval-mode classifier.
                for mod in net.classifier.modules():
                    if isinstance(mod, nn.BatchNorm1d):
                        mod.eval()
                batch_items = lab_items[
                    torch.randperm(len(lab_items), generator=gen)[: self._batch_size(len(lab_items))]
                ]
                loss = torch.zeros(())
                if len(batch_items) >= 2 and self.classifier_anchor > 0:
                    loss = float(self.classifier_anchor) * self._anchor_classifier(net, t, batch_items)
                if len(high) >= 2:
                    zh = net.classify(x_every[pi[high]] if net.item_embedding is None else net.inputs(pi[high], None))
                    eps_high = None if eps is None else eps[high]
                    g = net.generate(x_every[pi[high]], pr_in[high], pr[high], eps_high, zh)
                    ratio = (g[torch.arange(len(high)), y[high]] / p0[high]).clamp(max=float(self.ratio_clip))
                    d = loss_g_signal[high]
                    base = d.mean() if self.mu is None else float(self.mu)
                    loss = loss + ((d - base) * ratio).mean()
                if loss.requires_grad:
                    opt_c.zero_grad(set_to_none=True)
                    opt_g.zero_grad(set_to_none=True)
                    torch.autograd.backward(loss)
                    opt_c.step()  # the generator is fixed here: only C steps
        return nll_value

    def _noise(self, n: int, gen: torch.Generator) -> torch.Tensor | None:
        if int(self.noise_dim) == 0:
            return None
        return torch.randn(n, int(self.noise_dim), generator=gen)

    def _anchor_generator(
        self,
        net: CrowdInGNet,
        x_every: torch.Tensor,
        zhat_all: torch.Tensor,
        ri: torch.Tensor,
        rr: torch.Tensor,
        rr_in: torch.Tensor,
        ry: torch.Tensor,
        gen: torch.Generator,
    ) -> torch.Tensor:
        """NLL of the real annotations under G (classifier output fixed)."""
        g = net.generate(x_every[ri], rr_in, rr, self._noise(len(ri), gen), zhat_all[ri])
        return -torch.log(g[torch.arange(len(ry)), ry] + EPS).mean()

    def _anchor_classifier(self, net: CrowdInGNet, t: FitTensors, items_b: torch.Tensor) -> torch.Tensor:
        """NLL of the batch items' real annotations through the crowd layer, or through the
        fixed pre-trained noise model when there is one (``t.anchor_lik``); classifier trained."""
        order, starts, counts = t.csr
        pos = _gather_annotations(items_b, order, starts, counts)
        local = _local_index(items_b, counts)
        zhat = net.classify(net.inputs(items_b, t.x_all))[local]
        if t.anchor_lik is not None:
            return -torch.log((zhat * t.anchor_lik[pos]).sum(1) + EPS).mean()
        return -torch.log(net.crowd_probs(zhat, t.a_ann[pos], t.a_lab[pos]) + EPS).mean()

    # ------------------------------------------------------------------ schedule
    def _pretrain_epochs(self, n_labelled: int) -> int:
        if self.pretrain_epochs is not None:
            return int(self.pretrain_epochs)
        steps_per_epoch = max(1, math.ceil(n_labelled / self._batch_size(n_labelled)))
        return int(np.clip(round(self.pretrain_steps / steps_per_epoch), 5, 100))

    def _weight_decay(self, n_inputs: int, n_labelled: int) -> float:
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return weight_decay_rule(n_inputs, n_labelled)  # CoNAL's rule: one data-shape rule

    def _batch_size(self, n: int) -> int:
        if self.batch_size is not None:
            return int(self.batch_size)
        return int(np.clip(n // 16, 32, 1024))

    # ------------------------------------------------------------------ warm start
    def _copy_from(self, net: CrowdInGNet, prev: CrowdInG, data: CrowdData) -> bool:
        """Copy ``prev``'s parameters, annotator- and item-indexed rows matched BY ID.

        Returns False (start fresh) when the classes or the input width differ: the class
        axis appears in most tensors and a partial copy would mix meanings.
        """
        old = prev._net
        if old is None:
            raise ValueError("init CrowdInG has no network state (was it fitted?)")
        if tuple(prev.classes_) != tuple(data.classes):
            return False
        new_state = net.state_dict()
        old_state = old.state_dict()
        if any(k not in old_state for k in new_state):
            return False
        by_annotator = {"w_crowd", "mix_indiv"}
        if net.n_annotator_features == 0:
            by_annotator |= {"g_r.weight", "d_u.weight", "mix_ann.weight"}
        r_new, r_old = match_ids(prev.annotators_, data.annotators)
        i_new, i_old = match_ids(prev.items_, data.items)
        for key, value in new_state.items():
            src = old_state[key]
            if key == "adjacency":
                continue  # recomputed from the current crowd
            if key in by_annotator or key == "item_embedding.weight":
                dst_pos, src_pos = (i_new, i_old) if key == "item_embedding.weight" else (r_new, r_old)
                if src.shape[1:] != value.shape[1:]:
                    return False
                if len(dst_pos):
                    value[torch.from_numpy(dst_pos)] = src[torch.from_numpy(src_pos)]
            elif src.shape == value.shape:
                value.copy_(src)
            else:
                return False
        # An annotator new to this refit starts at the common confusion (its own rows
        # would otherwise be the uniform initial ones in the generator's noise base).
        new_rows = np.setdiff1d(np.arange(len(data.annotators)), r_new)
        if len(new_rows):
            new_state["mix_indiv"][torch.from_numpy(new_rows)] = new_state["mix_common"]
        net.load_state_dict(new_state)
        return True


@dataclass
class FitTensors:
    """The crowd as tensors, built once per fit."""

    x_all: torch.Tensor | None
    ann_feats: torch.Tensor | None
    a_item: torch.Tensor
    a_ann: torch.Tensor
    a_lab: torch.Tensor
    soft: torch.Tensor
    labelled: torch.Tensor
    # (A, C) p(y_a | z) of the pre-trained noise model per annotation, when it is kept
    # fixed (CoNAL pre-training, lr_crowd_layer=0); None: the crowd layer's.
    anchor_lik: torch.Tensor | None = None

    def __post_init__(self) -> None:
        a_item = self.a_item.numpy()
        counts = np.bincount(a_item, minlength=len(self.soft))
        order = np.argsort(a_item, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.csr = (torch.from_numpy(order), torch.from_numpy(starts), torch.from_numpy(counts))


def repeat_share(n_annotations: int, n_labelled: int) -> float:
    """Share of the annotations that are not their item's first, (A - N_labelled) / A, in
    [0, 1): 0 with one label per item, toward 1 with many. Scales the classifier's step in
    the CrowdInG epochs: only items with two or more labels carry disagreement that the
    CRM / anchor signal can add to a classifier pre-trained on the same labels."""
    if n_annotations <= 0:
        return 0.0
    return max(0.0, (n_annotations - n_labelled) / n_annotations)


def _local_index(items_b: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Batch row of each gathered annotation (aligned with :func:`_gather_annotations`)."""
    cnt = counts[items_b]
    return torch.repeat_interleave(torch.arange(len(items_b)), cnt)


def _gather_annotations(
    items_b: torch.Tensor, order: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    """Positions (in the original annotation order) of the batch items' annotations."""
    cnt = counts[items_b]
    local = torch.repeat_interleave(torch.arange(len(items_b)), cnt)
    offs = torch.cumsum(cnt, 0) - cnt
    sorted_pos = starts[items_b][local] + (torch.arange(len(local)) - offs[local])
    return order[sorted_pos]
