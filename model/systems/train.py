"""Training of the systems other than the KT model: the system on its task and, beside it, a
plain baseline of the same size (the same backbone depth and width, a linear head, the plain loss)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ktedge.config import Config
from ktedge.model.backbones.vit import ViT
from ktedge.model.encoders import Encoder
from ktedge.model.systems import build
from ktedge.model.systems.mzts import BLOCKS_PER_ZONE, ZONES, mzts_loss
from ktedge.model.tasks import TASKS


def count(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def train_mzts(cfg: Config, train, val, bar) -> tuple[nn.Module, dict]:
    """-> the trained MZTS, and its metrics record beside the baseline's."""
    from ktedge.model.train import _predict, fit, train_encoder

    task = TASKS["attributes"]
    model = build(cfg)
    y_tr, y_val = train.targets["attributes"], val.targets["attributes"]

    def val_loss() -> float:
        with torch.no_grad():
            return F.binary_cross_entropy_with_logits(_predict(model, val.images), y_val).item()

    record = fit(list(model.parameters()), [model], lambda idx: mzts_loss(model.zone_logits(train.images[idx]), y_tr[idx]),
                 val_loss, len(train.images), cfg.train.canonical_epochs, cfg.train, bar,
                 f"MZTS ({ZONES} zones x {BLOCKS_PER_ZONE} blocks, attributes)", cfg.seed)
    model.eval()
    with torch.no_grad():
        batches = [model.zone_logits(val.images[i:i + 256]) for i in range(0, len(val.images), 256)]
        zones = [task.metric(torch.cat([b[z] for b in batches]).numpy(), y_val.numpy()) for z in range(ZONES)]
    # Baseline: the same ViT depth and width, mean-pooled tokens, an MLP head, plain BCE.
    plain = Encoder(ViT(cfg.model.canonical.width, cfg.data.image_size, depth=ZONES * BLOCKS_PER_ZONE))
    torch.manual_seed(cfg.seed)
    head, base = train_encoder(plain, "attributes", cfg.train.canonical_epochs, cfg, train, val, bar,
                               "baseline: plain ViT + head, BCE")
    body = {"system": "mzts", "metric": task.metric_name, "lower_is_better": task.lower_is_better,
            "system_model": {task.metric_name: zones[-1]}, "baseline": {task.metric_name: base[task.metric_name]},
            "per_zone": [{task.metric_name: m} for m in zones],
            "heads": {"mzts:attributes": record, "baseline:attributes": base},
            "params": {"trainable": count(model, True), "total": count(model),
                       "baseline": count(plain) + count(head)}}
    return model, body


TRAINERS = {"mzts": train_mzts}
