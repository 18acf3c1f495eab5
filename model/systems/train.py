"""Training of the systems other than the KT model: the system on its task and, beside it, a
plain baseline of the same size (e.g. the same backbone with a plain head, or the same model
with the plain loss)."""
from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ktedge.config import Config
from ktedge.model.backbones.vit import ViT
from ktedge.model.encoders import Encoder
from ktedge.model.fuse import count_params
from ktedge.model.systems import get
from ktedge.model.systems.auformer import EXPERT_LR_SCALE
from ktedge.model.systems.mzts import BLOCKS_PER_ZONE, ZONES, mzts_loss
from ktedge.model.tasks import TASKS


def train_mzts(cfg: Config, train, val, bar) -> tuple[nn.Module, dict]:
    """-> the trained MZTS, and its metrics record beside the baseline's."""
    from ktedge.model.train import _predict, fit, train_encoder

    task = TASKS["attributes"]
    model = get(cfg.model.system).build(cfg, True).to(train.device)
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
        zones = [task.metric(torch.cat([b[z] for b in batches]).cpu().numpy(), y_val.cpu().numpy()) for z in range(ZONES)]
    # Baseline: the same ViT depth and width, mean-pooled tokens, an MLP head, plain BCE.
    plain = Encoder(ViT(cfg.model.canonical.width, cfg.data.image_size, depth=ZONES * BLOCKS_PER_ZONE)).to(train.device)
    torch.manual_seed(cfg.seed)
    head, base = train_encoder(plain, "attributes", cfg.train.canonical_epochs, cfg, train, val, bar,
                               "baseline: plain ViT + head, BCE")
    body = {"system": "mzts", "metric": task.metric_name, "lower_is_better": task.lower_is_better,
            "system_model": {task.metric_name: zones[-1]}, "baseline": {task.metric_name: base[task.metric_name]},
            "per_zone": [{task.metric_name: m} for m in zones],
            "heads": {"mzts:attributes": record, "baseline:attributes": base},
            "params": {"trainable": count_params(model, trainable_only=True), "total": count_params(model),
                       "baseline": count_params(plain) + count_params(head)}}
    return model, _with_compare(body)


def train_auformer(cfg: Config, train, val, bar) -> tuple[nn.Module, dict]:
    """The ViT is pre-trained on landmarks (canonical epochs) and frozen; then the experts + head,
    the adapter of this system, train with MDWA (adapter epochs, at EXPERT_LR_SCALE x the lr).
    Baseline of the same size: the same frozen ViT, experts and head trained with plain BCE."""
    from ktedge.model.encoders import freeze
    from ktedge.model.losses import MDWALoss
    from ktedge.model.train import _predict, fit, train_encoder

    task = TASKS["action_units"]
    model = get(cfg.model.system).build(cfg, True).to(train.device)
    vit = model.encoder.backbone.vit
    # The ViT is the canonical encoder: trained on landmarks as long as a canonical encoder (6 epochs
    # left it near the mean shape, NME 18.3, and the experts on it below a guess at each AU's rate).
    _, pre = train_encoder(Encoder(vit), "landmarks", cfg.train.canonical_epochs, cfg, train, val, bar,
                           "AUFormer's ViT, pre-trained on landmarks")
    freeze(vit)
    plain = copy.deepcopy(model)  # the same frozen ViT and freshly initialised experts
    y_tr, y_val = train.targets["action_units"], val.targets["action_units"]
    experts_tc = dataclasses.replace(cfg.train, lr=cfg.train.lr * EXPERT_LR_SCALE)
    heads = {"vit:landmarks": pre}
    for key, m, loss_fn, desc in (
            ("auformer:action_units", model, MDWALoss(y_tr.mean(0)).to(train.device), "AUFormer experts + head (MDWA)"),
            ("baseline:action_units", plain, F.binary_cross_entropy_with_logits, "baseline: the same experts + head, BCE")):
        heads[key] = fit([p for p in m.parameters() if p.requires_grad], [m],
                         lambda idx, m=m, f=loss_fn: f(m(train.images[idx]), y_tr[idx]),
                         lambda m=m, f=loss_fn: f(_predict(m, val.images), y_val).item(),
                         len(train.images), cfg.train.adapter_epochs, experts_tc, bar, desc, cfg.seed)
        freeze(m.encoder.backbone.vit)  # fit() puts modules back in train mode; the ViT stays frozen and in eval
        m.eval()
        heads[key][task.metric_name] = task.metric(_predict(m, val.images).cpu().numpy(), y_val.cpu().numpy())
    name = task.metric_name
    body = {"system": "auformer", "metric": name, "lower_is_better": task.lower_is_better,
            "system_model": {name: heads["auformer:action_units"][name]},
            "baseline": {name: heads["baseline:action_units"][name]}, "heads": heads,
            "params": {"trainable": count_params(model, trainable_only=True), "total": count_params(model),
                       "baseline_trainable": count_params(plain, trainable_only=True)}}
    return model, _with_compare(body)


def train_faceptor(cfg: Config, train, val, bar) -> tuple[nn.Module, dict]:
    """Faceptor on its four tasks at once; baseline: the same ViT + one MLP head per task, the
    tasks' plain losses summed, as many parameters."""
    from ktedge.model.systems.faceptor import QUERIES, FaceptorLoss, PlainMultiTask
    from ktedge.model.tasks import evaluate
    from ktedge.model.train import fit, predict_outputs

    tasks = list(QUERIES)
    model = get(cfg.model.system).build(cfg, True).to(train.device)
    loss_fn = FaceptorLoss(cfg.data.image_size).to(train.device)
    pick = lambda split, idx: {t: split.targets[t][idx] for t in tasks}  # noqa: E731
    val_all = torch.arange(len(val.images))

    def val_loss() -> float:
        with torch.no_grad():
            return sum(loss_fn(model, val.images[i], pick(val, i)).item() * len(i) for i in val_all.split(256)) / len(val_all)

    record = fit(list(model.parameters()), [model], lambda idx: loss_fn(model, train.images[idx], pick(train, idx)),
                 val_loss, len(train.images), cfg.train.canonical_epochs, cfg.train, bar,
                 "Faceptor (landmarks, age, attributes, expression in one pass)", cfg.seed)
    targets = {t: val.targets[t].cpu().numpy() for t in tasks}

    def held_out(m: nn.Module) -> dict[str, float]:
        return {TASKS[t].metric_name: v for t, v in evaluate(tasks, predict_outputs(m, val.images), targets).items()}

    model.eval()
    torch.manual_seed(cfg.seed)
    plain = PlainMultiTask(cfg.model.canonical.width, cfg.data.image_size, count_params(model)).to(train.device)
    losses = [TASKS[t].loss(cfg.data.image_size, cfg.data.n_identities, cfg.train.landmark_loss).to(train.device)
              for t in tasks]
    plain_loss = lambda outs, y: sum(f(o, y[t]) for f, o, t in zip(losses, outs, tasks))  # noqa: E731

    def plain_val_loss() -> float:
        with torch.no_grad():
            return sum(plain_loss(plain(val.images[i]), pick(val, i)).item() * len(i) for i in val_all.split(256)) / len(val_all)

    base = fit(list(plain.parameters()), [plain], lambda idx: plain_loss(plain(train.images[idx]), pick(train, idx)),
               plain_val_loss, len(train.images), cfg.train.canonical_epochs, cfg.train, bar,
               "baseline: the same ViT + one MLP head per task", cfg.seed)
    plain.eval()
    system, baseline = held_out(model), held_out(plain)
    task = TASKS[tasks[0]]
    body = {"system": "faceptor", "metric": task.metric_name, "lower_is_better": task.lower_is_better,
            "tasks": {t: {"metric": TASKS[t].metric_name, "lower_is_better": TASKS[t].lower_is_better} for t in tasks},
            "system_model": system, "baseline": baseline,
            "heads": {"faceptor": record, "baseline": base},
            "params": {"trainable": count_params(model, trainable_only=True), "total": count_params(model),
                       "baseline": count_params(plain)}}
    return model, _with_compare(body)


def train_transfer(cfg: Config, train, val, bar) -> tuple[nn.Module, dict]:
    """Teachers (trained on their tasks unless pre-trained, then frozen) -> auto-encoder over their
    embeddings -> student distilled to the common code -> canonical-task head on the frozen student.
    Compared with the teachers (the same head on their embeddings) and with a baseline: the
    student's architecture trained directly on the task."""
    from ktedge.model.encoders import build_encoder, freeze
    from ktedge.model.systems.transfer import CODE_DIM, distill_loss
    from ktedge.model.train import _predict, fit, train_encoder, train_head

    task = TASKS[cfg.model.canonical.task]
    model = get(cfg.model.system).build(cfg, True).to(train.device)
    heads: dict[str, dict] = {}
    for i, (pcfg, teacher) in enumerate(zip(cfg.model.priors, model.teachers)):
        if not pcfg.pretrained:
            _, heads[f"teacher{i}:{pcfg.task}"] = train_encoder(teacher, pcfg.task, cfg.train.prior_epochs, cfg, train,
                                                                val, bar, f"teacher {i} ({pcfg.task}, {pcfg.backbone})")
        freeze(teacher)
    z_tr, z_val = _predict(model.teacher_embedding, train.images), _predict(model.teacher_embedding, val.images)
    ae = model.autoencoder
    ae.mean.copy_(z_tr.mean(0))
    ae.std.copy_(z_tr.std(0).clamp_min(1e-6))
    heads["autoencoder"] = fit(list(ae.parameters()), [ae], lambda idx: ae.loss(z_tr[idx]),
                               lambda: ae.loss(z_val).item(), len(z_tr), cfg.train.adapter_epochs, cfg.train, bar,
                               f"auto-encoder: {z_tr.shape[1]}-d teacher embeddings -> {CODE_DIM}-d code", cfg.seed)
    freeze(ae)
    c_tr, c_val = _predict(ae.encode, z_tr), _predict(ae.encode, z_val)
    student = [model.student, model.project]
    heads["student"] = fit([p for m in student for p in m.parameters()], student,
                           lambda idx: distill_loss(model.embed(train.images[idx]), c_tr[idx]),
                           lambda: distill_loss(_predict(model.embed, val.images), c_val).item(),
                           len(train.images), cfg.train.canonical_epochs, cfg.train, bar,
                           f"student ({cfg.model.canonical.backbone}) distilled to the code", cfg.seed)
    for m in student:
        freeze(m)
    s_tr, s_val = _predict(model.embed, train.images), _predict(model.embed, val.images)
    head, heads[f"student_head:{task.name}"] = train_head(cfg, task.name, s_tr, s_val, train, val,
                                                          cfg.train.adapter_epochs, bar, f"head on the student ({task.name})")
    model.head.load_state_dict(head.state_dict())
    freeze(model.head)
    _, teachers = train_head(cfg, task.name, ae.standardise(z_tr), ae.standardise(z_val), train, val,
                             cfg.train.adapter_epochs, bar, f"head on the teachers' embeddings ({task.name})")
    heads[f"teachers_head:{task.name}"] = teachers
    plain = build_encoder(cfg.model.canonical, cfg.data.image_size).to(train.device)  # the student's architecture, fresh
    torch.manual_seed(cfg.seed)
    plain_head, base = train_encoder(plain, task.name, cfg.train.canonical_epochs, cfg, train, val, bar,
                                     f"baseline: the student's {cfg.model.canonical.backbone} trained on {task.name}")
    heads[f"baseline:{task.name}"] = base
    model.eval()
    name = task.metric_name
    body = {"system": "transfer", "metric": name, "lower_is_better": task.lower_is_better,
            "system_model": {name: heads[f"student_head:{task.name}"][name]}, "baseline": {name: base[name]},
            "teachers": {name: teachers[name]}, "heads": heads,
            "params": {"student": count_params(model.student) + count_params(model.project) + count_params(model.head),
                       "teachers": count_params(model.teachers), "autoencoder": count_params(ae),
                       "baseline": count_params(plain) + count_params(plain_head)}}
    return model, _with_compare(body)


def _with_compare(body: dict) -> dict:
    """The trained system beside its baseline of the same size (and multi-source transfer's teachers)."""
    from ktedge.model.train import compare_rows

    labels = {"system_model": body["system"], "baseline": "baseline of the same size",
              "teachers": "teachers (a head on their embeddings)"}
    return {**body, "compare": compare_rows(body, labels)}
