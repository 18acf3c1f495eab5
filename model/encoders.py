"""Encoders: input normalisation + a backbone, raw RGB 0..255 in, one embedding vector out.

The normalisation is an explicit module (not baked into the data) so the fuse stage can fold it
into the first layer and the deployed model takes camera pixels as they are. A user's own
pre-trained encoder comes as a torch.export program (`pretrained: PATH.pt2`, `backbone: program`)
taking raw RGB 0..255; it is frozen, and the checkpoint records its sha256.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ktedge.atomic import sha256_file
from ktedge.errors import KtedgeError

from ktedge.model.backbones.mobilenet import MobileNet
from ktedge.model.backbones.resnet import ResNet
from ktedge.model.backbones.vit import ViT
from ktedge.model.onet import ONET_MEAN, ONET_STD, ONet, load_pretrained_onet, onet_input

if TYPE_CHECKING:
    from ktedge.config import Config, EncoderConfig

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


class ProgramEncoder(nn.Module):
    """A user's pre-trained encoder, a torch.export program: (B, 3, S', S') raw RGB 0..255 -> a (B, D)
    embedding, or a (B, D, h, w) feature map / (B, N, D) tokens, mean-pooled to (B, D). The run's
    crops are resized to S' where it differs; a program exported for batch 1 runs face by face."""

    def __init__(self, path: str | Path, image_size: int):
        super().__init__()
        program = load_program(path, "pretrained encoder")
        (spec,) = [s for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"] or [None]
        if spec is None:
            raise KtedgeError(f"{path}: a pretrained encoder program takes one image tensor (B, 3, S, S)")
        shape = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == spec.arg.name).meta["val"].shape
        if len(shape) != 4 or int(shape[1]) != 3:
            raise KtedgeError(f"{path}: a pretrained encoder takes (B, 3, S, S) raw RGB, this one takes {list(shape)}")
        self.size = (int(shape[2]), int(shape[3]))
        self.static_batch = isinstance(shape[0], int)
        self.net = program.module()
        with torch.no_grad():
            probe = self(torch.full((1, 3, image_size, image_size), 127.5))
        if probe.dim() != 2:
            raise KtedgeError(f"{path}: the encoder gives {tuple(probe.shape)}; it must give (B, D), (B, D, h, w) or "
                              f"(B, N, D)")
        self.dim: int = int(probe.shape[1])

    def train(self, mode: bool = True) -> "ProgramEncoder":
        # An exported graph is fixed in its eval form and refuses train()/eval(): only the flag moves.
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        y = torch.cat([self.net(x[i:i + 1]) for i in range(len(x))]) if self.static_batch else self.net(x)
        if isinstance(y, (tuple, list)):
            raise KtedgeError("a pretrained encoder program must return one tensor (its embedding), not several")
        if y.dim() == 4:  # (B, D, h, w) feature map
            return y.mean((2, 3))
        return y.mean(1) if y.dim() == 3 else y  # (B, N, D) tokens, or (B, D)


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def load_program(path: str | Path, what: str) -> torch.export.ExportedProgram:
    """A torch.export `.pt2` (nothing unpickled), or a KtedgeError naming the file."""
    import torchao.quantization.pt2e  # noqa: F401  (registers the quantized ops int8 programs hold)

    path = Path(path)
    if not path.is_file():
        raise KtedgeError(f"{path}: {what} not found")
    try:
        with _quiet("torch.export"):  # its loader logs each failure at length before raising
            return torch.export.load(path)
    except Exception as e:  # a pickle, a TorchScript file, a truncated archive
        raise KtedgeError(f"{path}: not a torch.export program (torch.export.load: {type(e).__name__}); save one with "
                          "torch.export.save(torch.export.export(model, (x,)), PATH)") from None


def is_program(pretrained: str) -> bool:
    return pretrained.endswith(".pt2")


BACKBONES: dict[str, Callable[[int, int], nn.Module]] = {
    "mobilenet": lambda width, size: MobileNet(width, size),
    "resnet": lambda width, size: ResNet(width, size),
    "vit": lambda width, size: ViT(width, size),
    "onet": lambda width, size: ONet(),
    "program": lambda width, size: None,  # a `pretrained: PATH.pt2` encoder: its program is its backbone
}


def build_encoder(cfg: "EncoderConfig", image_size: int, load_pretrained: bool = True) -> nn.Module:
    """An encoder from its config; the O-Net gets the real weights unless a checkpoint will supply them."""
    if is_program(cfg.pretrained):
        return freeze(ProgramEncoder(cfg.pretrained, image_size))
    if cfg.backbone == "onet":
        return ONetEncoder(load_pretrained_onet() if load_pretrained else ONet())
    return Encoder(BACKBONES[cfg.backbone](cfg.width, image_size))


def pretrained_digest(cfg: "Config") -> dict[str, str]:
    """{path: sha256} of the run's program encoders: a changed file retrains, and a checkpoint
    trained on another file is refused."""
    encoders = [cfg.model.canonical, *cfg.model.priors]
    return {e.pretrained: sha256_file(e.pretrained) for e in encoders
            if is_program(e.pretrained) and Path(e.pretrained).is_file()}


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
