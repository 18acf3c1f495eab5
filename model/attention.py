"""Multi-head attention with a key mask, and the pre-norm transformer block.

Written out with matmul/softmax (no fused kernels) so that every op lowers to ExecuTorch,
TFLite, CoreML and ONNX. Queries, keys and values have separate projections so the fuse stage
can fold the knowledge token's key/value into constants.
"""
from __future__ import annotations

import torch
from torch import nn


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
           key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention of projected queries (B, Q, D) over keys/values (B, M, D).
    The heads are folded into the batch so both products are 3-D bmm: a 4-D matmul exports as
    expand + bmm + view, and ExecuTorch's XNNPACK partitioner splits the graph at every expand."""
    b, nq, d = q.shape
    nk, h = k.shape[1], heads

    def split(t: torch.Tensor, n: int) -> torch.Tensor:
        return t.reshape(b, n, h, d // h).transpose(1, 2).reshape(b * h, n, d // h)  # (B*H, n, d)

    att = torch.bmm(split(q, nq), split(k, nk).transpose(1, 2)) * (d // h) ** -0.5  # (B*H, Q, M)
    if key_mask is not None:
        att = att.masked_fill(~key_mask.repeat_interleave(h, 0)[:, None, :], float("-inf"))
    out = torch.bmm(att.softmax(-1), split(v, nk))  # (B*H, Q, d)
    return out.reshape(b, h, nq, d // h).transpose(1, 2).reshape(b, nq, d)  # (B, Q, D)


class MultiHeadAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, N, D); key_mask: (B, N) bool, True = this token may be attended to.
        return self.proj(attend(self.q(x), self.k(x), self.v(x), self.heads, key_mask))


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))


class CrossAttention(MultiHeadAttention):
    """Multi-head attention of queries (B, Q, D) over keys/values (B, M, D) given separately, so
    positions can be added to the queries and keys but not to the values (DETR-style decoders)."""

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return self.proj(attend(self.q(query), self.k(key), self.v(value), self.heads))  # (B, Q, D)
