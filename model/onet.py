"""MTCNN O-Net, the real pre-trained face model, in the project's own definition.

The weights ship as `facenet_pytorch/data/onet.pt` inside the facenet-pytorch wheel (MIT). That
package pins an old torch and numpy, so it is never installed: `make install` extracts the file
with its sha256 checked (ktedge/assets.py), and it is loaded with weights_only=True.
Layer names match the file, so all 21 tensors load strictly.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


ONET_SIZE = 48
ONET_MEAN, ONET_STD = 127.5, 128.0  # MTCNN's (x - 127.5) * 0.0078125


class ONet(nn.Module):
    """(B, 3, 48, 48) RGB normalised -> box offsets (B, 4), 5 landmarks (B, 10: x1..x5, y1..y5 as
    fractions of the box), face probability (B, 2: not-face, face)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)
        self.dim = 256

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.prelu1(self.conv1(x)))  # (B, 32, 23, 23)
        x = self.pool2(self.prelu2(self.conv2(x)))  # (B, 64, 10, 10)
        x = self.pool3(self.prelu3(self.conv3(x)))  # (B, 64, 4, 4)
        x = self.prelu4(self.conv4(x))  # (B, 128, 3, 3)
        x = x.permute(0, 3, 2, 1).flatten(1)  # the original Caffe weights expect W-major order
        return self.prelu5(self.dense5(x))  # (B, 256)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.dense6_2(f), self.dense6_3(f), self.dense6_1(f).softmax(1)


def onet_weights_path() -> Path:
    from ktedge.assets import installed

    return installed("facenet-onet")


def load_pretrained_onet() -> ONet:
    path = onet_weights_path()
    net = ONet()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return net.eval()


def onet_input(images: torch.Tensor) -> torch.Tensor:
    """Raw RGB 0..255 (B, 3, H, W) at any size -> O-Net's normalised (B, 3, 48, 48)."""
    if images.shape[-1] != ONET_SIZE or images.shape[-2] != ONET_SIZE:
        images = F.interpolate(images, size=(ONET_SIZE, ONET_SIZE), mode="bilinear", align_corners=False)
    return (images - ONET_MEAN) / ONET_STD
