"""The face tasks: each one's decoder head, default loss, held-out metric and how its output reads
(the decoding `kind` an app follows), in one registry. This is ktedge's task vocabulary: a
deployable's output names the task it answers, and the stages after it gate on that task's metric."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ktedge.model import losses, metrics
from ktedge.model.data.synth import ACTION_UNITS, AGE_RANGE, ATTRIBUTES, EXPRESSIONS, NUM_LANDMARKS
from ktedge.model.facemesh import LEFT_EYE, RIGHT_EYE

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
    metric_name: str
    metric: Callable[[np.ndarray, np.ndarray], float]
    lower_is_better: bool
    kind: str  # how an app decodes the output (export/preprocess.py decode, the app's Decode.kt)
    decode: str  # the same, for a person
    labels: tuple[str, ...] = ()  # class or attribute names, in output order
    # Points output: the points whose mean is the subject's right eye centre, then the left.
    eye_centres: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    # Training: (in_dim, hidden) -> head, and (image_size, n_identities, landmark_loss) -> loss.
    # None for a task only a pre-trained encoder brings (nothing here trains it).
    head: Callable[[int, int], TaskHead] | None = None
    loss: Callable[..., nn.Module] | None = None

    @property
    def trainable(self) -> bool:
        return self.head is not None

    def output(self, name: str, shape: list[int]) -> dict:
        """A deployable's description of an output that answers this task."""
        entry = {"name": name, "shape": shape, "kind": self.kind, "decode": self.decode}
        if self.labels:
            entry["labels"] = list(self.labels)
        if self.eye_centres:
            entry["eye_centres"] = [list(e) for e in self.eye_centres]
        return entry


def _landmark_loss(image_size: int, n_identities: int, landmark_loss: str) -> nn.Module:
    return losses.WingLoss(image_size) if landmark_loss == "wing" else losses.LandmarkL1(image_size)


TASKS: dict[str, Task] = {
    "landmarks": Task("landmarks", "nme", metrics.nme, True, "points_xy",
                      "68 (x, y) points, iBUG-300W order, as fractions of the crop: pixel = value * crop_size",
                      eye_centres=(tuple(range(36, 42)), tuple(range(42, 48))),  # iBUG's eye contours
                      head=lambda d, h: LandmarkHead(d, NUM_LANDMARKS * 2, h), loss=_landmark_loss),
    "age": Task("age", "mae", metrics.mae, True, "value", "age in years",
                head=lambda d, h: AgeHead(d, 1, h), loss=lambda *a: losses.SmoothL1Years()),
    "attributes": Task("attributes", "mean_accuracy", metrics.mean_accuracy, False, "multilabel_logits",
                       "one logit per attribute: present where > 0", ATTRIBUTES,
                       head=lambda d, h: TaskHead(d, len(ATTRIBUTES), h), loss=lambda *a: losses.BCE()),
    "identity": Task("identity", "verification_accuracy", metrics.verification_accuracy, False, "embedding",
                     "unit-length embedding: same person where cosine similarity is above the verification threshold",
                     head=lambda d, h: IdentityHead(d, 128, h), loss=lambda s, n, l: losses.ArcFaceLoss(128, n)),
    "action_units": Task("action_units", "mean_f1", metrics.mean_f1, False, "multilabel_logits",
                         "one logit per action unit: active where > 0", ACTION_UNITS,
                         head=lambda d, h: TaskHead(d, len(ACTION_UNITS), h), loss=lambda *a: losses.BCE()),
    "expression": Task("expression", "accuracy", metrics.accuracy, False, "class_logits",
                       "logits over expressions: argmax", EXPRESSIONS,
                       head=lambda d, h: TaskHead(d, len(EXPRESSIONS), h), loss=lambda *a: losses.CE()),
    # Face / not face: only a pre-trained encoder brings it (the MTCNN O-Net); real LFW crops label it.
    "face": Task("face", "face_accuracy", metrics.accuracy, False, "probabilities", "softmax (not face, face)",
                 ("not face", "face")),
    # FaceMesh's 468 points, held to MediaPipe's own file on real photos (data.format mesh_crops).
    "mesh": Task("mesh", "nme_mesh", metrics.nme_mesh, True, "points_xyz",
                 "468 (x, y, z) points, MediaPipe FaceMesh order, as fractions of the crop (z: depth in the "
                 "same unit, smaller is nearer)", eye_centres=(RIGHT_EYE, LEFT_EYE)),
    # BlazeFace's faces, held to MediaPipe's own file on real frames (data.format face_frames).
    "detection": Task("detection", "recall_iou50", metrics.recall_iou50, False, "anchor_detections",
                      "per anchor (896): box xmin, ymin, xmax, ymax, 6 keypoints (x, y), as fractions of the "
                      "input, then the score; a face where score >= 0.5, after MediaPipe's weighted NMS "
                      "(IoU 0.3)"),
}
TRAINABLE_TASKS = tuple(t for t, task in TASKS.items() if task.trainable)


def as_outputs(y: torch.Tensor | tuple | list) -> list:
    """A model's output(s) as a list: single-task graphs return a tensor, multi-task ones a tuple."""
    return list(y) if isinstance(y, (tuple, list)) else [y]


def evaluate(tasks: list[str], outputs: list[np.ndarray], targets: dict[str, np.ndarray]) -> dict[str, float]:
    """Each task's held-out metric from its output (outputs in `tasks` order)."""
    return {t: TASKS[t].metric(y, targets[t]) for t, y in zip(tasks, outputs)}


def drift_rel(metric: float, reference: float) -> float:
    """Relative change of a metric against its fp32 value (the int8 gate's measure)."""
    return abs(metric - reference) / abs(reference)
