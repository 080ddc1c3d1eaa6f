"""CrowdInG's aggregation and generation: the label posterior through the generator (or the
fixed noise model, or the classifier alone), temperature calibration, and the generated
annotations for items with few human labels.

``CrowdInGPosterior`` is a mixin of ``CrowdInG`` (``model.py``); it has no state of its own.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from inference.data import CrowdData
from inference.models._crowding_ops import entropy, select_by_entropy
from inference.models.base import CrowdModel
from inference.models.crowding.network import EPS, CrowdInGNet
from inference.models.crowding.training import FitTensors
from inference.models.noise import item_sums, shrink_confusions

__all__ = ["CrowdInGPosterior", "fit_temperature", "label_posterior", "softmax_rows"]


class CrowdInGPosterior(CrowdModel):
    """The aggregation and generation methods of ``CrowdInG``."""

    # What these methods read from their host and the fitted attributes they set, for the
    # type checker (bare annotations on a plain class: no dataclass field, no class
    # attribute; ``CrowdInG`` holds the values, see ``CrowdInGTraining``).
    shrinkage: float
    calibrate: bool
    noise_dim: int
    aggregate: Literal["posterior", "generator", "classifier"]
    k: int
    generate_candidates: int
    _tau: float | None
    _noise_tables: tuple[np.ndarray, np.ndarray] | None
    item_counts_: np.ndarray
    temperature_: float
    label_weight_: float
    posterior_probas_: np.ndarray
    generator_posterior_probas_: np.ndarray
    generated_item_idx_: np.ndarray
    generated_annotator_idx_: np.ndarray
    generated_label_idx_: np.ndarray
    generated_probability_: np.ndarray

    @torch.no_grad()
    def _finalise(
        self,
        data: CrowdData,
        net: CrowdInGNet,
        t: FitTensors,
        n_per_ann: np.ndarray,
        rng: np.random.Generator,
        gen: torch.Generator,
    ) -> None:
        net.eval()
        n_items, n_cls, n_ann = data.n_items, data.n_classes, data.n_annotators
        x_every = net.inputs(torch.arange(n_items), t.x_all)
        logits = torch.cat([net.classifier(x_every[s : s + 65536]) for s in range(0, n_items, 65536)]).double().numpy()
        conf = torch.softmax(net.w_crowd.double(), 2).numpy()  # (R, C, C)
        a_item, a_ann, a_lab = t.a_item.numpy(), t.a_ann.numpy(), t.a_lab.numpy()

        if self._noise_tables is not None:
            lik_crowd = self._noise_tables[1]  # the fixed CoNAL noise model, per annotation
        else:
            # Crowd-layer posterior, individual confusions shrunk toward the pooled one.
            nr = n_per_ann[:, None, None].astype(np.float64)
            pooled = (nr * conf).sum(0) / max(float(nr.sum()), EPS)
            shrunk = shrink_confusions(conf, pooled, n_per_ann, float(self.shrinkage))
            lik_crowd = shrunk[a_ann, :, a_lab]  # (A, C): p(y_a | z) per class
        tau = self._tau
        # A tau chosen on held-out annotations already sets the prior-vs-labels balance
        # that the temperature would: calibrating on top would undo it in-sample.
        calibrate = self.calibrate and tau is None
        self.temperature_ = fit_temperature(logits, lik_crowd, a_item) if calibrate else 1.0
        self.label_weight_ = 1.0 if tau is None else float(tau)
        clf = softmax_rows(logits / self.temperature_)
        post = label_posterior(clf, self.label_weight_ * np.log(np.clip(lik_crowd, EPS, None)), a_item)

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
        gpost = label_posterior(clf, self.label_weight_ * np.log(np.clip(lik, EPS, None)), a_item)

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
        net: CrowdInGNet,
        t: FitTensors,
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


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(1, keepdims=True)  # numpy's stubs type this expression as Any
    return out


def label_posterior(clf: np.ndarray, log_lik: np.ndarray, a_item: np.ndarray) -> np.ndarray:
    """Normalised clf * prod_a lik_a per item; ``log_lik`` is (A, C), ``a_item`` (A,) in
    any order (sorted here for CoNAL's per-item sum)."""
    order = np.argsort(a_item, kind="stable")
    return softmax_rows(np.log(np.clip(clf, EPS, None)) + item_sums(a_item[order], log_lik[order], clf.shape[0]))


def fit_temperature(logits: np.ndarray, lik: np.ndarray, a_item: np.ndarray) -> float:
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
    log_lik = np.log(np.clip(lik, EPS, None))
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
        score = float(np.log(np.clip((post * lik).sum(1), EPS, None)).mean())
        if score > best:
            best_t, best = float(temp), score
    return best_t
