"""The systems of the model family, each a `model.system` of `ktedge train`: the KT model and the
four others. A system is one module here whose `SYSTEM` says how to build it (raw RGB 0..255 in),
train it beside a plain baseline, and deploy it: the graph the fuse stage exports, one output per
task of `tasks`, and for the KT model the comparison models exported beside it. Nothing after the
fuse stage asks which system made a deployable."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from torch import nn

if TYPE_CHECKING:
    from ktedge.config import Config

SYSTEM_NAMES = ("kt", "mzts", "auformer", "faceptor", "transfer")


@dataclass(frozen=True)
class System:
    build: Callable[["Config", bool], nn.Module]  # (cfg, load_pretrained) -> the training model
    train: Callable[..., tuple[nn.Module, dict]]  # (cfg, train split, val split, bar) -> model, metrics
    deploy: Callable[[nn.Module], nn.Module]  # trained model -> the deploy module (raw RGB in)
    tasks: Callable[["Config"], list[str]]  # the tasks the deploy graph answers, in output order
    label_tasks: Callable[["Config"], list[str]]  # the tasks whose labels training reads
    # The (canonical task, backbone) the config must name, where the system is made for one.
    requires: tuple[str, str] | None = None
    # Comparison models exported beside the deploy graph: role -> module (deployable.schema.json roles).
    comparisons: Callable[[nn.Module], dict[str, nn.Module]] | None = None


def get(name: str) -> System:
    return importlib.import_module(f"ktedge.model.systems.{name}").SYSTEM


def deploy_name(cfg: "Config") -> str:
    """The deployed model's name in manifests and reports: kt-landmarks, mzts-attributes, faceptor."""
    tasks = get(cfg.model.system).tasks(cfg)
    return f"{cfg.model.system}-{tasks[0]}" if len(tasks) == 1 else cfg.model.system


def canonical_task(cfg: "Config") -> list[str]:
    return [cfg.model.canonical.task]


def prior_and_canonical_labels(cfg: "Config") -> list[str]:
    """The labels of a system whose priors train on their tasks (unless pre-trained) before the canonical one."""
    m = cfg.model
    return list(dict.fromkeys([*(p.task for p in m.priors if not p.pretrained), m.canonical.task]))
