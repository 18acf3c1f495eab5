"""Fuse: a trained KTModel -> the deploy graph an app runs.

- The prior encoders are dropped: the graph is canonical encoder -> {t_k, t_c} adapter -> d_c.
- Everything that depends only on the constant knowledge token t_k (its LayerNorm, its
  query/key/value projections, its self-score) is folded into constants and Linear weights.
- BatchNorm is folded into the preceding convolution.
- Input normalisation is folded into the first convolution, so the graph takes raw RGB 0..255.
  Zero padding of a normalised image equals padding the raw image with the mean, so the folded
  stem pads with the mean explicitly and the result is exact at the borders too.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ktedge.atomic import sha256_file, verify_record, write_json, write_serialized
from ktedge.errors import KtedgeError
from ktedge.model.adapter import KTAdapter
from ktedge.model.checkpoint import load_checkpoint
from ktedge.model.data.datasets import split_faces
from ktedge.model.encoders import Encoder
from ktedge.model.kt_model import KTModel
from ktedge.model.systems.auformer import deploy_auformer
from ktedge.model.systems.faceptor import deploy_faceptor
from ktedge.model.systems.mzts import deploy_mzts
from ktedge.model.systems.transfer import deploy_transfer
from ktedge.model.tasks import as_outputs


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every Conv2d -> BatchNorm2d pair inside Sequential containers, in place."""
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(seq[i].eval(), seq[i + 1].eval())
                seq[i + 1] = nn.Identity()
    return module


def _replace(root: nn.Module, target: nn.Module, new: nn.Module) -> None:
    for name, child in root.named_modules():
        for cname, c in child.named_children():
            if c is target:
                setattr(child, cname, new)
                return
    raise ValueError("module not found")


@torch.no_grad()
def fold_input_norm(encoder: Encoder) -> nn.Module:
    """Encoder (norm + backbone) -> backbone whose first conv takes raw 0..255 pixels."""
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
        self.backbone = fold_input_norm(fold_batchnorm(copy.deepcopy(encoder).eval()))

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self.backbone(image)


class UInt8Input(nn.Module):
    """The deploy graph taking uint8 pixels, for runtimes with integer image inputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image.to(torch.float32))


def fuse(model: KTModel) -> DeployModel:
    m = copy.deepcopy(model).eval()
    backbone = fold_input_norm(fold_batchnorm(m.canonical))
    return DeployModel(backbone, DeployAdapter(m.adapter), m.decoder).eval()


def fuse_canonical_alone(model: KTModel) -> DeployModel:
    """The canonical encoder and decoder without the adapter, folded the same way: the baseline
    that shows what the adapter costs at inference."""
    m = copy.deepcopy(model).eval()
    return DeployModel(fold_input_norm(fold_batchnorm(m.canonical)), nn.Identity(), m.decoder).eval()


# The other systems' own fuse (model/systems): checkpoint model -> deploy module.
DEPLOY = {"mzts": deploy_mzts, "auformer": deploy_auformer, "faceptor": deploy_faceptor, "transfer": deploy_transfer}


def deploy_module(model: nn.Module, system: str) -> nn.Module:
    """What a trained model deploys as: the KT model fused, another system's own deploy module
    with its LayerNorms written out."""
    return fuse(model) if isinstance(model, KTModel) else write_out_layer_norms(DEPLOY[system](model))


PARITY_TOLERANCE = 1e-4
PARITY_FACES = 128


def flat(y: torch.Tensor | tuple) -> torch.Tensor:
    """A graph's output(s) as one (B, K) tensor, for parity over every output at once."""
    return torch.cat([t.reshape(len(t), -1) for t in as_outputs(y)], 1)


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def fuse_stage(out: str | Path) -> dict:
    """<out>/train/checkpoint.pt -> <out>/fuse/deploy.pt2 (+ deploy_uint8.pt2) and parity.json.

    Parity: the exported deploy graph against the training graph in eval mode on held-out faces;
    over PARITY_TOLERANCE (relative to the outputs' magnitude where it exceeds 1, e.g. an age in
    years) the stage fails loudly and writes no deploy graph.
    """
    out = Path(out)
    t0 = time.perf_counter()
    ckpt = out / "train" / "checkpoint.pt"
    verify_record(ckpt, out / "train" / "metrics.json", "checkpoint_sha256", f"re-run `ktedge train --out {out}`")
    model, cfg = load_checkpoint(ckpt)
    deploy = deploy_module(model, cfg.model.system)
    faces = split_faces(cfg, "val", n=PARITY_FACES)
    x = faces.tensors()["image"]
    example = x[:2].clone()  # a view would carry the whole batch into the archive
    batch = {"image": {0: torch.export.Dim("batch", min=1, max=4096)}}  # exporters specialise to 1 later
    with torch.no_grad():
        program = torch.export.export(deploy, (example,), dynamic_shapes=batch)
        program_u8 = torch.export.export(UInt8Input(deploy), (example.to(torch.uint8),), dynamic_shapes=batch)
        ref, got = flat(model(x)), flat(program.module()(x))
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
        "checkpoint_sha256": sha256_file(ckpt), "wall_s": round(time.perf_counter() - t0, 2),
    }
    if not parity["passed"]:
        write_json(out / "fuse" / "parity.json", parity)
        raise KtedgeError(f"{out / 'fuse' / 'parity.json'}: fuse parity gate failed: deploy graph differs from the "
                          f"training graph by {err:.2e} > {gate:.1e}")
    for name, prog in (("deploy.pt2", program), ("deploy_uint8.pt2", program_u8)):
        write_serialized(out / "fuse" / name, lambda f: torch.export.save(prog, f))
        parity[f"{name.removesuffix('.pt2')}_sha256"] = sha256_file(out / "fuse" / name)
    write_json(out / "fuse" / "parity.json", parity)  # last: the record of what was written
    return parity
