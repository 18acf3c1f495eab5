"""Multi-source transfer (Vielzeuf et al., 2019) as PAPERS.md specifies it for ktedge: the
alternative to the KT-Adapter, where the deployed model is a small student and no teacher runs.

1. Frozen teachers (the config's `model.priors`) embed a face: z = [f_1(x); ...; f_K(x)],
   each part standardised on the training faces.
2. An auto-encoder compresses z into one common embedding c = Enc(z), trained on ||z - Dec(c)||^2.
3. The student (the config's `model.canonical` encoder + a linear projection) regresses c from
   the image (L2 + cosine).
4. A small task head on the frozen student's S(x) learns the canonical task.
Deployed: student -> projection -> head; the teachers and the auto-encoder stay behind."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ktedge.config import Config
from ktedge.model.encoders import build_encoder
from ktedge.model.systems import System, canonical_task, prior_and_canonical_labels
from ktedge.model.tasks import TASKS

CODE_DIM = 64  # the common embedding c


class EmbeddingAutoencoder(nn.Module):
    """Standardised teacher embeddings z (B, Z) -> code c (B, CODE_DIM) -> reconstruction (B, Z)."""

    def __init__(self, z_dim: int, code_dim: int = CODE_DIM):
        super().__init__()
        hidden = max(2 * code_dim, z_dim // 2)
        self.register_buffer("mean", torch.zeros(z_dim))  # set from the training faces' z
        self.register_buffer("std", torch.ones(z_dim))
        self.enc = nn.Sequential(nn.Linear(z_dim, hidden), nn.GELU(), nn.Linear(hidden, code_dim))
        self.dec = nn.Sequential(nn.Linear(code_dim, hidden), nn.GELU(), nn.Linear(hidden, z_dim))

    def standardise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean) / self.std

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        return self.enc(self.standardise(z))

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.dec(self.encode(z)), self.standardise(z))


def distill_loss(pred: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """The student regresses the common embedding: L2 plus (1 - cosine)."""
    return F.mse_loss(pred, code) + (1 - F.cosine_similarity(pred, code, dim=1)).mean()


class TransferModel(nn.Module):
    """Teachers + auto-encoder (training only) and student + projection + head (deployed).
    forward: raw RGB 0..255 (B, 3, S, S) -> the canonical task's output, through the student only."""

    def __init__(self, cfg: Config, load_pretrained: bool = True):
        super().__init__()
        m = cfg.model
        self.teachers = nn.ModuleList(build_encoder(p, cfg.data.image_size, load_pretrained) for p in m.priors)
        self.autoencoder = EmbeddingAutoencoder(sum(t.dim for t in self.teachers))
        self.student = build_encoder(m.canonical, cfg.data.image_size)
        self.project = nn.Linear(self.student.dim, CODE_DIM)  # S(x) = project(student(x)): (B, CODE_DIM)
        self.head = TASKS[m.canonical.task].head(CODE_DIM, m.head_hidden)

    def teacher_embedding(self, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([t(image) for t in self.teachers], 1)  # z: (B, Z)

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        return self.project(self.student(image))  # S(x): (B, CODE_DIM)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(image))


def deploy_transfer(model: TransferModel) -> nn.Module:
    """The student with BatchNorm and input normalisation folded, its projection and the head."""
    import copy

    from ktedge.model.fuse import DeployModel, fold_batchnorm, fold_input_norm

    m = copy.deepcopy(model).eval()
    return DeployModel(fold_input_norm(fold_batchnorm(m.student)), m.project, m.head).eval()


def _train(cfg, train, val, bar):
    from ktedge.model.systems.train import train_transfer

    return train_transfer(cfg, train, val, bar)


def _deploy(model: nn.Module) -> nn.Module:
    from ktedge.model.fuse import write_out_layer_norms

    return write_out_layer_norms(deploy_transfer(model))


SYSTEM = System(build=TransferModel, train=_train, deploy=_deploy, tasks=canonical_task,
                label_tasks=prior_and_canonical_labels)
