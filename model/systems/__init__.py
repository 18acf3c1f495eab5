"""The other systems of the model family. Each is a `model.system` of `ktedge train` and deploys
through the same fuse -> quantize -> export -> validate chain as the KT model: a system gives
`build` (the training model, raw RGB 0..255 in), `train` (it and a plain baseline of the same size)
and `deploy` (the graph the fuse stage exports: one output per task of `deploy_tasks`)."""
from __future__ import annotations

from torch import nn

from ktedge.config import Config

SYSTEMS = ("kt", "mzts", "auformer", "faceptor", "transfer")
# What each system is for: the canonical task and backbone its config must name (Faceptor's
# canonical task is the first of its tasks; `transfer` distils into any canonical encoder).
REQUIRES = {"mzts": ("attributes", "vit"), "auformer": ("action_units", "vit"), "faceptor": ("landmarks", "vit")}
FACEPTOR_TASKS = ("landmarks", "age", "attributes", "expression")


def deploy_tasks(cfg: Config) -> list[str]:
    """The tasks the deploy graph answers, in output order (one output each)."""
    return list(FACEPTOR_TASKS) if cfg.model.system == "faceptor" else [cfg.model.canonical.task]


def label_tasks(cfg: Config) -> list[str]:
    """The tasks whose labels training reads (AUFormer's ViT is pre-trained on landmarks first)."""
    m = cfg.model
    if m.system in ("kt", "transfer"):
        return list(dict.fromkeys([*(p.task for p in m.priors if not p.pretrained), m.canonical.task]))
    return {"auformer": ["landmarks", "action_units"], "mzts": ["attributes"]}.get(m.system, list(FACEPTOR_TASKS))


def deploy_name(cfg: Config) -> str:
    """The deployed model's name in manifests and reports: kt-landmarks, mzts-attributes, faceptor."""
    tasks = deploy_tasks(cfg)
    return f"{cfg.model.system}-{tasks[0]}" if len(tasks) == 1 else cfg.model.system


def build(cfg: Config, load_pretrained: bool = True) -> nn.Module:
    from ktedge.model.data.synth import ACTION_UNITS, ATTRIBUTES
    from ktedge.model.kt_model import KTModel
    from ktedge.model.systems.auformer import AUFormer
    from ktedge.model.systems.faceptor import Faceptor
    from ktedge.model.systems.mzts import MZTS
    from ktedge.model.systems.transfer import TransferModel

    if cfg.model.system == "auformer":
        return AUFormer(cfg.model.canonical.width, cfg.data.image_size, len(ACTION_UNITS))
    if cfg.model.system == "mzts":
        return MZTS(cfg.model.canonical.width, cfg.data.image_size, len(ATTRIBUTES))
    if cfg.model.system == "faceptor":
        return Faceptor(cfg.model.canonical.width, cfg.data.image_size)
    if cfg.model.system == "transfer":
        return TransferModel(cfg, load_pretrained)
    return KTModel(cfg, load_pretrained)
