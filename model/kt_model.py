"""KTModel: canonical encoder + frozen prior encoders + KT-Adapter + canonical decoder d_c.

eval() runs the deploy graph, canonical encoder -> {t_k, t_c} adapter -> d_c, and no prior
encoder. `run(image, mode)` also gives the two comparison models of every trained KT model:
"canonical" (the canonical encoder with its own decoder, trained without any adapter) and
"ensemble" (the adapter over every prior token).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ktedge.config import Config
from ktedge.model.adapter import KTAdapter, drop_mask
from ktedge.model.encoders import build_encoder
from ktedge.model.tasks import TASKS

Mode = Literal["train", "deploy", "canonical", "ensemble"]


class KTModel(nn.Module):
    def __init__(self, cfg: Config, load_pretrained: bool = True):
        super().__init__()
        m = cfg.model
        self.task = m.canonical.task
        self.adapter_cfg = m.adapter
        task = TASKS[self.task]
        self.canonical = build_encoder(m.canonical, cfg.data.image_size)
        self.priors = nn.ModuleList(build_encoder(p, cfg.data.image_size, load_pretrained) for p in m.priors)
        a = m.adapter
        self.adapter = KTAdapter(self.canonical.dim, [p.dim for p in self.priors], a.dim, a.heads, a.layers, a.mlp_ratio)
        self.decoder = task.head(self.canonical.dim, m.head_hidden)  # d_c
        self.baseline_decoder = task.head(self.canonical.dim, m.head_hidden)  # canonical-alone model

    def train(self, mode: bool = True) -> "KTModel":
        # Encoders are frozen inside a KTModel: their BatchNorm statistics never move.
        super().train(mode)
        self.canonical.eval()
        self.priors.eval()
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, S, S) raw RGB 0..255 -> the canonical task's output."""
        return self.run(image, "train" if self.training else "deploy")

    def run(self, image: torch.Tensor, mode: Mode) -> torch.Tensor:
        e_c = self.canonical(image)  # (B, C)
        if mode in ("canonical", "deploy"):
            return self.decode(e_c, None, mode)
        return self.decode(e_c, [p(image) for p in self.priors], mode)

    def decode(self, e_c: torch.Tensor, e_priors: list[torch.Tensor] | None, mode: Mode) -> torch.Tensor:
        """From embeddings (the training loop caches them: the encoders are frozen)."""
        if mode == "canonical":
            return self.baseline_decoder(e_c)
        if mode == "deploy":
            return self.decoder(self.adapter(e_c))
        mask = None
        if mode == "train":
            a = self.adapter_cfg
            mask = drop_mask(e_c.shape[0], len(self.priors), a.p_drop, a.p_all, a.p_canon)
        return self.decoder(self.adapter(e_c, e_priors, mask))


class EnsembleModel(nn.Module):
    """The adapter over every prior token, every prior encoder running: the comparison model that
    shows what the deploy graph saves. (B, 3, S, S) raw RGB 0..255 -> the canonical task's output."""

    def __init__(self, model: KTModel):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.run(image, "ensemble")
