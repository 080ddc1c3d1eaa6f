"""CrowdInG: learning from crowds with informative generative augmentation (Chu & Wang,
KDD 2021; spec section 2.2).

The model (section 2.2.4):

* Generative module: the classifier P(z|x) (FC 128 + BatchNorm + ReLU + dropout 0.5 ->
  softmax, as CoNAL; a learned per-item embedding when there are no features) and the
  generator G(y | x, e_r, eps, z^) of Eq. (2.8). Our g is a fixed noise base plus a
  two-layer (64/128 hidden) network on (x, annotator, class code, eps ~ N(0, I)):

      G(y | x, r, eps, z^) = sum_z z^_z softmax_y( B(x, r)[z] + mlp(x, r, eps)[z] )

  where the base B is log(omega(x, r) pi^g + (1 - omega(x, r)) pi^r), CoNAL's noise model
  of the pair (common and individual confusion mixed by the instance-dependent omega),
  copied from the CoNAL pre-training; with ``pretrain="dlcl"`` or a trained crowd layer
  (``lr_crowd_layer > 0``) it is the crowd layer W_r instead. The generator is *linear in
  the classifier output z^* and, for each class code z, gives an instance-, annotator- and
  noise-dependent confusion row. Why: (1) with the last MLP layer initialised to zero, the
  generator starts exactly at the pre-trained noise model (the stable start section 2.2.5
  asks for);
  (2) the classifier's CRM gradient (Eq. 2.13) flows through z^ the same way the crowd
  layer's does; (3) feeding a one-hot z gives p(y | x, r, z), which the posterior
  aggregation below can use. The MLP's last layer scores every (z, y) cell at once.
* Discriminative module: D(y = c | x, e_r) = sigmoid(u_r^T M^_c v_n) (Eq. 2.9) with
  u_r = W_u e_r + b_u, v_n = W_v x_n + b_v and the LCA decoder
  M^_c = sum_c' [D^-1/2 (A + I) D^-1/2]_{c c'} M_c' W, where A is the label co-occurrence
  of the observed annotations (:func:`lca_adjacency`); an L2 penalty on D's logits keeps
  its outputs sparse. The auxiliary network Q(z^ | x, e_r, y) (Eq. 2.10) reuses D's
  encoders u_r, v_n (as fixed inputs) and a class embedding m_y of the flattened M^_y.

Training (section 2.2.5):

1. Pre-training of the classifier with a crowd layer. Default (``pretrain="conal"``): a
   CoNAL -- itself a crowd-layer model, common + individual noise layers mixed by omega --
   is fitted through its API with the same classifier hyper-parameters; its classifier is
   copied and its per-annotator omega-mixed confusions become the crowd layer W_r
   (R x C x C). CrowdInG thus starts where CoNAL ends (and inherits CoNAL's improvements)
   and its generative epochs add on top. Why not our own DL-CL pass: on the synthetic
   crowd (strong individual noise, instance-dependent common noise) a per-annotator crowd
   layer trained from a Dawid-Skene start stays in DS's label swaps that CoNAL's common
   layer and EM re-estimation get out of (12-17 points at 40-60 % removal, BENCHMARKS.md).
   ``pretrain="dlcl"`` keeps the earlier path: W_r from one vectorised Dawid-Skene pass,
   the classifier's first epochs fit the DS posterior, then cross-entropy through W_r.
2. Pre-training of the generator (likelihood of the observed annotations) and of D and Q
   (real vs. selected generated annotations).
3. CrowdInG epochs. The current generative module is the logging policy G0: candidate
   (item, annotator) pairs that no human labelled are sampled (all of them when N x R is
   small, else ``candidate_factor`` x the number of annotations, uniformly), G0 gives their
   annotation distribution and one annotation is drawn from it. Entropy-based selection
   (P proportional to 1/H(G0), the same count per annotator as its real labels) picks the
   generated annotations D and Q are trained on for ``inner_steps`` steps. Then, with D and
   Q fixed, every sampled annotation gets its loss delta = log(1 - D(y)) - lambda log Q(z^|y)
   and the two-step CRM update runs: pairs on items whose classifier entropy (normalised to
   [0, 1]) is below ``t`` update the generator by Eq. (2.12); the updated generator then
   scores the pairs on the remaining items to update the classifier by Eq. (2.13) (only
   the discriminator's signal log(1 - D(y))). The importance weight G_theta(y)/G0(y) is
   clipped at ``ratio_clip`` (POEM-style) and ``mu`` is the Lagrange baseline (``None``:
   the mean loss of the logged sample, which is the usual self-normalised choice).

Deviations that make it run, documented because the public code does not run as released:
the classifier and the generator keep an *anchor* term during the CrowdInG epochs -- the
DL-CL likelihood of the real annotations, weighted by ``classifier_anchor`` and
``generator_anchor``. Without it a few adversarial epochs on a 1,000-item crowd move the
classifier away from what the real labels say (the collapse of Figure 2.7b). The crowd
layer W_r itself stays as pre-trained in steps 2-3 (``lr_crowd_layer=0``); the generator's
MLP learns the instance- and noise-dependent part on top of it.

Aggregated labels (``aggregate``): "generator" (default) combines the classifier prior
with the item's own labels, log p(z | x) + tau sum_a log p(y_a | x, r_a, z), through the
generator's annotation model at eps = 0 (CoNAL's pair-wise noise base plus the residual
the generative epochs learned) and CoNAL's tau. "posterior" does the same through the
fixed noise model alone: with
the CoNAL pre-training, CoNAL's own per-annotation omega-mixed confusions (individual ones
shrunk toward the common one for annotators with few labels) and CoNAL's tau, chosen there
on held-out annotations; else the crowd-layer confusions shrunk toward the pooled one,
tau = 1 and a temperature-calibrated classifier (``calibrate``). "classifier" is the
classifier alone. Why "generator": it is the model CrowdInG learns, and with the pair-wise
base it is the one of the three that is above CoNAL on the synthetic crowd at 40 and 60 %
removal (+0.4 points, 3 seeds, where "posterior" is 0.02-0.07 below); BENCHMARKS.md has
every row, including the cell where it is not (Music at 60 %).

``generated_``: for every item with fewer than ``k`` human labels, ``k - n_i`` annotators
who did not label it are chosen by the same selection rule (P proportional to
1/H(G), among up to ``generate_candidates`` sampled non-labellers), each with the
generator's most likely label at eps = 0 and its probability. They are returned apart
from the human labels and never enter ``labels_``/``probas_``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import numpy as np
import torch

from inference.data import CrowdData
from inference.models._torch import net_checkpoint, scaled_new_features, torch_fit_context
from inference.models.base import CrowdModel, ProgressFn, check_warm_policy
from inference.models.crowding.network import CrowdInGNet
from inference.models.crowding.posterior import CrowdInGPosterior, softmax_rows
from inference.models.crowding.training import CrowdInGTraining

__all__ = ["CrowdInG", "GeneratedAnnotation"]


@dataclass(frozen=True)
class GeneratedAnnotation:
    """One annotation made up by the generator (never a human label)."""

    item: str
    annotator: str
    label: str
    probability: float


@dataclass(eq=False)
class CrowdInG(CrowdInGTraining, CrowdInGPosterior, CrowdModel):
    """CrowdInG on CPU, vectorised over sampled (item, annotator) pairs.

    Hyper-parameters (one set of defaults for every crowd; see BENCHMARKS.md):
      pretrain: "conal" (fit a CoNAL and start from its classifier and omega-mixed
        confusions) or "dlcl" (our own DS-started crowd-layer pre-training).
      pretrain_epochs: pre-training epochs over the labelled items (the CoNAL's ``epochs``
        for "conal"); ``None`` = CoNAL's own schedule, or for "dlcl" about
        ``pretrain_steps`` optimiser steps clipped to [5, 100].
      pretrain_steps: "dlcl" steps aimed at when ``pretrain_epochs`` is None.
      soft_epochs: "dlcl": share of the pre-training spent fitting the DS posterior first.
      gd_pretrain_epochs: generator + discriminator/Q pre-training epochs (each
        ``inner_steps`` steps).
      crowding_epochs: CrowdInG epochs (paper: the last 40 of training; 20 here to keep CPU
        fits short -- not tuned further).
      inner_steps: updates of D/Q, of G and of the classifier per epoch (paper: 5).
      batch_size: items per pre-training mini-batch; ``None`` = n_labelled / 16 in [32, 1024].
      lr: Adam learning rate of the pre-training.  lr_classifier / lr_generator /
        lr_discriminator: Adam learning rates of the CrowdInG epochs. The classifier's is
        scaled by ``repeat_share(A, N_labelled) ** 2``, the squared share of annotations
        that are not their item's first (a data-shape rule): the pre-training already
        fitted every item's labels, and on crowds of about one label per item the further
        classifier steps only re-fit those single labels and drift the posterior off
        CoNAL's (synthetic crowd, 60 % removal, 3 seeds: -0.33 points with the linear
        share, -0.11 with its square; LabelMe 60 %: share 0.02, i.e. CoNAL's classifier).
      lr_crowd_layer: Adam learning rate of the crowd layer W_r in the G/D pre-training and
        CrowdInG epochs; 0 (default) keeps it as pre-trained and the generator's base is
        CoNAL's pair-wise noise model, fixed, the generator learning only its residual on
        top. Above 0 the crowd layer is the generator's base and is trained with it.
      weight_decay: Adam L2 on the classifier and the generator MLP in CrowdInG's own
        epochs ("conal" pre-training keeps CoNAL's weight decay). ``None`` (default)
        scales it with the input width per labelled item, 0.04 (D / N)^2 clipped to
        [1e-3, 1e-2]: a 512-d crowd of 1,000 items (LabelMe) over-fits without strong decay
        (1e-2), a 124-d crowd of 700 (Music) under-fits with it (best near 1e-3), and
        low-dimensional crowds sit at the 1e-3 floor. This one rule was chosen on the
        LabelMe, Music and synthetic sweeps (BENCHMARKS.md); items without features count
        as D = 32.
      label_weight: tau, the weight of the labels' log-likelihood in the posterior,
        log p(z | x) + tau sum_a log p(y_a | z); ``None`` = the tau the CoNAL pre-training
        chose on held-out annotations (a warm refit keeps the previous one), or 1 when
        there is none ("dlcl" pre-training). With a tau from CoNAL or given, ``calibrate``
        is skipped: both set the same balance between the prior and the labels.
      calibrate: fit a temperature T on the classifier logits by maximising the
        leave-one-annotation-out likelihood of the observed annotations through the crowd
        layer (each label predicted from the prior and the item's other labels; grid
        search), so the classifier prior in the posterior is neither over- nor
        under-confident.
      hidden: classifier hidden units (paper 128).  dropout: classifier dropout (paper 0.5).
      item_embedding_dim: classifier input size for crowds without features.
      omega_dim: size of the annotator and instance embeddings of omega (CoNAL's
        ``embedding_dim``, passed to the CoNAL pre-training; the generator's noise base).
      gen_hidden1 / gen_hidden2: generator MLP hidden sizes (paper 64 and 128).
      noise_dim: size of eps ~ N(0, I).
      disc_dim: size of u_r and v_n in the discriminator.  class_embedding_dim: size of m_c.
      lca: use the LCA decoder (False: M^_c = M_c W, no label mixing).
      reg_lambda: lambda, weight of the information loss (Eq. 2.11; paper range 0.1-1).
      t: normalised classifier-entropy threshold of the two-step update (paper 0.2-0.8).
      mu: CRM Lagrange baseline; ``None`` = mean loss of the logged sample.
      ratio_clip: clip of the importance weight G/G0.
      disc_l2: weight of the L2 penalty on the discriminator's logits.
      classifier_anchor / generator_anchor: weight of the DL-CL likelihood of the real
        annotations kept in the classifier/generator updates (see module docstring).
      candidate_factor: unobserved pairs sampled per epoch, as a multiple of the number of
        annotations (all pairs when N x R is smaller).  max_pairs: hard cap per epoch.
      shrinkage: pseudo-count k pulling an annotator's confusion toward the pooled one in
        the posterior: (n_r pi_r + k pi) / (n_r + k).
      aggregate: "posterior" | "generator" | "classifier" for ``labels_``/``probas_``.
      k: items with fewer than k human labels get generated annotations up to k.
      generate_candidates: non-labelling annotators sampled per sparse item to choose from.
      warm_pretrain_epochs / warm_crowding_epochs: schedule of a warm-started refit.
      warm_max_growth / warm_min_annotations / warm_lr_scale: when a refit may start warm
        and its learning rates then, as CoNAL.
      seed, device, num_threads: as CoNAL.
    """

    name: ClassVar[str] = "crowding"
    supports_warm_start: ClassVar[bool] = True
    epochs_param: ClassVar[str | None] = "crowding_epochs"

    pretrain: Literal["conal", "dlcl"] = "conal"
    pretrain_epochs: int | None = None
    pretrain_steps: int = 600
    soft_epochs: float = 0.25
    gd_pretrain_epochs: int = 4
    crowding_epochs: int = 20
    inner_steps: int = 5
    batch_size: int | None = None
    lr: float = 0.01
    lr_classifier: float = 3e-4
    lr_generator: float = 1e-3
    lr_discriminator: float = 5e-3
    lr_crowd_layer: float = 0.0
    weight_decay: float | None = None
    calibrate: bool = True
    label_weight: float | None = None
    hidden: int = 128
    dropout: float = 0.5
    item_embedding_dim: int = 32
    omega_dim: int = 20
    gen_hidden1: int = 64
    gen_hidden2: int = 128
    noise_dim: int = 4
    disc_dim: int = 16
    class_embedding_dim: int = 8
    lca: bool = True
    reg_lambda: float = 0.5
    t: float = 0.5
    mu: float | None = None
    ratio_clip: float = 5.0
    disc_l2: float = 1e-3
    classifier_anchor: float = 1.0
    generator_anchor: float = 1.0
    candidate_factor: float = 2.0
    max_pairs: int = 20000
    shrinkage: float = 5.0
    aggregate: Literal["posterior", "generator", "classifier"] = "generator"
    k: int = 3
    generate_candidates: int = 20
    warm_pretrain_epochs: int = 3
    warm_crowding_epochs: int = 5
    warm_max_growth: float = 0.02
    warm_min_annotations: int = 50_000
    warm_lr_scale: float = 0.1
    seed: int = 0
    device: str = "cpu"
    num_threads: int = 2

    # Fitted beyond the common attributes (not annotated: annotations would become fields):
    # posterior_probas_, generator_posterior_probas_ (N, C); item_counts_ (N,);
    # feature_mean_/feature_scale_ (D,) or None; lca_adjacency_ (C, C); temperature_ (float);
    # generated_item_idx_/generated_annotator_idx_/generated_label_idx_ (G,) int64 and
    # generated_probability_ (G,) float64 -- ``generated_`` turns them into records.

    _extra_fitted: ClassVar[tuple[str, ...]] = (
        "posterior_probas_",
        "generator_posterior_probas_",
        "item_counts_",
        "feature_mean_",
        "feature_scale_",
        "lca_adjacency_",
        "temperature_",
        "label_weight_",
        "generated_item_idx_",
        "generated_annotator_idx_",
        "generated_label_idx_",
        "generated_probability_",
    )

    def __post_init__(self) -> None:
        for name in ("gd_pretrain_epochs", "crowding_epochs"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in (
            "inner_steps",
            "hidden",
            "gen_hidden1",
            "gen_hidden2",
            "disc_dim",
            "class_embedding_dim",
            "item_embedding_dim",
            "omega_dim",
            "num_threads",
            "pretrain_steps",
            "warm_pretrain_epochs",
            "generate_candidates",
            "max_pairs",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pretrain_epochs is not None and int(self.pretrain_epochs) < 1:
            raise ValueError(f"pretrain_epochs must be >= 1 or None, got {self.pretrain_epochs}")
        if self.batch_size is not None and int(self.batch_size) < 2:
            raise ValueError(f"batch_size must be >= 2 or None, got {self.batch_size}")
        if int(self.noise_dim) < 0:
            raise ValueError(f"noise_dim must be >= 0, got {self.noise_dim}")
        check_warm_policy(self)
        if not float(self.warm_lr_scale) > 0:
            raise ValueError(f"warm_lr_scale must be > 0, got {self.warm_lr_scale}")
        if int(self.warm_crowding_epochs) < 0:
            raise ValueError(f"warm_crowding_epochs must be >= 0, got {self.warm_crowding_epochs}")
        if not 0.0 <= self.soft_epochs < 1.0:
            raise ValueError(f"soft_epochs must be in [0, 1), got {self.soft_epochs}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.t <= 1.0:
            raise ValueError(f"t must be in [0, 1] (normalised classifier entropy), got {self.t}")
        if self.label_weight is not None and not 0.0 <= float(self.label_weight) <= 1.0:
            raise ValueError(f"label_weight must be in [0, 1] or None, got {self.label_weight}")
        if not float(self.lr_crowd_layer) >= 0:
            raise ValueError(f"lr_crowd_layer must be >= 0, got {self.lr_crowd_layer}")
        for name in ("lr", "lr_classifier", "lr_generator", "lr_discriminator", "candidate_factor", "ratio_clip"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.weight_decay is not None and float(self.weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0 or None, got {self.weight_decay}")
        for name in ("reg_lambda", "disc_l2", "classifier_anchor", "generator_anchor", "shrinkage"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.pretrain not in ("conal", "dlcl"):
            raise ValueError(f"pretrain must be one of 'conal', 'dlcl'; got {self.pretrain!r}")
        if self.aggregate not in ("posterior", "generator", "classifier"):
            raise ValueError(f"aggregate must be one of 'posterior', 'generator', 'classifier'; got {self.aggregate!r}")
        if int(self.k) < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")
        self._net: CrowdInGNet | None = None
        self._tau: float | None = None
        # (anchor, posterior) (A, C) likelihood tables of the CoNAL noise model, per fit.
        self._noise_tables: tuple[np.ndarray, np.ndarray] | None = None
        # Epochs reported before ours (CoNAL's tau probes), so the progress count runs on.
        self._progress_offset = 0

    # ------------------------------------------------------------------ public extras
    @property
    def generated_(self) -> list[GeneratedAnnotation]:
        """Generated annotations for items with fewer than ``k`` human labels."""
        if not self.is_fitted:
            raise ValueError("CrowdInG must be fitted before reading generated_")
        return [
            GeneratedAnnotation(
                item=self.items_[int(i)],
                annotator=self.annotators_[int(r)],
                label=self.classes_[int(y)],
                probability=float(p),
            )
            for i, r, y, p in zip(
                self.generated_item_idx_,
                self.generated_annotator_idx_,
                self.generated_label_idx_,
                self.generated_probability_,
                strict=True,
            )
        ]

    def write_outputs(self, out: Path, data: CrowdData) -> None:
        """CLI hook: ``generated.csv`` with ``item,annotator,label,probability``."""
        with (Path(out) / "generated.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["item", "annotator", "label", "probability"])
            for g in self.generated_:
                w.writerow([g.item, g.annotator, g.label, f"{g.probability:.6f}"])

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        data: CrowdData,
        *,
        init: CrowdModel | None = None,
        progress: ProgressFn | None = None,
    ) -> CrowdInG:
        prev = self._plan_start(init, data, width=None if data.features is None else data.features.shape[1])
        with torch_fit_context(num_threads=self.num_threads, seed=self.seed):
            # _plan_start returns init or None, and init passed _check_init: a CrowdInG.
            self._fit(data, cast(CrowdInG | None, prev), progress)
        return self

    # ------------------------------------------------------------------ prediction
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Classifier probabilities for new items from their raw (unscaled) features."""
        if self._net is None or not self.is_fitted:
            raise ValueError("CrowdInG must be fitted before predict_proba()")
        xt = scaled_new_features(self, features)
        net = self._net
        net.eval()
        with torch.no_grad():
            if len(xt) == 0:
                return np.empty((0, len(self.classes_)))
            out = torch.cat([net.classifier(xt[s : s + 65536]) for s in range(0, len(xt), 65536)])
        return softmax_rows(out.double().numpy() / float(self.temperature_))

    # ------------------------------------------------------------------ checkpoints
    def _extra_state(self) -> dict[str, Any]:
        return {} if self._net is None else net_checkpoint(self._net, n_items=len(self.items_))

    def _build_net(
        self,
        *,
        n_items: int,
        n_features: int,
        n_annotators: int,
        n_annotator_features: int,
        n_classes: int,
        adjacency: np.ndarray,
    ) -> CrowdInGNet:
        """The network for these sizes and this model's hyper-parameters: one place
        for fit and for checkpoint loading, so the two cannot drift apart."""
        return CrowdInGNet(
            n_items=n_items,
            n_features=n_features,
            n_annotators=n_annotators,
            n_annotator_features=n_annotator_features,
            n_classes=n_classes,
            hidden=int(self.hidden),
            dropout=float(self.dropout),
            item_embedding_dim=int(self.item_embedding_dim),
            gen_hidden=(int(self.gen_hidden1), int(self.gen_hidden2)),
            noise_dim=int(self.noise_dim),
            disc_dim=int(self.disc_dim),
            class_embedding_dim=int(self.class_embedding_dim),
            adjacency=adjacency,
            omega_dim=int(self.omega_dim),
        )

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        if not state:
            self._net = None
            return
        sd = state["state_dict"]
        net = self._build_net(
            n_items=int(state["n_items"]),
            n_features=int(state["n_features"]),
            n_annotators=len(self.annotators_),
            n_annotator_features=int(state["n_annotator_features"]),
            n_classes=len(self.classes_),
            adjacency=sd["adjacency"].numpy(),
        )
        net.load_state_dict(sd)
        net.eval()
        self._net = net
