"""The face tasks: each one's decoder head, default loss and held-out metric, in one registry."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ktedge.model import losses, metrics
from ktedge.model.data.synth import ACTION_UNITS, AGE_RANGE, ATTRIBUTES, EXPRESSIONS, NUM_LANDMARKS

AGE_CENTER = sum(AGE_RANGE) / 2
AGE_SCALE = (AGE_RANGE[1] - AGE_RANGE[0]) / 4


class TaskHead(nn.Module):
    """Decoder d: embedding (B, C) -> task output; `decode` gives the output its meaning."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.decode(self.mlp(e))


class LandmarkHead(TaskHead):
    def decode(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(-1, NUM_LANDMARKS, 2) + 0.5  # (B, 68, 2) normalised to the crop


class AgeHead(TaskHead):
    def decode(self, y: torch.Tensor) -> torch.Tensor:
        return AGE_CENTER + AGE_SCALE * y[:, 0]  # (B,) years


class IdentityHead(TaskHead):
    def decode(self, y: torch.Tensor) -> torch.Tensor:
        return F.normalize(y, dim=1)  # (B, 128) unit embedding


@dataclass(frozen=True)
class Task:
    name: str
    head: Callable[[int, int], TaskHead]  # (in_dim, hidden) -> head
    loss: Callable[..., nn.Module]  # (image_size, n_identities, landmark_loss) -> loss module
    metric_name: str
    metric: Callable[[np.ndarray, np.ndarray], float]
    lower_is_better: bool


def _landmark_loss(image_size: int, n_identities: int, landmark_loss: str) -> nn.Module:
    return losses.WingLoss(image_size) if landmark_loss == "wing" else losses.LandmarkL1(image_size)


TASKS: dict[str, Task] = {
    "landmarks": Task("landmarks", lambda d, h: LandmarkHead(d, NUM_LANDMARKS * 2, h), _landmark_loss,
                      "nme", metrics.nme, True),
    "age": Task("age", lambda d, h: AgeHead(d, 1, h), lambda *a: losses.SmoothL1Years(), "mae", metrics.mae, True),
    "attributes": Task("attributes", lambda d, h: TaskHead(d, len(ATTRIBUTES), h), lambda *a: losses.BCE(),
                       "mean_accuracy", metrics.mean_accuracy, False),
    "identity": Task("identity", lambda d, h: IdentityHead(d, 128, h), lambda s, n, l: losses.ArcFaceLoss(128, n),
                     "verification_accuracy", metrics.verification_accuracy, False),
    "action_units": Task("action_units", lambda d, h: TaskHead(d, len(ACTION_UNITS), h), lambda *a: losses.BCE(),
                         "mean_f1", metrics.mean_f1, False),
    "expression": Task("expression", lambda d, h: TaskHead(d, len(EXPRESSIONS), h), lambda *a: losses.CE(),
                       "accuracy", metrics.accuracy, False),
}
# `face` (face / not-face) is a prior-only task: the pre-trained O-Net brings it, nothing trains it here.
PRIOR_ONLY_TASKS = ("face",)


def as_outputs(y: torch.Tensor | tuple | list) -> list:
    """A model's output(s) as a list: single-task graphs return a tensor, multi-task ones a tuple."""
    return list(y) if isinstance(y, (tuple, list)) else [y]


def evaluate(tasks: list[str], outputs: list[np.ndarray], targets: dict[str, np.ndarray]) -> dict[str, float]:
    """Each task's held-out metric from its output (outputs in `tasks` order)."""
    return {t: TASKS[t].metric(y, targets[t]) for t, y in zip(tasks, outputs)}


def drift_rel(metric: float, reference: float) -> float:
    """Relative change of a metric against its fp32 value (the int8 gate's measure)."""
    return abs(metric - reference) / abs(reference)
