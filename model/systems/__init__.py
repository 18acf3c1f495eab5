"""The other systems of the model family. Each is a `model.system` of `ktedge train` and deploys
through the same fuse -> quantize -> export -> validate chain as the KT model: a system gives
`build` (the training model, raw RGB 0..255 in), `train` (it and a plain baseline of the same size)
and `deploy` (the single-output graph the fuse stage exports)."""
from __future__ import annotations

from torch import nn

from ktedge.config import Config

SYSTEMS = ("kt", "mzts", "auformer")
# What each system is for: the canonical task and backbone its config must name.
REQUIRES = {"mzts": ("attributes", "vit"), "auformer": ("action_units", "vit")}


def build(cfg: Config, load_pretrained: bool = True) -> nn.Module:
    from ktedge.model.data.synth import ACTION_UNITS, ATTRIBUTES
    from ktedge.model.kt_model import KTModel
    from ktedge.model.systems.auformer import AUFormer
    from ktedge.model.systems.mzts import MZTS

    if cfg.model.system == "auformer":
        return AUFormer(cfg.model.canonical.width, cfg.data.image_size, len(ACTION_UNITS))
    if cfg.model.system == "mzts":
        return MZTS(cfg.model.canonical.width, cfg.data.image_size, len(ATTRIBUTES))
    return KTModel(cfg, load_pretrained)
