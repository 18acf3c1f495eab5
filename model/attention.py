"""Multi-head attention with a key mask, and the pre-norm transformer block.

Written out with matmul/softmax (no fused kernels) so that every op lowers to ExecuTorch,
TFLite, CoreML and ONNX. Queries, keys and values have separate projections so the fuse stage
can fold the knowledge token's key/value into constants.
"""
from __future__ import annotations

import torch
from torch import nn


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
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)  # (B, H, N, d)
        k = self.k(x).reshape(b, n, h, d // h).transpose(1, 2)
        v = self.v(x).reshape(b, n, h, d // h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (d // h) ** -0.5  # (B, H, N, N)
        if key_mask is not None:
            att = att.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        out = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        return self.proj(out)


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
