"""The KT model (model/kt_model.py) as a system: priors, then the canonical encoder, then the
KT-Adapter + d_c (model/train.py); deployed as the fused {t_k, t_c} graph (model/fuse.py), with the
ensemble (every prior running) and the canonical encoder alone exported beside it, so one bench run
shows what the adapter costs and what dropping the priors saves."""
from __future__ import annotations

from torch import nn

from ktedge.model.systems import System, canonical_task, prior_and_canonical_labels


def _build(cfg, load_pretrained: bool = True) -> nn.Module:
    from ktedge.model.kt_model import KTModel

    return KTModel(cfg, load_pretrained)


def _train(cfg, train, val, bar):
    from ktedge.model.train import train_kt

    return train_kt(cfg, train, val, bar)


def _deploy(model: nn.Module) -> nn.Module:
    from ktedge.model.fuse import fuse

    return fuse(model)


def _comparisons(model: nn.Module) -> dict[str, nn.Module]:
    from ktedge.model.deploy_form import replace_prelu
    from ktedge.model.fuse import fuse_canonical_alone
    from ktedge.model.kt_model import EnsembleModel

    return {"ensemble": EnsembleModel(replace_prelu(model)).eval(), "canonical_alone": fuse_canonical_alone(model)}


SYSTEM = System(build=_build, train=_train, deploy=_deploy, tasks=canonical_task, label_tasks=prior_and_canonical_labels,
                comparisons=_comparisons)
