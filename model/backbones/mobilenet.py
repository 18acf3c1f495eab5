"""MobileNetV2-style backbone: inverted residuals with depthwise convolutions."""
from __future__ import annotations

import torch
from torch import nn


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNet(nn.Module):
    """(B, 3, S, S) normalised -> (B, dim); the last map (S/16) is flattened, keeping where things are."""

    def __init__(self, width: int, image_size: int):
        super().__init__()
        w = width
        # (expand, out channels, repeats, first stride)
        plan = [(1, w, 1, 1), (4, w * 3 // 2, 2, 2), (4, 2 * w, 2, 2), (4, 4 * w, 2, 2), (4, 6 * w, 1, 1)]
        layers, cin = [conv_bn(3, w, 3, 2)], w
        for expand, cout, repeats, stride in plan:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers.append(conv_bn(cin, 8 * w, 1))
        self.features = nn.Sequential(*layers)
        side = image_size // 16
        self.dim = 8 * w
        self.neck = nn.Linear(8 * w * side * side, self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.features(x).flatten(1))  # (B, C, S/16, S/16) -> (B, dim)
