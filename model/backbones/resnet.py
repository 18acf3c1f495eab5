"""ResNet-style backbone: basic residual blocks, one per stage."""
from __future__ import annotations

import torch
from torch import nn

from ktedge.model.backbones.mobilenet import conv_bn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, act=False))
        self.skip = nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride, act=False)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class ResNet(nn.Module):
    """(B, 3, S, S) normalised -> (B, dim)."""

    def __init__(self, width: int, image_size: int):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn(3, w, 3, 2),
            BasicBlock(w, w, 1), BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 8 * w, 2),
        )
        side = image_size // 16
        self.dim = 8 * w
        self.neck = nn.Linear(8 * w * side * side, self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.features(x).flatten(1))  # (B, 8w, S/16, S/16) -> (B, dim)
