"""AUFormer (Yuan et al., ECCV 2024) as PAPERS.md specifies it for ktedge: a frozen ViT whose
blocks each get two Mixture-of-Knowledge-Expert groups (beside the attention and beside the MLP),
one expert per action unit, trained with the MDWA loss; only the experts and the head train.

An expert: tokens -> 2-D map -> 1x1 conv + GELU (down) -> BatchNorm -> 3x3 conv, then a
multi-receptive-field branch (3x3 convs dilated 1, 3, 5, concatenated, 1x1 conv) plus a
context-aware branch (attention over the map from 1x1-conv Q, K, V), summed -> GELU -> 1x1 conv
(up) -> tokens. The group adds the mean of its experts as a residual; each expert also hands its
hidden map to the same AU's expert in the next group. The U experts of a group run as grouped
convolutions (groups=U): the same computation as U separate experts, a handful of ops for the
exporters instead of U times as many."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ktedge.model.backbones.vit import ViT
from ktedge.model.data.synth import ACTION_UNITS
from ktedge.model.encoders import Encoder
from ktedge.model.systems import System, canonical_task

EXPERT_DIM = 4  # r: each expert's hidden channels
# The experts start with a zero up-projection on a frozen trunk, and at the trunk's lr (0.003) they
# kept nearly one answer per unit whatever the face: mean F1 39.9 on the default data (3000 faces,
# 12 epochs), 30.7 at CI size (960 faces, 8 epochs; a guess at each unit's rate scores 30.8). At 3x:
# 47.0 after 12 epochs, 44.8 after 40 (the adapter epochs); at 10x, 40 epochs fell below the
# guess. Adapters commonly train at a larger lr than the network they adapt.
EXPERT_LR_SCALE = 3.0
VIT_DEPTH = 2


class ExpertGroup(nn.Module):
    """U experts over (B, N, D) tokens of an (h, w) grid -> (residual (B, N, D), hidden (B, U*r, h, w))."""

    def __init__(self, dim: int, experts: int, grid: int, r: int = EXPERT_DIM):
        super().__init__()
        u, c = experts, experts * r
        self.u, self.r = u, r
        self.down = nn.Conv2d(dim, c, 1)
        # Without a norm the maps handed from group to group grew ~10x a group (std 1.5 -> 21 by the
        # fourth, the experts' attention logits in the thousands) and int8 drifted ~21 % in mean F1.
        # BatchNorm (no affine: the convs after it scale), not per-face statistics: at deploy it is a
        # per-channel scale and shift (fuse's write_out_batchnorms), where a per-face variance's
        # squares, in one int8 scale across the experts, crushed the quiet ones (8.7 % drift on a
        # CI-size model; 1.7 % with that norm kept float; 1.4 % with BatchNorm, and F1 51.4 vs 45.6).
        self.norm = nn.BatchNorm2d(c, affine=False)
        self.local = nn.Conv2d(c, c, 3, padding=1, groups=u)
        self.dilated = nn.ModuleList(nn.Conv2d(c, c, 3, padding=d, dilation=d, groups=u) for d in (1, 3, 5))
        self.merge = nn.Conv2d(3 * c, c, 1, groups=u)
        self.qkv = nn.Conv2d(c, 3 * c, 1, groups=u)
        self.up = nn.Conv2d(c, u * dim, 1, groups=u)
        nn.init.zeros_(self.up.weight)  # the frozen ViT's output is unchanged at the start
        nn.init.zeros_(self.up.bias)

    def forward(self, tokens: torch.Tensor, grid: int, handed: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, d = tokens.shape
        u, r = self.u, self.r
        x = tokens.transpose(1, 2).reshape(b, d, grid, grid)  # (B, D, h, w)
        h = F.gelu(self.down(x))  # (B, U*r, h, w)
        if handed is not None:
            h = h + handed  # the same AU's expert in the previous group
        h = self.local(self.norm(h))
        # Multi-receptive-field branch; concatenated per expert so the grouped 1x1 conv mixes within one expert.
        rates = torch.stack([conv(h) for conv in self.dilated], 1)  # (B, 3, U*r, h, w)
        rates = rates.reshape(b, 3, u, r, grid, grid).transpose(1, 2).reshape(b, 3 * u * r, grid, grid)
        mrf = self.merge(rates)  # (B, U*r, h, w)
        # Context-aware branch: each expert attends over the grid positions.
        q, k, v = self.qkv(h).reshape(b, u, 3, r, n).unbind(2)  # each (B, U, r, N)
        att = (q.transpose(-2, -1) @ k * r ** -0.5).softmax(-1)  # (B, U, N, N)
        ctx = (att @ v.transpose(-2, -1)).transpose(-2, -1).reshape(b, u * r, grid, grid)  # (B, U*r, h, w)
        hidden = F.gelu(mrf + ctx)
        out = self.up(hidden).reshape(b, u, d, n).mean(1)  # mean of the experts: (B, D, N)
        return out.transpose(1, 2), hidden


class AUFormerBackbone(nn.Module):
    """A frozen ViT with two expert groups per block; (B, 3, S, S) normalised -> (B, U) AU logits."""

    def __init__(self, vit: ViT, experts: int):
        super().__init__()
        self.vit = vit
        self.grid = int(vit.pos.shape[1] ** 0.5)
        self.groups = nn.ModuleList(ExpertGroup(vit.dim, experts, self.grid) for _ in range(2 * len(vit.blocks)))
        self.head = nn.Linear(vit.dim, experts)
        self.dim = vit.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.vit
        x = v.patch(x).flatten(2).transpose(1, 2) + v.pos  # (B, N, D)
        handed = None
        for i, blk in enumerate(v.blocks):
            beside_attn, handed = self.groups[2 * i](x, self.grid, handed)
            x = x + blk.attn(blk.norm1(x)) + beside_attn
            beside_mlp, handed = self.groups[2 * i + 1](x, self.grid, handed)
            x = x + blk.mlp(blk.norm2(x)) + beside_mlp
        return self.head(v.norm(x).mean(1))  # (B, U)


class AUFormer(nn.Module):
    """Raw RGB 0..255 in, (B, U) action-unit logits out. `encoder` holds the frozen ViT."""

    def __init__(self, width: int, image_size: int, experts: int):
        super().__init__()
        self.encoder = Encoder(AUFormerBackbone(ViT(width, image_size, depth=VIT_DEPTH), experts))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image)


def deploy_auformer(model: AUFormer) -> nn.Module:
    """BatchNorm and input normalisation folded into the ViT's stem: raw RGB 0..255 -> (B, U) logits."""
    from ktedge.model.fuse import FoldedBackbone

    return FoldedBackbone(model.encoder).eval()


def _train(cfg, train, val, bar):
    from ktedge.model.systems.train import train_auformer

    return train_auformer(cfg, train, val, bar)


def _deploy(model: nn.Module) -> nn.Module:
    from ktedge.model.fuse import write_out_layer_norms

    return write_out_layer_norms(deploy_auformer(model))


# The ViT is pre-trained on landmarks before the experts train on action units.
SYSTEM = System(build=lambda cfg, load_pretrained=True: AUFormer(cfg.model.canonical.width, cfg.data.image_size,
                                                                 len(ACTION_UNITS)),
                train=_train, deploy=_deploy, tasks=canonical_task, label_tasks=lambda cfg: ["landmarks", "action_units"],
                requires=("action_units", "vit"))
