"""Fuse: a trained model -> the run's deployable (ktedge/deployable.py), the deploy graph an app runs.
For the KT model:

- The prior encoders are dropped: the graph is canonical encoder -> {t_k, t_c} adapter -> d_c.
- Everything that depends only on the constant knowledge token t_k (its LayerNorm, its
  query/key/value projections, its self-score) is folded into constants and Linear weights.
- BatchNorm is folded into the preceding convolution.
- Input normalisation is folded into the first convolution, so the graph takes raw RGB 0..255.
  Zero padding of a normalised image equals padding the raw image with the mean, so the folded
  stem pads with the mean explicitly and the result is exact at the borders too.
The other systems give their own deploy module (model/systems); the KT model's comparison models
(the ensemble, the canonical encoder alone) are deployables of their own in fuse/comparisons/.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ktedge.atomic import sha256_file, verify_record, write_json
from ktedge.deployable import crop_rule, export_program, raw_rgb_input, write_deployable
from ktedge.errors import KtedgeError
from ktedge.model.adapter import KTAdapter
from ktedge.model.align import measured_alignment
from ktedge.model.checkpoint import load_checkpoint
from ktedge.model.data.datasets import held_out_source, split_faces
from ktedge.model.encoders import Encoder, ProgramEncoder
from ktedge.model.kt_model import KTModel
from ktedge.model.systems import deploy_name, get as get_system
from ktedge.model.tasks import TASKS, as_outputs


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every Conv2d -> BatchNorm2d pair inside Sequential containers, in place."""
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(seq[i].eval(), seq[i + 1].eval())
                seq[i + 1] = nn.Identity()
    return module


@torch.no_grad()
def write_out_batchnorms(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d no convolution before it took (fold_batchnorm) as what it is in eval, a
    per-channel scale and shift: a depthwise 1x1 convolution, which every format lowers and int8
    quantizes per channel. In place."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                scale = torch.rsqrt(child.running_var + child.eps)
                weight = child.weight if child.affine else torch.ones_like(scale)
                bias = child.bias if child.affine else torch.zeros_like(scale)
                conv = nn.Conv2d(child.num_features, child.num_features, 1, groups=child.num_features)
                conv.weight.copy_((weight * scale).reshape(-1, 1, 1, 1))
                conv.bias.copy_(bias - child.running_mean * weight * scale)
                setattr(parent, name, conv)
    return module


def _replace(root: nn.Module, target: nn.Module, new: nn.Module) -> None:
    for name, child in root.named_modules():
        for cname, c in child.named_children():
            if c is target:
                setattr(child, cname, new)
                return
    raise ValueError("module not found")


@torch.no_grad()
def fold_input_norm(encoder: Encoder | ProgramEncoder) -> nn.Module:
    """Encoder (norm + backbone) -> backbone whose first conv takes raw 0..255 pixels. A program
    encoder takes raw pixels already and is deployed as it is."""
    if isinstance(encoder, ProgramEncoder):
        return encoder
    backbone = encoder.backbone
    conv = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d))
    mean = encoder.norm.mean.reshape(3)  # (3,)
    std = encoder.norm.std.reshape(3)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0,
                       conv.dilation, conv.groups, bias=True)
    folded.weight.copy_(conv.weight / std[None, :, None, None])
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    folded.bias.copy_(bias - (conv.weight * (mean / std)[None, :, None, None]).sum((1, 2, 3)))
    # A mean-value pad (PADV2 in LiteRT) made the LiteRT model ~10 % slower than subtracting the
    # mean before a zero-padded conv, but that subtraction runs in float ahead of the first
    # quantized op, so int8-input artifacts could not take integer pixels. Exactness and int8
    # input win; the canonical-alone comparison model is folded the same way.
    ph, pw = conv.padding
    if not torch.all(mean == mean[0]):
        raise ValueError("per-channel means need a per-channel pad; the project's encoders use one mean")
    stem = nn.Sequential(nn.ConstantPad2d((pw, pw, ph, ph), float(mean[0])), folded) if ph or pw else folded
    _replace(backbone, conv, stem)
    return backbone


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0])
    lin.weight.data.copy_(weight)
    lin.bias.data.copy_(bias)
    return lin


class Normalize(nn.Module):
    """LayerNorm without its affine (the fuse stage folds gamma/beta into the next Linear)."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        self.eps = norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Written out: converters lower F.layer_norm to ~12 ops with reshapes, this to 6.
        centred = x - x.mean(-1, keepdim=True)
        return centred * torch.rsqrt((centred * centred).mean(-1, keepdim=True) + self.eps)


class LayerNormOps(nn.Module):
    """nn.LayerNorm written out (same values): the two means over the last axis as a Linear with
    weights 1/D. ExecuTorch's XNNPACK partitioner takes neither native_layer_norm nor a 3-D mean,
    so either would split the delegated graph in two at every norm."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        dim = norm.weight.shape[0]
        self.mean = nn.Linear(dim, 1, bias=False)
        nn.init.constant_(self.mean.weight, 1.0 / dim)
        self.weight, self.bias = nn.Parameter(norm.weight.detach().clone()), nn.Parameter(norm.bias.detach().clone())
        self.eps = norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self.mean(x)  # (..., D) - (..., 1)
        # eps inside the mean (the weights sum to 1): coremltools' fuse_linear_bias crashes on a
        # one-output Linear followed by a scalar add, and its weight compression re-runs that pass.
        return centred * torch.rsqrt(self.mean(centred * centred + self.eps)) * self.weight + self.bias


def write_out_layer_norms(module: nn.Module) -> nn.Module:
    """`module` with every nn.LayerNorm (over the last axis) replaced in place by LayerNormOps."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm):
                setattr(parent, name, LayerNormOps(child))
    return module


@torch.no_grad()
def _after_norm(norm: nn.LayerNorm, weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """Linear(W, b) applied to LN(x) = g * norm(x) + beta  ->  Linear(W diag g, W beta + b) on norm(x)."""
    return _linear(weight * norm.weight[None], weight @ norm.bias + bias)


class DeployAdapter(nn.Module):
    """The KT-Adapter over {t_k, t_c} with everything that depends only on t_k folded away.
    e_c (B, C) -> e_c' (B, C).

    With one query t_k over two keys, each head's softmax is sigmoid(s_c - s_kk), and its output
    is v_k + w_c (v_c - v_k). So the attention is exactly two Linears on norm(t_c), a sigmoid, a
    product and the output projection: the scores come out already repeated over each head's
    dims (no reshapes), and t_k, v_k and the biases fold into constants. Every LayerNorm's affine
    folds into the Linear after it. A phone runs ~30 small ops here instead of ~65."""

    @torch.no_grad()
    def __init__(self, adapter: KTAdapter):
        super().__init__()
        blk = adapter.blocks[0]
        attn = blk.attn
        d = adapter.knowledge.shape[-1]
        h, hd = attn.heads, d // attn.heads
        scale = hd ** -0.5
        t_k = adapter.knowledge.reshape(d)
        n_k = blk.norm1(t_k)
        q_k, k_k, v_k = attn.q(n_k), attn.k(n_k), attn.v(n_k)  # (D,) each
        s_kk = scale * (q_k * k_k).reshape(h, hd).sum(-1)  # (H,) t_k's score on itself
        # s_c - s_kk per head = A k-input: rows of W_k weighted by q_k, summed per head
        a_w = scale * (q_k[:, None] * attn.k.weight).reshape(h, hd, d).sum(1)  # (H, D)
        a_b = scale * (q_k * attn.k.bias).reshape(h, hd).sum(-1) - s_kk  # (H,)
        proj = adapter.canonical
        self.norm0 = Normalize(proj.norm)
        self.token = _after_norm(proj.norm, proj.proj.weight, proj.proj.bias + proj.source)  # t_c
        self.norm1 = Normalize(blk.norm1)
        self.gate = _after_norm(blk.norm1, a_w.repeat_interleave(hd, 0), a_b.repeat_interleave(hd))  # (B, D)
        self.value = _after_norm(blk.norm1, attn.v.weight, attn.v.bias - v_k)  # v_c - v_k
        self.proj = _linear(attn.proj.weight, attn.proj.weight @ v_k + attn.proj.bias + t_k)  # t_k + proj(o)
        self.norm2 = Normalize(blk.norm2)
        fc1, act, fc2 = blk.mlp
        self.mlp = nn.Sequential(_after_norm(blk.norm2, fc1.weight, fc1.bias), act, fc2)
        self.out = adapter.out
        self.blocks = None
        if len(adapter.blocks) > 1:  # later blocks need the t_c row too: run them all over {t_k, t_c}
            self.blocks = adapter.blocks
            self.register_buffer("t_k", t_k.clone())

    def forward(self, e_c: torch.Tensor) -> torch.Tensor:
        t_c = self.token(self.norm0(e_c))  # (B, D)
        if self.blocks is not None:
            x = torch.stack([self.t_k.expand_as(t_c), t_c], 1)  # (B, 2, D)
            for blk in self.blocks:
                x = blk(x)
            return e_c + self.out(x[:, 0])
        n_c = self.norm1(t_c)
        x_k = self.proj(torch.sigmoid(self.gate(n_c)) * self.value(n_c))  # (B, D)
        x_k = x_k + self.mlp(self.norm2(x_k))
        return e_c + self.out(x_k)


class DeployModel(nn.Module):
    """The deploy graph: (B, 3, S, S) RGB 0..255 -> the canonical task output."""

    def __init__(self, backbone: nn.Module, adapter: DeployAdapter, decoder: nn.Module):
        super().__init__()
        self.backbone, self.adapter, self.decoder = backbone, adapter, decoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.adapter(self.backbone(image)))


class FoldedBackbone(nn.Module):
    """A system's deploy graph (model/systems): a copy of its encoder's backbone with BatchNorm
    and the input normalisation folded in. Raw RGB 0..255 (B, 3, S, S) -> the backbone's output(s)."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.backbone = write_out_batchnorms(fold_input_norm(fold_batchnorm(copy.deepcopy(encoder).eval())))

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self.backbone(image)


def fuse(model: KTModel) -> DeployModel:
    m = copy.deepcopy(model).eval()
    backbone = fold_input_norm(fold_batchnorm(m.canonical))
    return DeployModel(backbone, DeployAdapter(m.adapter), m.decoder).eval()


def fuse_canonical_alone(model: KTModel) -> DeployModel:
    """The canonical encoder with its own decoder, trained without any adapter, folded the same way:
    the baseline that shows what the adapter costs at inference (and gains: its accuracy)."""
    m = copy.deepcopy(model).eval()
    return DeployModel(fold_input_norm(fold_batchnorm(m.canonical)), nn.Identity(), m.baseline_decoder).eval()


def deploy_module(model: nn.Module, system: str) -> nn.Module:
    """What a trained model of `system` deploys as (model/systems)."""
    return get_system(system).deploy(model)


PARITY_TOLERANCE = 1e-4
PARITY_FACES = 128


def flat(y: torch.Tensor | tuple) -> torch.Tensor:
    """A graph's output(s) as one (B, K) tensor, for parity over every output at once."""
    return torch.cat([t.reshape(len(t), -1) for t in as_outputs(y)], 1)


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


CROP = crop_rule("square face crop, face centred, eyes level (as the synthetic faces are drawn)")


def fuse_stage(out: str | Path) -> dict:
    """<out>/train/checkpoint.pt -> the run's deployable <out>/fuse/{deploy.pt2, deployable.json}, the
    comparison models' in <out>/fuse/comparisons/, and parity.json.

    Parity: the exported deploy graph against the training graph in eval mode on held-out faces;
    over PARITY_TOLERANCE (relative to the outputs' magnitude where it exceeds 1, e.g. an age in
    years) the stage fails loudly and writes no deploy graph.
    """
    out = Path(out)
    t0 = time.perf_counter()
    ckpt = out / "train" / "checkpoint.pt"
    verify_record(ckpt, out / "train" / "metrics.json", "checkpoint_sha256", f"re-run `ktedge train --out {out}`")
    model, cfg = load_checkpoint(ckpt)
    system = get_system(cfg.model.system)
    deploy = system.deploy(model)
    faces = split_faces(cfg, "val", n=PARITY_FACES)
    x = faces.tensors()["image"]
    example = x[:2].clone()  # a view would carry the whole batch into the archive
    dynamic = not any(isinstance(e, ProgramEncoder) and e.static_batch for e in model.modules())
    program = export_program(deploy, example, dynamic)
    with torch.no_grad():
        ref = flat(_batched(model, x, dynamic))
        answers = as_outputs(_batched(program.module(), x, dynamic))
        got = flat(tuple(answers))
    err = (ref - got).abs().max().item()
    gate = PARITY_TOLERANCE * max(1.0, ref.abs().max().item())  # float32 rounding grows with the value
    cos = torch.nn.functional.cosine_similarity(ref, got, dim=1).min().item()
    deploy_params = sum(v.numel() for v in program.state_dict.values()) + sum(
        v.numel() for v in program.constants.values() if isinstance(v, torch.Tensor))
    if isinstance(model, KTModel):
        kept = count_params(model.canonical) + count_params(model.adapter) + count_params(model.decoder)
        params = {"deploy_graph": deploy_params, "canonical_encoder_adapter_decoder": kept,
                  "prior_encoders_removed": count_params(model.priors)}
    else:
        params = {"deploy_graph": deploy_params, "trained_model": count_params(model)}
    parity = {
        "max_abs_error": err, "min_cosine": cos, "faces": PARITY_FACES, "tolerance": gate,
        "passed": err <= gate,
        "params": params,
        "checkpoint_sha256": sha256_file(ckpt),
    }
    if not parity["passed"]:
        write_json(out / "fuse" / "parity.json", {**parity, "wall_s": round(time.perf_counter() - t0, 2)})
        raise KtedgeError(f"{out / 'fuse' / 'parity.json'}: fuse parity gate failed: deploy graph differs from the "
                          f"training graph by {err:.2e} > {gate:.1e}")
    tasks = system.tasks(cfg)
    provenance = {"made_by": "ktedge fuse", "source": {"kind": "checkpoint", "path": str(ckpt.resolve()),
                                                        "sha256": parity["checkpoint_sha256"]},
                  "folded": ["BatchNorm into the convolutions", "input normalisation into the first convolution",
                             "the knowledge token's projections into constants" if isinstance(model, KTModel)
                             else "the training-only heads dropped"],
                  "parity": {k: parity[k] for k in ("max_abs_error", "tolerance", "faces", "passed")}}
    name = deploy_name(cfg)
    outputs = _task_outputs(program, tasks, example)
    alignment = measured_alignment(outputs, [a.numpy() for a in answers], cfg.data.image_size,
                                   f"its own points on {len(x)} {held_out_source(cfg, 'val')} faces")
    written = write_deployable(out / "fuse", program, name=name, role="deploy",
                               input=raw_rgb_input(cfg.data.image_size, CROP, alignment),
                               outputs=outputs, provenance=provenance, dynamic_batch=dynamic)
    parity["deploy_sha256"] = written.sha256
    comparisons = (system.comparisons or (lambda m: {}))(model)
    for role, module in comparisons.items():
        prog = export_program(module, example, dynamic)
        folder = out / "fuse" / "comparisons" / role.replace("_", "-")
        write_deployable(folder, prog, name=f"{name}-{folder.name}", role=role,
                         input=raw_rgb_input(cfg.data.image_size, CROP, alignment),
                         outputs=_task_outputs(prog, tasks, example),
                         provenance={**provenance, "folded": [f"the {role.replace('_', ' ')} comparison model"]},
                         dynamic_batch=dynamic)
    parity["comparisons"] = sorted(r.replace("_", "-") for r in comparisons)
    parity["wall_s"] = round(time.perf_counter() - t0, 2)
    write_json(out / "fuse" / "parity.json", parity)  # last: the record of what was written
    return parity


def _batched(fn, x: torch.Tensor, dynamic: bool):
    """`fn` over `x` at once, or face by face for a graph made for batch 1 (a program encoder's)."""
    if dynamic:
        return fn(x)
    parts = [as_outputs(fn(x[i:i + 1])) for i in range(len(x))]
    outs = [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]
    return outs[0] if len(outs) == 1 else tuple(outs)


def _task_outputs(program: torch.export.ExportedProgram, tasks: list[str], example: torch.Tensor) -> list[dict]:
    """The deployable's outputs: one per task, in order, as the program gives them for one face."""
    with torch.no_grad():
        shapes = [[1, *y.shape[1:]] for y in as_outputs(program.module()(example[:1]))]
    return [{**TASKS[t].output(t, shape),
             "task": {"name": t, "metric": TASKS[t].metric_name, "lower_is_better": TASKS[t].lower_is_better}}
            for t, shape in zip(tasks, shapes)]
