"""`ktedge train`: priors on their tasks (then frozen), the canonical encoder on the canonical task
(then frozen), then the KT-Adapter + canonical decoder over the frozen encoders' embeddings.

Because every encoder is frozen in the last step, their embeddings are computed once and cached:
the adapter stage trains on vectors, not images.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from torch import nn

from ktedge.atomic import sha256_file, sha256_json, write_json, write_text
from ktedge.config import Config, TrainConfig
from ktedge.errors import KtedgeError
from ktedge.model.checkpoint import save_checkpoint
from ktedge.model.data.datasets import dataset_digest, held_out_source, split_faces
from ktedge.model.data.faces import FaceSet
from ktedge.model.encoders import Encoder, freeze, pretrained_digest
from ktedge.model.fuse import count_params
from ktedge.model.kt_model import KTModel
from ktedge.model.systems import get as get_system
from ktedge.model.tasks import TASKS, as_outputs
from ktedge.progress import progress


@dataclass
class Split:
    images: torch.Tensor  # (N, 3, S, S) raw 0..255, on the training device
    targets: dict[str, torch.Tensor]

    @property
    def device(self) -> torch.device:
        return self.images.device


def _split(fs: FaceSet, device: torch.device) -> Split:
    t = {k: v.to(device) for k, v in fs.tensors().items()}
    return Split(t.pop("image"), t)


def resolve_device(name: str) -> torch.device:
    """train.device: `auto` takes CUDA where there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise KtedgeError("train.device is cuda, but this torch sees no CUDA device "
                          f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use auto or cpu")
    return torch.device(name)


def _batches(n: int, batch_size: int, gen: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    return list(order.split(batch_size))


@torch.no_grad()
def _predict(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([fn(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])


@torch.no_grad()
def predict_outputs(fn: Callable, inputs: torch.Tensor, batch_size: int = 64) -> list[np.ndarray]:
    """Every output of a single- or multi-output graph over `inputs`, in batches (batch_size 1 for
    a program exported for batch 1 only)."""
    parts = [as_outputs(fn(inputs[i:i + batch_size])) for i in range(0, len(inputs), batch_size)]
    return [torch.cat([p[k] for p in parts]).cpu().numpy() for k in range(len(parts[0]))]


def fit(params: list[nn.Parameter], modules: list[nn.Module], step_loss: Callable[[torch.Tensor], torch.Tensor],
        val_loss: Callable[[], float], n: int, epochs: int, tc: TrainConfig, bar, desc: str, seed: int) -> dict:
    """AdamW + cosine schedule over `epochs` passes of `n` samples; held-out loss before and after."""
    for m in modules:
        m.eval()
    before = val_loss()
    steps = max(1, epochs * -(-n // tc.batch_size))
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    task = bar.add_task(desc, total=epochs, info="")
    for epoch in range(epochs):
        for m in modules:
            m.train()
        total = 0.0
        for idx in _batches(n, tc.batch_size, gen):
            loss = step_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        bar.update(task, advance=1, info=f"train loss {total / n:.4f}")
    for m in modules:
        m.eval()
    after = val_loss()
    bar.update(task, info=f"held-out loss {before:.4f} -> {after:.4f}")
    return {"held_out_loss_before": before, "held_out_loss_after": after, "epochs": epochs}


def train_encoder(encoder: Encoder, task_name: str, epochs: int, cfg: Config, train: Split, val: Split, bar,
                  desc: str) -> tuple[nn.Module, dict]:
    """Train encoder + a fresh head for `task_name`; returns the head and the held-out record."""
    task = TASKS[task_name]
    head = task.head(encoder.dim, cfg.model.head_hidden)
    loss_fn = task.loss(cfg.data.image_size, cfg.data.n_identities, cfg.train.landmark_loss).to(train.device)
    model = nn.Sequential(encoder, head).to(train.device)
    y_tr, y_val = train.targets[task_name], val.targets[task_name]

    def val_loss() -> float:
        with torch.no_grad():
            return loss_fn(_predict(model, val.images), y_val).item()

    record = fit([*model.parameters(), *loss_fn.parameters()], [model, loss_fn],
                 lambda idx: loss_fn(model(train.images[idx]), y_tr[idx]), val_loss,
                 len(train.images), epochs, cfg.train, bar, desc, cfg.seed)
    with torch.no_grad():
        record[task.metric_name] = task.metric(_predict(model, val.images).cpu().numpy(), y_val.cpu().numpy())
    return head, record


def train_head(cfg: Config, task_name: str, train_x: torch.Tensor, val_x: torch.Tensor, train: Split, val: Split,
               epochs: int, bar, desc: str) -> tuple[nn.Module, dict]:
    """A fresh head for `task_name` trained on frozen embeddings (cached vectors, not images)."""
    task = TASKS[task_name]
    head = task.head(train_x.shape[1], cfg.model.head_hidden).to(train.device)
    loss_fn = task.loss(cfg.data.image_size, cfg.data.n_identities, cfg.train.landmark_loss).to(train.device)
    y_tr, y_val = train.targets[task_name], val.targets[task_name]
    record = fit([*head.parameters(), *loss_fn.parameters()], [head, loss_fn],
                 lambda idx: loss_fn(head(train_x[idx]), y_tr[idx]),
                 lambda: loss_fn(_predict(head, val_x), y_val).item(),
                 len(train_x), epochs, cfg.train, bar, desc, cfg.seed)
    record[task.metric_name] = task.metric(_predict(head, val_x).cpu().numpy(), y_val.cpu().numpy())
    return head.eval(), record


def evaluate_modes(model: KTModel, e_c: torch.Tensor, e_p: list[torch.Tensor], target: torch.Tensor) -> dict:
    """Held-out metric of the three models every KT run reports."""
    task = TASKS[model.task]
    out = {}
    for key, mode in (("canonical_alone", "canonical"), ("kt_deploy", "deploy"), ("ensemble", "ensemble")):
        with torch.no_grad():
            pred = model.decode(e_c, e_p, mode)
        out[key] = {task.metric_name: task.metric(pred.cpu().numpy(), target.cpu().numpy())}
    return out


def train(cfg: Config, out: str | Path) -> dict:
    """Train what `cfg` asks; write <out>/train/checkpoint.pt and metrics.json; return the metrics."""
    out = Path(out)
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    d = cfg.data
    if d.image_size % 16 or d.image_size < 32:  # the backbones' strides and the ViT's 8 px patches
        raise KtedgeError(f"data.image_size {d.image_size}: ktedge's backbones train on a multiple of 16, >= 32")
    system = get_system(cfg.model.system)
    tasks = system.label_tasks(cfg)
    with progress() as bar:
        synthetic = d.format == "synthetic"
        faces_task = bar.add_task("synthetic faces" if synthetic else f"{d.format} faces from {d.train_dir}",
                                  total=d.n_train + d.n_val if synthetic else None, info="")
        tick = lambda k: bar.update(faces_task, advance=k)  # noqa: E731
        train_faces = split_faces(cfg, "train", tasks, on_progress=tick)
        val_faces = split_faces(cfg, "val", tasks, on_progress=tick)
        bar.update(faces_task, total=len(train_faces) + len(val_faces), completed=len(train_faces) + len(val_faces))
        train_set, val_set = _split(train_faces, device), _split(val_faces, device)
        model, body = system.train(cfg, train_set, val_set, bar)
    model = model.cpu()

    data = {"format": d.format, "train_faces": len(train_faces), "labels": tasks, "held_out": held_out_source(cfg, "val")}
    metrics = {**body, "data": data, "held_out_faces": len(val_faces), "device": str(device),
               "wall_s": round(time.perf_counter() - t0, 2), "config_sha256": train_config_sha256(cfg)}
    train_dir = out / "train"
    save_checkpoint(train_dir / "checkpoint.pt", model, cfg)
    metrics["checkpoint_sha256"] = sha256_file(train_dir / "checkpoint.pt")
    write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    write_json(train_dir / "metrics.json", metrics)
    return metrics


def train_kt(cfg: Config, train_set: Split, val_set: Split, bar) -> tuple[KTModel, dict]:
    """Priors, then the canonical encoder, then the KT-Adapter + d_c; the three models' metrics."""
    d = cfg.data
    heads: dict[str, dict] = {}
    model = KTModel(cfg).to(train_set.device)
    for i, (pcfg, enc) in enumerate(zip(cfg.model.priors, model.priors)):
        if not pcfg.pretrained:
            _, heads[f"prior{i}:{pcfg.task}"] = train_encoder(enc, pcfg.task, cfg.train.prior_epochs, cfg, train_set, val_set, bar,
                                                              f"prior {i} ({pcfg.task}, {pcfg.backbone})")
        freeze(enc)
    task_name = cfg.model.canonical.task
    embed = lambda images: (_predict(model.canonical, images), [_predict(p, images) for p in model.priors])  # noqa: E731
    desc = f"canonical ({task_name}, {cfg.model.canonical.backbone})"
    if cfg.model.canonical.pretrained:  # a program encoder, frozen as it came: only its decoder trains
        (ec_tr, ep_tr), (ec_val, ep_val) = embed(train_set.images), embed(val_set.images)
        head, heads[f"canonical_decoder:{task_name}"] = train_head(
            cfg, task_name, ec_tr, ec_val, train_set, val_set, cfg.train.canonical_epochs, bar, f"{desc}: its decoder")
    else:
        head, heads[f"canonical:{task_name}"] = train_encoder(model.canonical, task_name, cfg.train.canonical_epochs,
                                                              cfg, train_set, val_set, bar, desc)
        freeze(model.canonical)
        (ec_tr, ep_tr), (ec_val, ep_val) = embed(train_set.images), embed(val_set.images)
    model.baseline_decoder.load_state_dict(head.state_dict())
    freeze(model.baseline_decoder)
    model.decoder.load_state_dict(copy.deepcopy(head.state_dict()))  # d_c starts as the canonical decoder

    task = TASKS[task_name]
    loss_fn = task.loss(d.image_size, d.n_identities, cfg.train.landmark_loss).to(train_set.device)
    y_tr, y_val = train_set.targets[task_name], val_set.targets[task_name]
    trainable = [*model.adapter.parameters(), *model.decoder.parameters(), *loss_fn.parameters()]

    def kt_val_loss() -> float:
        with torch.no_grad():
            return loss_fn(model.decode(ec_val, None, "deploy"), y_val).item()

    heads[f"kt_adapter:{task_name}"] = fit(
        trainable, [model, loss_fn],
        lambda idx: loss_fn(model.decode(ec_tr[idx], [e[idx] for e in ep_tr], "train"), y_tr[idx]),
        kt_val_loss, len(ec_tr), cfg.train.adapter_epochs, cfg.train, bar, f"KT-Adapter + d_c ({task_name})", cfg.seed)
    model.eval()
    modes = evaluate_modes(model, ec_val, ep_val, y_val)

    body = {"metric": task.metric_name, "lower_is_better": task.lower_is_better, **modes, "heads": heads,
            "params": _param_counts(model),
            "compare": compare_rows(modes, {"canonical_alone": "canonical encoder alone",
                                            "kt_deploy": "KT deploy {t_k, t_c}", "ensemble": "ensemble (all priors)"})}
    return model, body


def compare_rows(metrics: dict[str, dict], labels: dict[str, str]) -> list[dict]:
    """train/metrics.json's `compare`: the held-out metrics of the trained model and what it is
    measured against, one row each, for the CLI and the report to print as they are."""
    return [{"key": key, "label": label, "metrics": metrics[key]} for key, label in labels.items() if key in metrics]


def train_config_sha256(cfg: Config) -> str:
    """Hash of the config sections training reads: a change elsewhere does not force a retrain."""
    d = cfg.to_dict()
    return sha256_json({**{k: d[k] for k in ("seed", "data", "model", "train")}, "dataset": dataset_digest(cfg),
                        "pretrained": pretrained_digest(cfg)})


def _param_counts(model: KTModel) -> dict[str, int]:
    return {"canonical_encoder": count_params(model.canonical), "priors": count_params(model.priors),
            "adapter": count_params(model.adapter), "decoder": count_params(model.decoder)}
