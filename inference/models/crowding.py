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
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

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
from inference.models._torch import fit_inputs, net_checkpoint, torch_fit_context
from inference.models.base import CrowdModel, ProgressFn, check_warm_policy, match_ids, report_progress
from inference.models.conal import (
    CoNAL,
    _ds_init,
    item_sums,
    mixture_likelihood,
    pair_omega,
    shrink_confusions,
    weight_decay_rule,
)

__all__ = ["CrowdInG", "GeneratedAnnotation"]

_EPS = 1e-8


@dataclass(frozen=True)
class GeneratedAnnotation:
    """One annotation made up by the generator (never a human label)."""

    item: str
    annotator: str
    label: str
    probability: float


class _CrowdInGNet(nn.Module):
    """Classifier, crowd layer + generator, discriminator (bilinear + LCA) and Q."""

    def __init__(
        self,
        *,
        n_items: int,
        n_features: int,
        n_annotators: int,
        n_annotator_features: int,
        n_classes: int,
        hidden: int,
        dropout: float,
        item_embedding_dim: int,
        gen_hidden: tuple[int, int],
        noise_dim: int,
        disc_dim: int,
        class_embedding_dim: int,
        adjacency: np.ndarray,
        omega_dim: int = 20,
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.n_annotator_features = n_annotator_features
        self.noise_dim = noise_dim
        c = n_classes
        if n_features > 0:
            self.item_embedding: nn.Embedding | None = None
            in_dim = n_features
        else:
            self.item_embedding = nn.Embedding(n_items, item_embedding_dim)
            nn.init.normal_(self.item_embedding.weight, std=0.1)
            in_dim = item_embedding_dim
        self.classifier = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, c),
        )
        # Crowd layer (DL-CL), part of the generator: per-annotator confusion logits.
        self.w_crowd = nn.Parameter(torch.zeros(n_annotators, c, c))

        def annotator_encoder(dim: int) -> nn.Module:
            # One-hot annotator x W is an embedding lookup; features go through a Linear.
            if n_annotator_features > 0:
                return nn.Linear(n_annotator_features, dim)
            return nn.Embedding(n_annotators, dim)

        # CoNAL's noise model, copied from the pre-training and kept fixed (see
        # ``noise_base``): omega(x, r) = sigmoid(s <u_r, v_x> + b) with normalised
        # embeddings mixes the common confusion (C, C) and annotator r's (R, C, C).
        self.mix_inst = nn.Linear(in_dim, omega_dim)
        self.mix_ann = annotator_encoder(omega_dim)
        for p in (*self.mix_inst.parameters(), *self.mix_ann.parameters()):
            p.requires_grad_(False)
        self.register_buffer("mix_scale", torch.tensor(1.0))
        self.register_buffer("mix_bias", torch.tensor(0.0))
        self.register_buffer("mix_common", torch.full((c, c), 1.0 / c))
        self.register_buffer("mix_indiv", torch.full((n_annotators, c, c), 1.0 / c))
        self.register_buffer("use_mixture", torch.tensor(False))

        # Generator MLP: its first layer acts on concat(x, e_r, eps), split into per-input
        # parts (same function, no concatenated copy); the output layer scores every
        # (class code z, label y) cell at once, so one pass gives all C confusion rows
        # -- C times cheaper than feeding each one-hot z through the whole network.
        h1, h2 = gen_hidden
        self.n_classes = c
        self.g_x = nn.Linear(in_dim, h1)
        self.g_r = annotator_encoder(h1)
        if isinstance(self.g_r, nn.Embedding):
            nn.init.normal_(self.g_r.weight, std=0.1)
        self.g_eps = nn.Linear(noise_dim, h1, bias=False) if noise_dim > 0 else None
        self.g_hidden = nn.Linear(h1, h2)
        self.g_out = nn.Linear(h2, c * c)
        nn.init.zeros_(self.g_out.weight)  # start exactly at the crowd layer
        nn.init.zeros_(self.g_out.bias)

        # Discriminator (Eq. 2.9) with the LCA decoder.
        self.d_v = nn.Linear(in_dim, disc_dim)
        self.d_u = annotator_encoder(disc_dim)
        if isinstance(self.d_u, nn.Embedding):
            nn.init.normal_(self.d_u.weight, std=0.1)
        self.d_u_bias = nn.Parameter(torch.zeros(disc_dim))
        self.d_m = nn.Parameter(torch.randn(c, disc_dim, disc_dim) * (1.0 / disc_dim))
        self.d_w = nn.Parameter(torch.eye(disc_dim))
        self.d_bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("adjacency", torch.as_tensor(adjacency, dtype=torch.float32))

        # Auxiliary network Q (Eq. 2.10): reuses u_r, v_n; m_y embeds the flattened M^_y.
        self.q_m = nn.Linear(disc_dim * disc_dim, class_embedding_dim)
        self.q_net = nn.Sequential(
            nn.Linear(2 * disc_dim + class_embedding_dim, h1),
            nn.ReLU(),
            nn.Linear(h1, c),
        )

    # -------------------------------------------------------------- pieces
    def inputs(self, item_ids: torch.Tensor, x_all: torch.Tensor | None) -> torch.Tensor:
        if self.item_embedding is not None:
            return self.item_embedding(item_ids)
        assert x_all is not None  # guarded by CrowdInG.fit
        return x_all[item_ids]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(x), 1)

    def crowd_probs(self, zhat: torch.Tensor, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """DL-CL: p(y | x, r) = sum_z z^_z softmax(W_r)[z, y], for aligned rows."""
        pi = torch.softmax(self.w_crowd[r], 2)  # (P, C, C)
        return (zhat * pi[torch.arange(len(y)), :, y]).sum(1)

    def noise_base(self, x: torch.Tensor, r_in: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """(P, C, C) log confusion rows the generator's residual is added to.

        With ``use_mixture`` (CoNAL pre-training): log(omega pi^g + (1 - omega) pi^r) for
        each (item, annotator) pair, CoNAL's instance-dependent noise model; else the
        crowd layer W_r. Why the pair-wise mixture: the per-annotator average of omega
        cannot say on which items an annotator falls into the common confusion, so the
        discriminator's signal pushed the classifier toward the common confusion's classes
        instead (synthetic crowd at 40-60 % removal: 0.1-0.3 points below CoNAL).
        """
        if not bool(self.use_mixture):
            return self.w_crowd[r]
        w = pair_omega(self.mix_inst, self.mix_ann, self.mix_scale, self.mix_bias, x, r_in)[:, None, None]
        mixed = w * self.mix_common[None] + (1.0 - w) * self.mix_indiv[r]
        return torch.log(mixed.clamp_min(_EPS))

    def generator_conditionals(
        self, x: torch.Tensor, r_in: torch.Tensor, r: torch.Tensor, eps: torch.Tensor | None
    ) -> torch.Tensor:
        """(P, C, C): row z = annotation distribution given class code z (eps fixed)."""
        base = self.g_x(x) + self.g_r(r_in)
        if self.g_eps is not None and eps is not None:
            base = base + self.g_eps(eps)
        h = torch.relu(self.g_hidden(torch.relu(base)))
        res = self.g_out(h).view(-1, self.n_classes, self.n_classes)  # (P, z, y)
        return torch.softmax(self.noise_base(x, r_in, r) + res, 2)

    def generate(
        self, x: torch.Tensor, r_in: torch.Tensor, r: torch.Tensor, eps: torch.Tensor | None, zhat: torch.Tensor
    ) -> torch.Tensor:
        """G(x, e_r, eps, z^): (P, C) annotation distribution (Eq. 2.8)."""
        cond = self.generator_conditionals(x, r_in, r, eps)
        return torch.einsum("pz,pzy->py", zhat, cond)

    def decoded_m(self) -> torch.Tensor:
        """LCA decoder: M^_c = sum_c' Adj[c, c'] M_c' W, (C, k, k)."""
        return torch.einsum("cd,dij->cij", self.adjacency, self.d_m) @ self.d_w

    def encode(self, x: torch.Tensor, r_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.d_u(r_in) + self.d_u_bias, self.d_v(x)

    def disc_logits(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(P, C) logits of D(y = c | x, e_r) = sigmoid(u^T M^_c v) for every class."""
        m_hat = self.decoded_m()
        return torch.einsum("pi,cij,pj->pc", u, m_hat, v) + self.d_bias

    def q_log_probs(self, u: torch.Tensor, v: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(P, C) log P_Q(z^ = c | x, e_r, y); D's encoders are inputs, not trained by Q."""
        m = self.q_m(self.decoded_m().detach().flatten(1))  # (C, m_dim)
        h = torch.cat([u.detach(), v.detach(), m[y]], 1)
        return torch.log_softmax(self.q_net(h), 1)

    # parameter groups for the separate optimisers
    def classifier_params(self) -> list[nn.Parameter]:
        ps = list(self.classifier.parameters())
        if self.item_embedding is not None:
            ps += list(self.item_embedding.parameters())
        return ps

    def generator_params(self) -> list[nn.Parameter]:
        ps: list[nn.Parameter] = [self.w_crowd]
        for mod in (self.g_x, self.g_r, self.g_eps, self.g_hidden, self.g_out):
            if mod is not None:
                ps += list(mod.parameters())
        return ps

    def discriminator_params(self) -> list[nn.Parameter]:
        return [*self.d_v.parameters(), *self.d_u.parameters(), self.d_u_bias, self.d_m, self.d_w, self.d_bias]

    def q_params(self) -> list[nn.Parameter]:
        return [*self.q_m.parameters(), *self.q_net.parameters()]


@dataclass(eq=False)
class CrowdInG(CrowdModel):
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
        for name in ("inner_steps", "hidden", "gen_hidden1", "gen_hidden2", "disc_dim",
                     "class_embedding_dim", "item_embedding_dim", "omega_dim", "num_threads", "pretrain_steps",
                     "warm_pretrain_epochs", "generate_candidates", "max_pairs"):
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
            raise ValueError(
                f"aggregate must be one of 'posterior', 'generator', 'classifier'; got {self.aggregate!r}"
            )
        if int(self.k) < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")
        self._net: _CrowdInGNet | None = None
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
            self._fit(data, prev, progress)  # type: ignore[arg-type]
        return self

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
        self._tau: float | None = None if self.label_weight is None else float(self.label_weight)
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
            soft, conf, _ = _ds_init(a_item, a_ann, a_lab, n_items, n_ann, n_cls)
            with torch.no_grad():
                net.w_crowd.copy_(torch.from_numpy(np.log(conf)).float())
            n_pre = self._pretrain_epochs(len(labelled))
            n_soft = int(math.floor(self.soft_epochs * n_pre))
            n_gd, n_crowd = int(self.gd_pretrain_epochs), int(self.crowding_epochs)
        else:
            soft = np.full((n_items, n_cls), 1.0 / n_cls)  # only the soft epochs read it
            n_pre, n_soft = int(self.warm_pretrain_epochs), 0
            n_gd, n_crowd = 0, int(self.warm_crowding_epochs)

        t = _Tensors(
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
                    loss = -torch.log(net.crowd_probs(zhat, t.a_ann[pos], t.a_lab[pos]) + _EPS).mean()
                opt_pre.zero_grad(set_to_none=True)
                loss.backward()
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
            loss = self._adversarial_epoch(
                net, t, n_per_ann, n_pairs, rng, gen, opt_c, opt_g, opt_d, opt_q, crowding=crowding
            )
            epoch += 1
            self._log(progress, epoch, total, loss)

        net.w_crowd.requires_grad_(True)  # frozen only for the epochs above
        self._net = net
        self.n_epochs_ = total
        self._finalise(data, net, t, n_per_ann, rng, gen)
        self.fit_seconds_ = time.perf_counter() - t0

    def _pretrain_with_conal(
        self, net: _CrowdInGNet, data: CrowdData, progress: ProgressFn | None, n_after: int
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
            net.w_crowd.copy_(torch.from_numpy(np.log(np.clip(mixed, _EPS, None))).float())
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
        net: _CrowdInGNet,
        t: _Tensors,
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
        p_it, p_an = sample_candidate_pairs(
            n_items, n_ann, t.a_item.numpy(), t.a_ann.numpy(), n_pairs, rng
        )
        pi = torch.from_numpy(p_it)
        pr = torch.from_numpy(p_an)
        pr_in = pr if t.ann_feats is None else t.ann_feats[pr]
        eps = self._noise(len(pi), gen)
        with torch.no_grad():
            g0 = net.generate(x_every[pi], pr_in, pr, eps, zhat_all[pi]).clamp_min(_EPS)
            y = torch.multinomial(g0, 1, generator=gen).squeeze(1)
            p0 = g0[torch.arange(len(y)), y]
        sel = torch.from_numpy(
            select_by_entropy(p_an, entropy(g0.double().numpy()), n_per_ann, rng)
        )

        # Real annotations (a sample of at most n_pairs when the crowd is large).
        n_real = len(t.a_item)
        real = torch.arange(n_real) if n_real <= n_pairs else torch.randperm(n_real, generator=gen)[:n_pairs]
        ri, rr, ry = t.a_item[real], t.a_ann[real], t.a_lab[real]
        rr_in = rr if t.ann_feats is None else t.ann_feats[rr]

        # --- discriminator and Q: real (1) vs selected generated (0)
        net.train()
        si, sr, sy = pi[sel], pr[sel], y[sel]
        sr_in = pr_in[sel]
        target = torch.cat([torch.ones(len(ri)), torch.zeros(len(si))])
        for _ in range(steps):
            u, v = net.encode(torch.cat([x_every[ri], x_every[si]]), torch.cat([rr_in, sr_in]))
            logits_all = net.disc_logits(u, v)
            labels = torch.cat([ry, sy])
            logit = logits_all[torch.arange(len(labels)), labels]
            loss_d = F.binary_cross_entropy_with_logits(logit, target) + float(self.disc_l2) * logits_all.pow(2).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            if len(si):
                us, vs = u[len(ri):], v[len(ri):]
                logq = net.q_log_probs(us, vs, sy)
                loss_q = -(zhat_all[si] * logq).sum(1).mean()
                opt_q.zero_grad(set_to_none=True)
                loss_q.backward()
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
                g = net.generate(x_every[pi[idx]], pr_in[idx], pr[idx], eps[idx], zhat_all[pi[idx]])
                ratio = (g[torch.arange(len(idx)), y[idx]] / p0[idx]).clamp(max=float(self.ratio_clip))
                d = delta[idx]
                base = d.mean() if self.mu is None else float(self.mu)
                loss = loss + ((d - base) * ratio).mean()
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
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
                batch_items = lab_items[torch.randperm(len(lab_items), generator=gen)[: self._batch_size(len(lab_items))]]
                loss = torch.zeros(())
                if len(batch_items) >= 2 and self.classifier_anchor > 0:
                    loss = float(self.classifier_anchor) * self._anchor_classifier(net, t, batch_items)
                if len(high) >= 2:
                    zh = net.classify(x_every[pi[high]] if net.item_embedding is None else net.inputs(pi[high], None))
                    g = net.generate(x_every[pi[high]], pr_in[high], pr[high], eps[high], zh)
                    ratio = (g[torch.arange(len(high)), y[high]] / p0[high]).clamp(max=float(self.ratio_clip))
                    d = loss_g_signal[high]
                    base = d.mean() if self.mu is None else float(self.mu)
                    loss = loss + ((d - base) * ratio).mean()
                if loss.requires_grad:
                    opt_c.zero_grad(set_to_none=True)
                    opt_g.zero_grad(set_to_none=True)
                    loss.backward()
                    opt_c.step()  # the generator is fixed here: only C steps
        return nll_value

    def _noise(self, n: int, gen: torch.Generator) -> torch.Tensor | None:
        if int(self.noise_dim) == 0:
            return None
        return torch.randn(n, int(self.noise_dim), generator=gen)

    def _anchor_generator(
        self,
        net: _CrowdInGNet,
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
        return -torch.log(g[torch.arange(len(ry)), ry] + _EPS).mean()

    def _anchor_classifier(self, net: _CrowdInGNet, t: _Tensors, items_b: torch.Tensor) -> torch.Tensor:
        """NLL of the batch items' real annotations through the crowd layer, or through the
        fixed pre-trained noise model when there is one (``t.anchor_lik``); classifier trained."""
        order, starts, counts = t.csr
        pos = _gather_annotations(items_b, order, starts, counts)
        local = _local_index(items_b, counts)
        zhat = net.classify(net.inputs(items_b, t.x_all))[local]
        if t.anchor_lik is not None:
            return -torch.log((zhat * t.anchor_lik[pos]).sum(1) + _EPS).mean()
        return -torch.log(net.crowd_probs(zhat, t.a_ann[pos], t.a_lab[pos]) + _EPS).mean()

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
    def _copy_from(self, net: _CrowdInGNet, prev: CrowdInG, data: CrowdData) -> bool:
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

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def _finalise(
        self,
        data: CrowdData,
        net: _CrowdInGNet,
        t: _Tensors,
        n_per_ann: np.ndarray,
        rng: np.random.Generator,
        gen: torch.Generator,
    ) -> None:
        net.eval()
        n_items, n_cls, n_ann = data.n_items, data.n_classes, data.n_annotators
        x_every = net.inputs(torch.arange(n_items), t.x_all)
        logits = torch.cat(
            [net.classifier(x_every[s : s + 65536]) for s in range(0, n_items, 65536)]
        ).double().numpy()
        conf = torch.softmax(net.w_crowd.double(), 2).numpy()  # (R, C, C)
        a_item, a_ann, a_lab = t.a_item.numpy(), t.a_ann.numpy(), t.a_lab.numpy()

        if self._noise_tables is not None:
            lik_crowd = self._noise_tables[1]  # the fixed CoNAL noise model, per annotation
        else:
            # Crowd-layer posterior, individual confusions shrunk toward the pooled one.
            nr = n_per_ann[:, None, None].astype(np.float64)
            pooled = (nr * conf).sum(0) / max(float(nr.sum()), _EPS)
            shrunk = shrink_confusions(conf, pooled, n_per_ann, float(self.shrinkage))
            lik_crowd = shrunk[a_ann, :, a_lab]  # (A, C): p(y_a | z) per class
        tau = self._tau
        # A tau chosen on held-out annotations already sets the prior-vs-labels balance
        # that the temperature would: calibrating on top would undo it in-sample.
        calibrate = self.calibrate and tau is None
        self.temperature_ = _fit_temperature(logits, lik_crowd, a_item) if calibrate else 1.0
        self.label_weight_ = 1.0 if tau is None else float(tau)
        clf = _softmax(logits / self.temperature_)
        post = _posterior(clf, self.label_weight_ * np.log(np.clip(lik_crowd, _EPS, None)), a_item)

        # Generator posterior: p(y_a | x, r_a, z) at eps = 0 for each class code z.
        lik_parts = []
        for s in range(0, len(a_item), 65536):
            sl = slice(s, s + 65536)
            r = t.a_ann[sl]
            r_in = r if t.ann_feats is None else t.ann_feats[r]
            eps = None if int(self.noise_dim) == 0 else torch.zeros(len(r), int(self.noise_dim))
            cond = net.generator_conditionals(x_every[t.a_item[sl]], r_in, r, eps).double()
            lik_parts.append(cond[torch.arange(len(r)), :, t.a_lab[sl]])
        lik = torch.cat(lik_parts).numpy() if lik_parts else np.zeros((0, n_cls))
        gpost = _posterior(clf, self.label_weight_ * np.log(np.clip(lik, _EPS, None)), a_item)

        self.classifier_probas_ = clf
        self.posterior_probas_ = post
        self.generator_posterior_probas_ = gpost
        chosen = {"posterior": post, "generator": gpost, "classifier": clf}[self.aggregate]
        self.probas_ = np.array(chosen, dtype=np.float64, copy=True)
        self.labels_ = self.probas_.argmax(1).astype(np.int64)
        self.confusions_ = conf
        self.common_confusion_ = None
        self.omega_ = None
        self.annotator_omega_ = None
        self._generate(net, t, x_every, torch.from_numpy(clf).float(), rng, n_ann)

    def _generate(
        self,
        net: _CrowdInGNet,
        t: _Tensors,
        x_every: torch.Tensor,
        zhat: torch.Tensor,
        rng: np.random.Generator,
        n_ann: int,
    ) -> None:
        """``generated_`` arrays: up to k labels for every item with fewer than k human ones."""
        counts = self.item_counts_
        need = np.minimum(int(self.k), n_ann) - counts
        sparse = np.nonzero(need > 0)[0]
        empty = np.empty(0, dtype=np.int64)
        self.generated_item_idx_ = empty
        self.generated_annotator_idx_ = empty.copy()
        self.generated_label_idx_ = empty.copy()
        self.generated_probability_ = np.empty(0, dtype=np.float64)
        if len(sparse) == 0:
            return
        # Candidates: up to ``generate_candidates`` annotators per sparse item who did not
        # label it (all of them when the crowd has few annotators), drawn uniformly.
        m = int(min(n_ann, self.generate_candidates))
        if m == n_ann:
            c_item = np.repeat(sparse, n_ann)
            c_ann = np.tile(np.arange(n_ann, dtype=np.int64), len(sparse))
        else:
            # m distinct annotators per item: the first m of a per-item random permutation,
            # taken from argsort of uniform keys (vectorised).
            keys = rng.random((len(sparse), n_ann))
            c_ann = np.argsort(keys, axis=1)[:, :m].reshape(-1).astype(np.int64)
            c_item = np.repeat(sparse, m)
        key = c_item * n_ann + c_ann
        obs = t.a_item.numpy() * n_ann + t.a_ann.numpy()
        fresh = ~np.isin(key, obs)
        c_item, c_ann = c_item[fresh], c_ann[fresh]
        probs_parts = []
        for s in range(0, len(c_item), 65536):
            it = torch.from_numpy(c_item[s : s + 65536])
            r = torch.from_numpy(c_ann[s : s + 65536])
            r_in = r if t.ann_feats is None else t.ann_feats[r]
            eps = None if int(self.noise_dim) == 0 else torch.zeros(len(r), int(self.noise_dim))
            probs_parts.append(net.generate(x_every[it], r_in, r, eps, zhat[it]).double())
        probs = torch.cat(probs_parts).numpy()
        # Selection rule per item (the per-item analogue of the training rule): draw
        # need[i] candidates with P proportional to 1 / H(G).
        group = np.searchsorted(sparse, c_item)  # position of the item among the sparse ones
        chosen = select_by_entropy(group, entropy(probs), need[sparse], rng)
        probs = probs[chosen]
        self.generated_item_idx_ = c_item[chosen]
        self.generated_annotator_idx_ = c_ann[chosen]
        self.generated_label_idx_ = probs.argmax(1).astype(np.int64)
        self.generated_probability_ = probs.max(1)

    # ------------------------------------------------------------------ prediction
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Classifier probabilities for new items from their raw (unscaled) features."""
        if self._net is None or not self.is_fitted:
            raise ValueError("CrowdInG must be fitted before predict_proba()")
        if self.feature_mean_ is None or self.feature_scale_ is None:
            raise ValueError("this CrowdInG was fitted without features (per-item embeddings); it cannot predict new items")
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.feature_mean_.shape[0]:
            raise ValueError(f"features must have shape (n, {self.feature_mean_.shape[0]}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or inf values")
        net = self._net
        net.eval()
        xt = torch.from_numpy((x - self.feature_mean_) / self.feature_scale_)
        with torch.no_grad():
            if len(xt) == 0:
                return np.empty((0, len(self.classes_)))
            out = torch.cat([net.classifier(xt[s : s + 65536]) for s in range(0, len(xt), 65536)])
        return _softmax(out.double().numpy() / float(self.temperature_))

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
    ) -> _CrowdInGNet:
        """The network for these sizes and this model's hyper-parameters: one place
        for fit and for checkpoint loading, so the two cannot drift apart."""
        return _CrowdInGNet(
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


@dataclass
class _Tensors:
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


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _posterior(clf: np.ndarray, log_lik: np.ndarray, a_item: np.ndarray) -> np.ndarray:
    """Normalised clf * prod_a lik_a per item; ``log_lik`` is (A, C), ``a_item`` (A,) in
    any order (sorted here for CoNAL's per-item sum)."""
    order = np.argsort(a_item, kind="stable")
    return _softmax(np.log(np.clip(clf, _EPS, None)) + item_sums(a_item[order], log_lik[order], clf.shape[0]))


def _fit_temperature(logits: np.ndarray, lik: np.ndarray, a_item: np.ndarray) -> float:
    """T maximising the mean leave-one-annotation-out predictive log-likelihood
    log sum_z post_{-a}(z) lik[a, z], post_{-a} proportional to softmax(logits / T)[i_a] *
    prod_{a' != a on i_a} lik[a', z]: the posterior aggregation's own use of the prior.

    ``logits`` (N, C), ``lik`` (A, C) p(y_a | z), ``a_item`` (A,). A grid over [0.25, 4]
    (log-spaced) is enough for a one-dimensional, smooth objective and keeps the fit
    deterministic; items with one label score it under the prior alone. Why leave one out:
    the marginal likelihood of each label under the prior alone (the earlier criterion)
    ignores that the posterior also multiplies in the item's other labels; on the
    synthetic crowd at 0 % removal (3 labels per item) it cost about 0.5 points.
    """
    if len(a_item) == 0:
        return 1.0
    n_items, n_cls = logits.shape
    log_lik = np.log(np.clip(lik, _EPS, None))
    sums = np.zeros((n_items, n_cls))
    for c in range(n_cls):
        sums[:, c] = np.bincount(a_item, weights=log_lik[:, c], minlength=n_items)
    others = sums[a_item] - log_lik  # (A, C): the item's other labels
    grid = np.geomspace(0.25, 4.0, 33)
    best_t, best = 1.0, -np.inf
    for temp in grid:
        z = logits[a_item] / temp
        lp = z - z.max(1, keepdims=True)
        lp = lp - np.log(np.exp(lp).sum(1, keepdims=True)) + others
        lp -= lp.max(1, keepdims=True)
        post = np.exp(lp)
        post /= post.sum(1, keepdims=True)
        score = float(np.log(np.clip((post * lik).sum(1), _EPS, None)).mean())
        if score > best:
            best_t, best = float(temp), score
    return best_t
