"""The KT-Adapter (Seo, Kim, Lee, arXiv 2507.01290): a learned knowledge token t_k attends over
the encoders' tokens and enriches the canonical embedding.

Training sees [t_k, t_c, t_1 .. t_n] with a drop mask over the prior tokens (attention key mask,
so shapes stay static); inference sees only [t_k, t_c] and no prior encoder runs.
"""
from __future__ import annotations

import torch
from torch import nn

from ktedge.model.attention import TransformerBlock


class TokenProjection(nn.Module):
    """Embedding e_i (B, C_i) -> token t_i (B, D): LayerNorm, Linear, + a learned source embedding."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, dim)
        self.source = nn.Parameter(torch.randn(dim) * 0.02)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(e)) + self.source


class KTAdapter(nn.Module):
    def __init__(self, canonical_dim: int, prior_dims: list[int], dim: int, heads: int, layers: int, mlp_ratio: float):
        super().__init__()
        self.knowledge = nn.Parameter(torch.randn(1, 1, dim) * 0.02)  # t_k
        self.canonical = TokenProjection(canonical_dim, dim)
        self.priors = nn.ModuleList(TokenProjection(d, dim) for d in prior_dims)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio) for _ in range(layers))
        self.out = nn.Linear(dim, canonical_dim)  # W_o, zero-initialised: training starts at the canonical model
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, e_c: torch.Tensor, e_priors: list[torch.Tensor] | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """e_c (B, C) and, for training/ensemble, the prior embeddings -> e_c' (B, C).

        key_mask (B, 2 + n) bool over [t_k, t_c, t_1..t_n], True = visible; None = all visible.
        """
        b = e_c.shape[0]
        tokens = [self.knowledge.expand(b, -1, -1), self.canonical(e_c)[:, None]]
        if e_priors is not None:
            tokens += [proj(e)[:, None] for proj, e in zip(self.priors, e_priors)]
        x = torch.cat(tokens, 1)  # (B, 2 + n, D)
        for blk in self.blocks:
            x = blk(x, key_mask)
        return e_c + self.out(x[:, 0])  # e_c' = e_c + W_o o_k


def drop_mask(batch: int, n_priors: int, p_drop: float, p_all: float, p_canon: float,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Training key mask (B, 2 + n): t_k always visible; each prior hidden with p_drop, all priors
    hidden together with p_all (exactly the inference set); t_c hidden with p_canon (ablation)."""
    r = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    priors = (r(batch, n_priors) >= p_drop) & ~(r(batch, 1) < p_all)
    canon = r(batch, 1) >= p_canon
    return torch.cat([torch.ones(batch, 1, dtype=torch.bool), canon, priors], 1)
