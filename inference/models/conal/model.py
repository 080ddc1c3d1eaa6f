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

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import numpy as np
import torch

from inference.data import CrowdData
from inference.models._torch import net_checkpoint, scaled_new_features, torch_fit_context
from inference.models.base import CrowdModel, ProgressFn, check_warm_policy
from inference.models.conal.network import CoNALNet
from inference.models.conal.posterior import CoNALPosterior
from inference.models.conal.training import CoNALTraining, shifted_progress
from inference.models.noise import np_softmax

__all__ = ["CoNAL"]


@dataclass(eq=False)
class CoNAL(CoNALTraining, CoNALPosterior, CrowdModel):
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
            raise ValueError(f"aggregate must be one of 'posterior', 'classifier'; got {self.aggregate!r}")
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
        self._net: CoNALNet | None = None
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
            main_progress = None if progress is None else shifted_progress(progress, done)
            # _plan_start returns init or None, and init passed _check_init: a CoNAL.
            self._fit(data, cast(CoNAL | None, prev), main_progress, tau)
        return self

    # ------------------------------------------------------------------ prediction
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Classifier probabilities for new items from their raw (unscaled) features."""
        if self._net is None or not self.is_fitted:
            raise ValueError("CoNAL must be fitted before predict_proba()")
        t = scaled_new_features(self, features)
        net = self._net
        net.eval()
        with torch.no_grad():
            if len(t) == 0:
                return np.empty((0, len(self.classes_)), dtype=np.float64)
            return np_softmax(net.eval_logits(t).double().numpy(), 1)

    # ------------------------------------------------------------------ checkpoints
    def _extra_state(self) -> dict[str, Any]:
        return {} if self._net is None else net_checkpoint(self._net, n_items=len(self.items_))

    def _build_net(
        self, *, n_items: int, n_features: int, n_annotators: int, n_annotator_features: int, n_classes: int
    ) -> CoNALNet:
        """The network for these sizes and this model's hyper-parameters: one place
        for fit and for checkpoint loading, so the two cannot drift apart."""
        return CoNALNet(
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
