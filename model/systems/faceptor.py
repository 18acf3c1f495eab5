"""Faceptor (Qin et al., ECCV 2024) as PAPERS.md specifies it for ktedge: one ViT encoder, one
transformer decoder shared by every task and driven by task-specific queries, and Layer-Attention
(the decoder reads several encoder layers, each through its own projection, told apart by a
learned layer embedding added to the key positions). Landmarks, age, attributes and expression
come out of one forward pass.

Two output heads are shared by the tasks, as in the paper: the *value* head (one Linear to a
scalar per query: age-bin logits -> softmax -> expected age; attribute logits; expression logits)
and the *map* head (per-pixel embeddings x each landmark query's embedding -> a heatmap over the
patch grid -> soft-argmax). Identity, which skips the decoder in the paper, is not one of the
phone model's tasks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ktedge.model.attention import CrossAttention, Mlp
from ktedge.model.backbones.vit import ViT
from ktedge.model.data.synth import AGE_RANGE, ATTRIBUTES, EXPRESSIONS, NUM_LANDMARKS
from ktedge.model.encoders import Encoder
from ktedge.model.losses import WingLoss
from ktedge.model.systems import System

ENCODER_DEPTH = 3  # the decoder reads all three layers
DECODER_LAYERS = 2
DECODER_PER_WIDTH = 4  # decoder hidden = 4 x the encoder width (128 for the default width 32)
HEADS = 4
AGE_BINS = torch.linspace(*AGE_RANGE, 17)  # one query per 4 years: age is a distribution over bins
AGE_SIGMA = 4.0  # years: the soft label around the true age
QUERIES = {"landmarks": NUM_LANDMARKS, "age": len(AGE_BINS), "attributes": len(ATTRIBUTES),
           "expression": len(EXPRESSIONS)}


class LayerAttentionMemory(nn.Module):
    """Every encoder layer's tokens -> one decoder memory: per layer a projection (a 1x1 conv over
    the token grid, i.e. a Linear) and a learned layer embedding added to its key positions."""

    def __init__(self, enc_dim: int, dim: int, layers: int, n_tokens: int):
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(enc_dim, dim) for _ in range(layers))
        self.pos = nn.Parameter(torch.randn(1, n_tokens, dim) * 0.02)
        self.layer_embed = nn.Parameter(torch.randn(layers, 1, 1, dim) * 0.02)

    def forward(self, layers: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        memory = torch.cat([p(t) for p, t in zip(self.proj, layers)], 1)  # (B, L*N, D)
        key_pos = torch.cat([self.pos + e for e in self.layer_embed], 1)  # (1, L*N, D)
        return memory, key_pos


class DecoderLayer(nn.Module):
    """Cross-attention to the memory -> self-attention among the queries -> FFN (pre-norm)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_cross, self.cross = nn.LayerNorm(dim), CrossAttention(dim, heads)
        self.norm_self, self.self_attn = nn.LayerNorm(dim), CrossAttention(dim, heads)
        self.norm_ffn, self.ffn = nn.LayerNorm(dim), Mlp(dim, 2.0)

    def forward(self, q: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor,
                key_pos: torch.Tensor) -> torch.Tensor:
        h = self.norm_cross(q)
        q = q + self.cross(h + query_pos, memory + key_pos, memory)
        h = self.norm_self(q)
        q = q + self.self_attn(h + query_pos, h + query_pos, h)
        return q + self.ffn(self.norm_ffn(q))  # (B, Q, D)


class FaceptorBackbone(nn.Module):
    """(B, 3, S, S) normalised -> landmarks (B, 68, 2) in crop fractions, age (B,) years,
    attribute logits (B, 9), expression logits (B, 6)."""

    def __init__(self, width: int, image_size: int):
        super().__init__()
        dim = DECODER_PER_WIDTH * width
        self.vit = ViT(width, image_size, depth=ENCODER_DEPTH)
        n = self.vit.pos.shape[1]
        self.grid = int(n ** 0.5)
        self.memory = LayerAttentionMemory(width, dim, ENCODER_DEPTH, n)
        total = sum(QUERIES.values())
        self.query = nn.Parameter(torch.randn(1, total, dim) * 0.02)  # task-specific query features
        self.query_pos = nn.Parameter(torch.randn(1, total, dim) * 0.02)  # and query positions
        self.layers = nn.ModuleList(DecoderLayer(dim, HEADS) for _ in range(DECODER_LAYERS))
        self.norm = nn.LayerNorm(dim)
        self.value = nn.Linear(dim, 1)  # value head: a scalar per query
        self.pixel = nn.Linear(width, dim)  # map head: per-pixel embeddings of the last encoder layer
        self.map_query = Mlp(dim, 1.0)  # and each landmark query's map embedding
        # A learned image-independent heatmap per landmark (where it usually is): the soft-argmax
        # starts at the centre for every point, and this learns the mean shape in a few steps.
        self.map_prior = nn.Parameter(torch.zeros(1, NUM_LANDMARKS, n))
        centres = (torch.arange(self.grid) + 0.5) / self.grid  # patch centres as crop fractions
        yy, xx = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("cells", torch.stack([xx.flatten(), yy.flatten()], 1))  # (N, 2) (x, y)
        self.register_buffer("age_bins", AGE_BINS.clone())
        self.dim = dim

    def task_queries(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """-> each task's decoded queries (B, Q_t, D) and the per-pixel embeddings (B, N, D)."""
        layers = self.vit.tokens(x)  # ENCODER_DEPTH x (B, N, width)
        memory, key_pos = self.memory(layers)
        q = self.query.expand(x.shape[0], -1, -1)  # (B, Q, D)
        for layer in self.layers:
            q = layer(q, self.query_pos, memory, key_pos)
        q = self.norm(q)
        return dict(zip(QUERIES, q.split(list(QUERIES.values()), 1))), self.pixel(self.vit.norm(layers[-1]))

    def heads(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw head outputs the losses read: landmark heatmap logits (B, 68, N), age-bin logits
        (B, bins), attribute logits (B, 9), expression logits (B, 6)."""
        q, pixels = self.task_queries(x)
        heatmap = self.map_query(q["landmarks"]) @ pixels.transpose(1, 2) * self.dim ** -0.5 + self.map_prior  # (B, 68, N)
        return {"heatmap": heatmap, **{t: self.value(q[t])[..., 0] for t in ("age", "attributes", "expression")}}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.heads(x)
        landmarks = h["heatmap"].softmax(-1) @ self.cells  # soft-argmax: (B, 68, 2)
        age = (h["age"].softmax(-1) * self.age_bins).sum(-1)  # expected value: (B,)
        return landmarks, age, h["attributes"], h["expression"]


class Faceptor(nn.Module):
    """Raw RGB 0..255 in; (landmarks, age, attributes, expression) out."""

    def __init__(self, width: int, image_size: int):
        super().__init__()
        self.encoder = Encoder(FaceptorBackbone(width, image_size))

    def heads(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.encoder.backbone.heads(self.encoder.norm(image))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.encoder(image)


class FaceptorLoss(nn.Module):
    """Sum of the task losses on one forward pass: landmarks Wing loss on the soft-argmax points,
    age KL to a Gaussian over the bins + L1 on the expected age (in bin widths), attributes BCE,
    expression CE."""

    def __init__(self, image_size: int):
        super().__init__()
        self.wing = WingLoss(image_size)

    def forward(self, model: Faceptor, image: torch.Tensor, y: dict[str, torch.Tensor]) -> torch.Tensor:
        backbone = model.encoder.backbone
        h = model.heads(image)
        landmarks = h["heatmap"].softmax(-1) @ backbone.cells
        bins = backbone.age_bins
        width = float(bins[1] - bins[0])
        soft = torch.softmax(-0.5 * ((bins - y["age"][:, None]) / AGE_SIGMA) ** 2, -1)  # (B, bins)
        log_p = h["age"].log_softmax(-1)
        age = (log_p.exp() * bins).sum(-1)
        return (self.wing(landmarks, y["landmarks"])
                + F.kl_div(log_p, soft, reduction="batchmean") + (age - y["age"]).abs().mean() / width
                + F.binary_cross_entropy_with_logits(h["attributes"], y["attributes"])
                + F.cross_entropy(h["expression"], y["expression"]))


def deploy_faceptor(model: Faceptor) -> nn.Module:
    """BatchNorm and input normalisation folded into the ViT's stem: raw RGB 0..255 -> the four outputs."""
    from ktedge.model.fuse import FoldedBackbone

    return FoldedBackbone(model.encoder).eval()


class PlainMultiTask(nn.Module):
    """The baseline of the same size: the same ViT, mean-pooled, one MLP head per task (their hidden
    width chosen so the whole has as many parameters as the Faceptor it is compared with)."""

    def __init__(self, width: int, image_size: int, params: int, hidden: int = 0):
        super().__init__()
        from ktedge.model.tasks import TASKS

        self.vit = Encoder(ViT(width, image_size, depth=ENCODER_DEPTH))
        if not hidden:  # solve params = ViT + sum_t (width*h + h + h*out_t + out_t) for h
            outs = [NUM_LANDMARKS * 2, 1, len(ATTRIBUTES), len(EXPRESSIONS)]
            vit = sum(p.numel() for p in self.vit.parameters())
            hidden = max(8, round((params - vit - sum(outs)) / (len(outs) * (width + 1) + sum(outs))))
        self.task_heads = nn.ModuleList(TASKS[t].head(width, hidden) for t in QUERIES)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        e = self.vit(image)  # (B, width)
        return tuple(h(e) for h in self.task_heads)


def _train(cfg, train, val, bar):
    from ktedge.model.systems.train import train_faceptor

    return train_faceptor(cfg, train, val, bar)


def _deploy(model: nn.Module) -> nn.Module:
    from ktedge.model.fuse import write_out_layer_norms

    return write_out_layer_norms(deploy_faceptor(model))


# Its canonical task is the first of the tasks it answers in one pass.
SYSTEM = System(build=lambda cfg, load_pretrained=True: Faceptor(cfg.model.canonical.width, cfg.data.image_size),
                train=_train, deploy=_deploy, tasks=lambda cfg: list(QUERIES), label_tasks=lambda cfg: list(QUERIES),
                requires=("landmarks", "vit"))
