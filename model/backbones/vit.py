"""A small ViT: 8x8 patches, learned positions, pre-norm blocks, mean-pooled tokens."""
from __future__ import annotations

import torch
from torch import nn

from ktedge.model.attention import TransformerBlock


class ViT(nn.Module):
    """(B, 3, S, S) normalised -> (B, dim)."""

    def __init__(self, width: int, image_size: int, depth: int = 4, heads: int = 4, patch: int = 8):
        super().__init__()
        n = (image_size // patch) ** 2
        self.patch = nn.Conv2d(3, width, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, n, width) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, 2.0) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.dim = width

    def tokens(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output: a list of (B, N, width)."""
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos  # (B, N, width)
        out = []
        for blk in self.blocks:
            x = blk(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.tokens(x)[-1]).mean(1)  # (B, width)
