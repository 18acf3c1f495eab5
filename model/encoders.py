"""Encoders: input normalisation + a backbone, raw RGB 0..255 in, one embedding vector out.

The normalisation is an explicit module (not baked into the data) so the fuse stage can fold it
into the first layer and the deployed model takes camera pixels as they are.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from ktedge.model.backbones.mobilenet import MobileNet
from ktedge.model.backbones.resnet import ResNet
from ktedge.model.backbones.vit import ViT
from ktedge.model.onet import ONET_MEAN, ONET_STD, ONet, load_pretrained_onet, onet_input

if TYPE_CHECKING:
    from ktedge.config import EncoderConfig

PIXEL_MEAN, PIXEL_STD = 127.5, 64.0


class InputNorm(nn.Module):
    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.full((1, 3, 1, 1), mean))
        self.register_buffer("std", torch.full((1, 3, 1, 1), std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Encoder(nn.Module):
    """(B, 3, S, S) raw RGB 0..255 -> (B, dim)."""

    def __init__(self, backbone: nn.Module, mean: float = PIXEL_MEAN, std: float = PIXEL_STD):
        super().__init__()
        self.norm = InputNorm(mean, std)
        self.backbone = backbone
        self.dim: int = backbone.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.norm(x))


class ONetEncoder(Encoder):
    """O-Net's 256-d feature as a prior: resized to 48x48, MTCNN normalisation."""

    def __init__(self, onet: ONet):
        super().__init__(onet, ONET_MEAN, ONET_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(onet_input(x))


BACKBONES: dict[str, Callable[[int, int], nn.Module]] = {
    "mobilenet": lambda width, size: MobileNet(width, size),
    "resnet": lambda width, size: ResNet(width, size),
    "vit": lambda width, size: ViT(width, size),
    "onet": lambda width, size: ONet(),
}


def build_encoder(cfg: "EncoderConfig", image_size: int, load_pretrained: bool = True) -> Encoder:
    """An encoder from its config; the O-Net gets the real weights unless a checkpoint will supply them."""
    if cfg.backbone == "onet":
        return ONetEncoder(load_pretrained_onet() if load_pretrained else ONet())
    return Encoder(BACKBONES[cfg.backbone](cfg.width, image_size))


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
