"""Training of the systems other than the KT model: the system on its task and, beside it, a
plain baseline of the same size (the same backbone depth and width, a linear head, the plain loss)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ktedge.config import Config
from ktedge.model.backbones.vit import ViT
from ktedge.model.encoders import Encoder
from ktedge.model.fuse import count_params
from ktedge.model.systems import build
from ktedge.model.systems.mzts import BLOCKS_PER_ZONE, ZONES, mzts_loss
from ktedge.model.tasks import TASKS


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
            "params": {"trainable": count_params(model, trainable_only=True), "total": count_params(model),
                       "baseline": count_params(plain) + count_params(head)}}
    return model, body


def train_auformer(cfg: Config, train, val, bar) -> tuple[nn.Module, dict]:
    """The ViT is pre-trained on landmarks and frozen; then the experts + head train with MDWA.
    Baseline: the same frozen ViT, a linear head on its pooled tokens, plain BCE."""
    from ktedge.model.encoders import freeze
    from ktedge.model.losses import MDWALoss
    from ktedge.model.train import _predict, fit, train_encoder

    task = TASKS["action_units"]
    model = build(cfg)
    vit = model.encoder.backbone.vit
    pretrained = Encoder(vit)  # shares the ViT: trained on the landmark task, then frozen
    _, pre = train_encoder(pretrained, "landmarks", cfg.train.prior_epochs, cfg, train, val, bar,
                           "AUFormer's ViT, pre-trained on landmarks")
    freeze(vit)
    y_tr, y_val = train.targets["action_units"], val.targets["action_units"]
    mdwa = MDWALoss(y_tr.mean(0))
    trainable = [p for p in model.parameters() if p.requires_grad]

    def val_loss() -> float:
        with torch.no_grad():
            return mdwa(_predict(model, val.images), y_val).item()

    record = fit(trainable, [model], lambda idx: mdwa(model(train.images[idx]), y_tr[idx]), val_loss,
                 len(train.images), cfg.train.canonical_epochs, cfg.train, bar, "AUFormer experts + head (MDWA)", cfg.seed)
    freeze(vit)  # fit() puts modules back in train mode; the ViT stays frozen and in eval
    model.eval()
    record[task.metric_name] = task.metric(_predict(model, val.images).numpy(), y_val.numpy())
    # Baseline on the same frozen features.
    e_tr, e_val = _predict(pretrained, train.images), _predict(pretrained, val.images)
    head = nn.Linear(vit.dim, y_tr.shape[1])
    base = fit(list(head.parameters()), [head],
               lambda idx: F.binary_cross_entropy_with_logits(head(e_tr[idx]), y_tr[idx]),
               lambda: F.binary_cross_entropy_with_logits(_predict(head, e_val), y_val).item(),
               len(e_tr), cfg.train.canonical_epochs, cfg.train, bar, "baseline: frozen ViT + linear head, BCE", cfg.seed)
    base[task.metric_name] = task.metric(_predict(head, e_val).numpy(), y_val.numpy())
    body = {"system": "auformer", "metric": task.metric_name, "lower_is_better": task.lower_is_better,
            "system_model": {task.metric_name: record[task.metric_name]},
            "baseline": {task.metric_name: base[task.metric_name]},
            "heads": {"vit:landmarks": pre, "auformer:action_units": record, "baseline:action_units": base},
            "params": {"trainable": count_params(model, trainable_only=True), "total": count_params(model),
                       "baseline_trainable": count_params(head)}}
    return model, body


TRAINERS = {"mzts": train_mzts, "auformer": train_auformer}
