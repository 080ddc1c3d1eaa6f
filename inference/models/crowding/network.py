"""CrowdInG's networks: the classifier, the generator G(y | x, r, eps, z^) on top of CoNAL's
pair-wise noise base, the discriminator D and the auxiliary network Q.

Shapes: N items, D input width, R annotators, C classes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from inference.models.conal.network import pair_omega

__all__ = ["EPS", "CrowdInGNet"]

#: CrowdInG's floor of probabilities before a log (CoNAL's, in ``noise.EPS``, is 1e-10).
EPS = 1e-8


class CrowdInGNet(nn.Module):
    """Classifier, crowd layer + generator, discriminator (bilinear + LCA) and Q."""

    # Buffers (``register_buffer`` in ``__init__``), declared for the type checker, which
    # otherwise types them through ``nn.Module.__getattr__`` as ``Tensor | Module``. Bare
    # annotations create no class attribute, so ``register_buffer`` still accepts the names.
    mix_scale: torch.Tensor
    mix_bias: torch.Tensor
    mix_common: torch.Tensor
    mix_indiv: torch.Tensor
    use_mixture: torch.Tensor
    adjacency: torch.Tensor

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

        def annotator_encoder(dim: int) -> nn.Linear | nn.Embedding:
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
            # nn.Module.__call__ is typed as returning Any; an embedding lookup is a Tensor.
            emb: torch.Tensor = self.item_embedding(item_ids)
            return emb
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
        return torch.log(mixed.clamp_min(EPS))

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
