"""CoNAL's aggregation: the per-item label posterior (classifier prior + the item's own
labels through the omega-mixed noise model) and the choice of the label weight tau on
held-out annotations.

``CoNALPosterior`` is a mixin of ``CoNAL`` (``model.py``); it has no state of its own.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch.nn import functional as F

from inference.data import CrowdData
from inference.models.base import CrowdModel
from inference.models.conal.network import CoNALNet
from inference.models.ds import DawidSkene
from inference.models.noise import (
    EPS,
    item_sums,
    mixture_likelihood,
    np_softmax,
    shrink_confusions,
)

if TYPE_CHECKING:  # the mixin's host class, which imports this module
    from inference.models.conal.model import CoNAL

__all__ = ["LABEL_WEIGHTS", "CoNALPosterior", "choose_tau", "label_weight_scores"]

#: Candidate label weights tau for the posterior (0 = the classifier's prediction alone).
LABEL_WEIGHTS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0)


class CoNALPosterior(CrowdModel):
    """The aggregation methods of ``CoNAL``."""

    # What these methods read from their host and the fitted attributes they set, for the
    # type checker (bare annotations on a plain class: no dataclass field, no class
    # attribute; ``CoNAL`` holds the values, see ``CoNALTraining``).
    shrinkage: float
    aggregate: Literal["posterior", "classifier"]
    label_weight_: float
    posterior_probas_: np.ndarray
    _label_scores: np.ndarray | None

    @torch.no_grad()
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
    ) -> None:
        net.eval()
        n_items = data.n_items
        all_items = torch.arange(n_items)
        inputs = net.inputs(all_items, x_all)
        # Softmax in float64 so rows sum to 1 to machine precision (the contract); numpy's,
        # since torch's CPU softmax is slow over a short class axis (see ``softmax``).
        logits = net.eval_logits(inputs)
        clf = np_softmax(logits.double().numpy(), 1)
        pi_g = np_softmax(net.w_common.double().numpy(), 1)
        pi_r = np_softmax(net.w_indiv.double().numpy(), 2)

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
                torch.einsum(
                    "ij,ij->i", u.index_select(0, t_ann[s : s + 32768]), v.index_select(0, t_item[s : s + 32768])
                )
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
        log_prior = np.log(np.clip(clf, EPS, None))
        if held.any():
            log_lik = np.log(np.maximum(lik, np.float32(EPS)))  # the tau scores need lik too
        else:
            log_lik = np.log(np.maximum(lik, np.float32(EPS), out=lik), out=lik)
        evidence = item_sums(a_item, log_lik, n_items)
        if tau is not None:
            tau = float(tau)
        elif held.any():
            self._label_scores = label_weight_scores(log_prior, evidence, log_lik, lik, a_item, held)
            tau = choose_tau(self._label_scores)
        elif prev is not None and getattr(prev, "label_weight_", None) is not None:
            tau = float(prev.label_weight_)  # warm refit: nothing held out, keep the cold choice
        else:
            tau = 1.0
        evidence *= tau  # in place: evidence is not needed after this
        evidence += log_prior
        return np_softmax(evidence, 1), tau


def label_weight_scores(
    log_prior: np.ndarray,
    evidence: np.ndarray,
    log_lik: np.ndarray,
    lik: np.ndarray,
    a_item: np.ndarray,
    held: np.ndarray,
) -> np.ndarray:
    """(T, H) scores of each tau in ``LABEL_WEIGHTS`` on each held-out annotation: the annotations' log predictive probability
    log p(y_a | x_i, L_i) = log sum_z post_tau(z | x_i, L_i) p(y_a | z), with L_i the item's
    TRAINING labels (its held-out ones removed from ``evidence``). Gold is never used.

    log_prior, evidence: (N, C); log_lik, lik: (A, C) per annotation (item-sorted);
    a_item: (A,); held: (A,) bool.
    """
    h_item = a_item[held]
    items, inv = np.unique(h_item, return_inverse=True)
    ev = evidence[items].copy()
    np.subtract.at(ev, inv, log_lik[held])  # drop every held-out label of those items
    return np.stack(
        [
            np.log(np.clip((np_softmax(log_prior[items] + tau * ev, 1)[inv] * lik[held]).sum(1), EPS, None))
            for tau in LABEL_WEIGHTS
        ]
    )  # (T, H)


def choose_tau(scores: np.ndarray) -> float:
    """The LARGEST tau of ``LABEL_WEIGHTS`` whose mean score is within two standard
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
    ok = [t for t in range(len(LABEL_WEIGHTS)) if means[best] - means[t] <= 2 * se[t]]
    return float(LABEL_WEIGHTS[max(ok)])
