"""Task losses."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class WingLoss(nn.Module):
    """Wing loss (Feng et al. 2018) on landmark errors in pixels: log-shaped for small errors."""

    def __init__(self, image_size: int, w: float = 10.0, eps: float = 2.0):
        super().__init__()
        self.size, self.w, self.eps = image_size, w, eps
        self.c = w - w * math.log(1 + w / eps)

    def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        x = (pred - gt).abs() * self.size
        return torch.where(x < self.w, self.w * torch.log1p(x / self.eps), x - self.c).mean()


class LandmarkL1(nn.Module):
    def __init__(self, image_size: int):
        super().__init__()
        self.size = image_size

    def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return (pred - gt).abs().mean() * self.size


class ArcFaceLoss(nn.Module):
    """Additive angular margin (ArcFace): cos(theta + m) for the true identity, scale s, then CE."""

    def __init__(self, dim: int, n_classes: int, s: float = 30.0, m: float = 0.3):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.s, self.m = s, m

    def forward(self, emb: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(emb, dim=1) @ F.normalize(self.weight, dim=1).T  # (B, n_classes)
        theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
        target = torch.cos(theta + self.m)
        onehot = F.one_hot(ids, cos.shape[1]).bool()
        return F.cross_entropy(self.s * torch.where(onehot, target, cos), ids)


class SmoothL1Years(nn.Module):
    def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return F.smooth_l1_loss(pred, gt, beta=1.0)


class BCE(nn.Module):
    def forward(self, logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, gt)


class CE(nn.Module):
    def forward(self, logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, gt)


class MDWALoss(nn.Module):
    """AUFormer's margin-truncated, difficulty-aware, weighted asymmetric loss, as PAPERS.md
    specifies it (the paper's exact formula was not available). Per action unit i, with p = sigmoid:
    positives -w_i log p; negatives with p_m = max(p - m, 0): 0 where p >= tau (likely mislabelled),
    else -w_i p_m^gamma log(1 - p_m) (easy negatives, p <= m, give no gradient). w_i is proportional
    to 1 / occurrence rate, normalised to mean 1. Mean over samples and action units."""

    def __init__(self, occurrence: torch.Tensor, margin: float = 0.05, discard: float = 0.95, gamma: float = 2.0):
        super().__init__()
        w = 1.0 / occurrence.float().clamp_min(1e-3)  # (A,)
        self.register_buffer("w", w / w.mean())
        self.margin, self.discard, self.gamma = margin, discard, gamma

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)  # (B, A)
        positive = -self.w * F.logsigmoid(logits)
        p_m = (p - self.margin).clamp_min(0)
        negative = -self.w * p_m.pow(self.gamma) * torch.log1p(-p_m)
        negative = torch.where(p >= self.discard, torch.zeros_like(negative), negative)
        return torch.where(labels > 0.5, positive, negative).mean()
