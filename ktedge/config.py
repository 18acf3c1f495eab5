"""Typed run configuration: the embedded default YAML, deep-merged user YAML, strict checking.

Defaults live in one place, `default.yaml`; the dataclasses below are the schema. An unknown
key or a value of the wrong type is a KtedgeError naming the key and the file.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ktedge.errors import KtedgeError
from ktedge.model.encoders import BACKBONES, is_program
from ktedge.model.tasks import TASKS


@dataclass(frozen=True)
class DataConfig:
    image_size: int
    format: str  # synthetic, or a real dataset format read from train_dir (model/data/datasets.py)
    train_dir: str
    val_dir: str  # "" = one face in six of train_dir held out
    n_train: int  # synthetic faces only, as n_val
    n_val: int
    n_identities: int


@dataclass(frozen=True)
class EncoderConfig:
    task: str  # the task this encoder is trained for (its prior knowledge)
    backbone: str
    width: int  # base channel width (CNNs) or token width (ViT); ignored by onet and program
    # "" = trained here; "facenet-pytorch" = the real MTCNN O-Net weights; PATH.pt2 = your own
    # torch.export encoder (backbone: program), raw RGB 0..255 in, frozen
    pretrained: str


@dataclass(frozen=True)
class AdapterConfig:
    dim: int
    heads: int
    layers: int
    mlp_ratio: float
    p_drop: float
    p_all: float
    p_canon: float


@dataclass(frozen=True)
class ModelConfig:
    system: str  # kt (the KT-Adapter model) or another system of the family (model/systems)
    canonical: EncoderConfig
    priors: list[EncoderConfig]
    adapter: AdapterConfig
    head_hidden: int


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int
    lr: float
    weight_decay: float
    prior_epochs: int
    canonical_epochs: int
    adapter_epochs: int
    landmark_loss: str
    threads: int  # 0 = all cores
    device: str  # auto (CUDA where there is one), cpu or cuda


@dataclass(frozen=True)
class QuantizeConfig:
    backends: list[str]
    calibration_faces: int
    calibration_dir: str  # "" = synthetic held-out faces; else a folder of your own face crops (PNG/JPEG)
    observer: str  # activation observer: minmax | histogram
    eval_faces: int  # labelled held-out faces for the task gate
    max_drift_rel: float  # task gate: |int8 - fp32| / fp32 of the metric, widened to the faces' resolution (quantize/gate.py)
    max_float_layers: int  # mixed-precision budget: layers that may fall back to float


@dataclass(frozen=True)
class ExportConfig:
    formats: list[str]
    only: list[str]  # [] = every artifact of the formats; else just these, e.g. [tflite-int8, executorch-int8]


@dataclass(frozen=True)
class BenchConfig:
    warmup: int
    iters: int
    threads: int
    rounds: int  # host: the timed runs are interleaved over this many rounds of all targets


@dataclass(frozen=True)
class Config:
    name: str
    seed: int
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    quantize: QuantizeConfig
    export: ExportConfig
    bench: BenchConfig
    published: list[str]  # ktedge's published models deployed beside the run's own (ktedge/specs/)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_dict() -> dict[str, Any]:
    text = resources.files("ktedge").joinpath("default.yaml").read_text()
    return yaml.safe_load(text)


def _merge(base: dict, over: dict, where: str, source: str) -> dict:
    out = dict(base)
    for key, value in over.items():
        if key not in base:
            known = ", ".join(sorted(base))
            raise KtedgeError(f"{source}: unknown config key '{where}{key}' (known: {known})")
        if isinstance(base[key], dict) and isinstance(value, dict):
            out[key] = _merge(base[key], value, f"{where}{key}.", source)
        else:
            out[key] = value
    return out


def _build(cls: type, data: Any, where: str, source: str) -> Any:
    """Turn plain YAML data into dataclass `cls`, checking every key and type."""
    if dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise KtedgeError(f"{source}: '{where or 'config'}' must be a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise KtedgeError(f"{source}: unknown config key '{where}{unknown[0]}' (known: {', '.join(names)})")
        missing = [n for n in names if n not in data]
        if missing:
            raise KtedgeError(f"{source}: config key '{where}{missing[0]}' is missing")
        return cls(**{n: _build(hints[n], data[n], f"{where}{n}.", source) for n in names})
    key = where.rstrip(".")
    if typing.get_origin(cls) is list:
        (item,) = typing.get_args(cls)
        if not isinstance(data, list):
            raise KtedgeError(f"{source}: '{key}' must be a list, got {type(data).__name__}")
        return [_build(item, d, f"{key}[{i}].", source) for i, d in enumerate(data)]
    ok = {
        int: isinstance(data, int) and not isinstance(data, bool),
        float: isinstance(data, (int, float)) and not isinstance(data, bool),
        str: isinstance(data, str),
        bool: isinstance(data, bool),
    }[cls]
    if not ok:
        raise KtedgeError(f"{source}: '{key}' must be {cls.__name__}, got {data!r}")
    return float(data) if cls is float else data


def _check_values(cfg: Config, source: str) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise KtedgeError(f"{source}: {msg}")

    need(cfg.data.image_size >= 16, "data.image_size must be >= 16")
    need(cfg.data.n_train >= 16 and cfg.data.n_val >= 16, "data.n_train and data.n_val must be >= 16")
    need(2 <= cfg.data.n_identities <= 1000, "data.n_identities must be in 2..1000")
    from ktedge.model.data.datasets import BUILT_IN, FORMATS

    need(cfg.data.format in FORMATS, f"data.format '{cfg.data.format}' is not one of {', '.join(FORMATS)}")
    need(cfg.data.format in BUILT_IN or bool(cfg.data.train_dir),
         f"data.format {cfg.data.format} reads a dataset folder: set data.train_dir")
    for i, enc in enumerate([cfg.model.canonical, *cfg.model.priors]):
        where = "model.canonical" if i == 0 else f"model.priors[{i - 1}]"
        need(enc.backbone in BACKBONES, f"{where}.backbone '{enc.backbone}' is not one of {', '.join(BACKBONES)}")
        need(enc.task in TASKS, f"{where}.task '{enc.task}' is not one of {', '.join(TASKS)}")
        need(TASKS[enc.task].trainable or bool(enc.pretrained),
             f"{where}: task '{enc.task}' comes only with a pre-trained encoder (onet, or a .pt2 program)")
        need(enc.pretrained in ("", "facenet-pytorch") or is_program(enc.pretrained),
             f"{where}.pretrained must be '', 'facenet-pytorch' or the path of a torch.export .pt2")
        need((enc.backbone == "onet") == (enc.pretrained == "facenet-pytorch"),
             f"{where}: the onet backbone and pretrained 'facenet-pytorch' go together")
        need((enc.backbone == "program") == is_program(enc.pretrained),
             f"{where}: a .pt2 encoder is backbone 'program', and backbone 'program' needs pretrained: PATH.pt2")
        need(enc.width >= 8, f"{where}.width must be >= 8")
    need(TASKS[cfg.model.canonical.task].trainable,
         f"model.canonical.task '{cfg.model.canonical.task}' has no decoder to train (a prior-only task)")
    from ktedge.model.systems import SYSTEM_NAMES, get

    need(cfg.model.system in SYSTEM_NAMES, f"model.system '{cfg.model.system}' is not one of {', '.join(SYSTEM_NAMES)}")
    requires = get(cfg.model.system).requires
    if requires is not None:
        task, backbone = requires
        need((cfg.model.canonical.task, cfg.model.canonical.backbone) == (task, backbone),
             f"model.system {cfg.model.system} needs model.canonical.task {task} and backbone {backbone}")
    need(len(cfg.model.priors) >= 1, "model.priors must list at least one prior encoder")
    a = cfg.model.adapter
    need(a.dim % a.heads == 0, "model.adapter.dim must be divisible by model.adapter.heads")
    need(a.layers >= 1, "model.adapter.layers must be >= 1")
    for p in ("p_drop", "p_all", "p_canon"):
        need(0.0 <= getattr(a, p) <= 1.0, f"model.adapter.{p} must be in [0, 1]")
    need(cfg.train.landmark_loss in ("wing", "l1"), "train.landmark_loss must be 'wing' or 'l1'")
    need(cfg.train.device in ("auto", "cpu", "cuda"), "train.device must be auto, cpu or cuda")
    from ktedge.export.registry import exporters

    names = [e.name for f in cfg.export.formats if f in exporters() for e in exporters()[f]]
    for name in cfg.export.only:
        need(name in names, f"export.only: '{name}' is not an artifact of export.formats ({', '.join(names)})")
    need(cfg.train.batch_size >= 2, "train.batch_size must be >= 2")
    q = cfg.quantize
    from ktedge.quantize.quantizers import BACKENDS, OBSERVERS, RUNTIME_BACKENDS

    for b in q.backends:
        need(b in (*BACKENDS, *RUNTIME_BACKENDS),
             f"quantize.backends: '{b}' is not one of {', '.join((*BACKENDS, *RUNTIME_BACKENDS))}")
    need(q.observer in OBSERVERS, f"quantize.observer must be one of {', '.join(OBSERVERS)}")
    need(q.calibration_faces >= 1, "quantize.calibration_faces must be >= 1")
    need(q.eval_faces >= 16, "quantize.eval_faces must be >= 16")
    need(q.max_drift_rel > 0, "quantize.max_drift_rel must be > 0")
    need(q.max_float_layers >= 0, "quantize.max_float_layers must be >= 0")
    from ktedge.export.registry import FORMATS

    for f in cfg.export.formats:
        need(f in FORMATS, f"export.formats: '{f}' is not one of {', '.join(FORMATS)}")
    b = cfg.bench
    need(b.warmup >= 0 and b.iters >= 5, "bench.warmup must be >= 0 and bench.iters >= 5")
    need(1 <= b.rounds <= b.iters, "bench.rounds must be between 1 and bench.iters")
    need(b.threads >= 1, "bench.threads must be >= 1")
    need(min(cfg.train.prior_epochs, cfg.train.canonical_epochs, cfg.train.adapter_epochs) >= 0, "epochs must be >= 0")
    from ktedge.specs import SHIPPED

    for name in cfg.published:
        need(name in SHIPPED, f"published: '{name}' is not one of ktedge's published models ({', '.join(SHIPPED)})")


def parse_override(text: str) -> dict[str, Any]:
    """'train.lr=0.01' -> {'train': {'lr': 0.01}} (the value parsed as YAML)."""
    if "=" not in text:
        raise KtedgeError(f"--set '{text}': expected KEY=VALUE, e.g. train.adapter_epochs=5")
    key, value = text.split("=", 1)
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = yaml.safe_load(value)
    return out


def load_config(path: str | Path | None = None, overrides: list[dict[str, Any]] | None = None) -> Config:
    """The embedded default, with the YAML file at `path` and then `overrides` merged over it."""
    data = default_dict()
    source = "default config"
    if path is not None:
        source = str(path)
        try:
            user = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise KtedgeError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            raise KtedgeError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if user is not None:
            if not isinstance(user, dict):
                raise KtedgeError(f"{path}: a config must be a YAML mapping")
            data = _merge(data, user, "", source)
    for over in overrides or []:
        data = _merge(data, over, "", "--set")
    cfg = _build(Config, data, "", source)
    _check_values(cfg, source)
    return cfg


def config_from_dict(data: dict[str, Any], source: str) -> Config:
    """Rebuild a Config stored in a checkpoint or run directory: merged over the defaults like a
    user file (sections added since it was written take their defaults), same strict checks."""
    if not isinstance(data, dict):
        raise KtedgeError(f"{source}: a config must be a mapping")
    cfg = _build(Config, _merge(default_dict(), data, "", source), "", source)
    _check_values(cfg, source)
    return cfg
