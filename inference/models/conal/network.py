"""CoNAL's network: classifier, auxiliary (omega) network and the noise adaptation layers.

Shapes: N items, D input width, R annotators, C classes, E embedding width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CoNALNet", "ReLUDropout", "pair_omega", "softmax"]


def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax as exp / sum. Same maths as ``torch.softmax``, but on CPU torch's kernel
    is 4-6x slower over a short last axis (C = 10 classes): 1.7 ms vs 0.3 ms for the
    (R, C, C) noise layers of a 1k-annotator crowd, which it recomputes every step. The
    max shift is detached: it cancels in the ratio, so it needs no gradient."""
    e = torch.exp(x - x.amax(dim, keepdim=True).detach())
    return e / e.sum(dim, keepdim=True)


class _MaskedScale(torch.autograd.Function):
    """x * m with m a constant (no-grad) float mask: saves only m, backward is one multiply."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(m)
        return x * m

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (m,) = ctx.saved_tensors
        return grad * m, None


class ReLUDropout(nn.Module):
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
        self.threshold = min(255, round(256 * self.p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return torch.relu(x)
        n = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=x.device)
        keep = words.view(torch.uint8)[:n].view(x.shape) >= self.threshold
        m = (keep & (x > 0)).to(x.dtype).mul_(256.0 / (256 - self.threshold))
        # torch leaves Function.apply unannotated (it forwards *args to ``forward``).
        out: torch.Tensor = _MaskedScale.apply(x, m)  # type: ignore[no-untyped-call]
        return out


class CoNALNet(nn.Module):
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
            ReLUDropout(dropout),
            nn.Identity(),  # dropout's slot: done inside ReLUDropout (see there)
            nn.Linear(hidden, n_classes),
        )
        # Auxiliary network: instance embedding from the input, annotator embedding from
        # a one-hot id (nn.Embedding) or from annotator features.
        self.instance_proj = nn.Linear(in_dim, embedding_dim)
        if n_annotator_features > 0:
            self.annotator_proj: nn.Linear | nn.Embedding = nn.Linear(n_annotator_features, embedding_dim)
        else:
            self.annotator_proj = nn.Embedding(n_annotators, embedding_dim)
        self.omega_scale = nn.Parameter(torch.tensor(1.0))
        self.omega_bias = nn.Parameter(torch.tensor(float(omega_bias_init)))
        eye = torch.eye(n_classes) * confusion_init
        self.w_common = nn.Parameter(eye.clone())
        self.w_indiv = nn.Parameter(eye.repeat(n_annotators, 1, 1))

    def inputs(self, item_ids: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        if self.item_embedding is not None:
            # nn.Module.__call__ is typed as returning Any; an embedding lookup is a Tensor.
            emb: torch.Tensor = self.item_embedding(item_ids)
            return emb
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
    weights (``CrowdInGNet.noise_base``)."""
    v = F.normalize(instance_proj(x), dim=1)
    u = F.normalize(annotator_proj(annotator_in), dim=1)
    return torch.sigmoid(scale * (u * v).sum(1) + bias)
