"""A labelled set of faces as numpy arrays (synthetic, or read from a dataset folder), and its torch view."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ktedge.model.data.synth import ACTION_UNITS, ATTRIBUTES, NUM_LANDMARKS, render, sample_params

LABELLED_TASKS = ("landmarks", "age", "attributes", "action_units", "expression", "identity", "face")


@dataclass
class FaceSet:
    images: np.ndarray  # (N, H, W, 3) uint8 RGB
    landmarks: np.ndarray  # (N, 68, 2) float32, normalised to the crop (0..1)
    age: np.ndarray  # (N,) float32 years
    attributes: np.ndarray  # (N, A) float32 0/1
    action_units: np.ndarray  # (N, U) float32 0/1
    expression: np.ndarray  # (N,) int64
    identity: np.ndarray  # (N,) int64
    pose: np.ndarray  # (N, 2) float32 yaw, roll in degrees
    face: np.ndarray | None = None  # (N,) int64 1 = a face, 0 = not; None: every image is a face
    mesh: np.ndarray | None = None  # (N, 468, 2) float32 FaceMesh points, fractions of the crop (data.format mesh_crops)
    detection: np.ndarray | None = None  # (N, F, 4) float32 face boxes, relative, NaN-padded (data.format face_frames)
    # The tasks whose labels this set carries: all of them for synthetic faces; a real dataset's
    # format carries some, and the others are NaN (-1 for class labels).
    labelled: tuple[str, ...] = LABELLED_TASKS

    @classmethod
    def unlabelled(cls, images: np.ndarray, labelled: tuple[str, ...], **labels: np.ndarray) -> "FaceSet":
        """A set of real images carrying only `labels` (named in `labelled`); the other tasks' labels
        are NaN (-1 for class labels)."""
        n = len(images)
        return cls(images, np.full((n, NUM_LANDMARKS, 2), np.nan, np.float32), np.full(n, np.nan, np.float32),
                   np.full((n, len(ATTRIBUTES)), np.nan, np.float32), np.full((n, len(ACTION_UNITS)), np.nan, np.float32),
                   np.full(n, -1, np.int64), np.full(n, -1, np.int64), np.full((n, 2), np.nan, np.float32),
                   labelled=labelled, **labels)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> "FaceSet":
        arrays = [f.name for f in dataclasses.fields(self) if f.name != "labelled" and getattr(self, f.name) is not None]
        return dataclasses.replace(self, **{name: getattr(self, name)[idx] for name in arrays})

    def tensors(self) -> dict[str, torch.Tensor]:
        """Model inputs and targets: image (N, 3, H, W) float raw 0..255, one entry per task."""
        return {
            "image": torch.from_numpy(self.images).permute(0, 3, 1, 2).float().contiguous(),
            "landmarks": torch.from_numpy(self.landmarks),
            "age": torch.from_numpy(self.age),
            "attributes": torch.from_numpy(self.attributes),
            "action_units": torch.from_numpy(self.action_units),
            "expression": torch.from_numpy(self.expression),
            "identity": torch.from_numpy(self.identity),
            "face": torch.ones(len(self), dtype=torch.int64) if self.face is None else torch.from_numpy(self.face),
            **({} if self.mesh is None else {"mesh": torch.from_numpy(self.mesh)}),
            **({} if self.detection is None else {"detection": torch.from_numpy(self.detection)}),
        }


def generate_faces(n: int, seed: int, size: int = 64, n_identities: int = 64, on_progress=None) -> FaceSet:
    """`n` faces, a pure function of its arguments (face i draws from rng([seed, i]))."""
    images = np.empty((n, size, size, 3), np.uint8)
    lms = np.empty((n, 68, 2), np.float32)
    age = np.empty(n, np.float32)
    attrs = np.empty((n, len(ATTRIBUTES)), np.float32)
    aus = np.empty((n, len(ACTION_UNITS)), np.float32)
    expr = np.empty(n, np.int64)
    ident = np.empty(n, np.int64)
    pose = np.empty((n, 2), np.float32)
    for i in range(n):
        p = sample_params(np.random.default_rng([seed, i]), n_identities)
        images[i], px = render(p, size)
        lms[i] = px / size
        age[i], attrs[i], aus[i] = p.age, p.attributes, p.aus
        expr[i], ident[i], pose[i] = p.expression, p.identity, (p.yaw, p.roll)
        if on_progress is not None and (i + 1) % 100 == 0:
            on_progress(100)
    return FaceSet(images, lms, age, attrs, aus, expr, ident, pose)


SPLITS = {"train": 1, "val": 2, "calibration": 3, "test": 4}


def split_seed(seed: int, split: str) -> int:
    """Each split of a run draws from its own seed stream, so held-out faces never repeat training ones."""
    return seed * 10 + SPLITS[split]
