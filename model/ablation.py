"""The KT-Adapter's ablation cells, trained on a run's cached embeddings (every encoder frozen).

A cell is one way of training the adapter + d_c: which prior tokens it may see (none is the
control for "more decoder training": the same adapter, epochs and recipe, with no prior token)
and the drop-mask setting. Each cell is trained per seed with the recipe of `ktedge train`'s
adapter stage (`fit`), d_c starting from the canonical-alone decoder, many models at once.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ktedge.config import AdapterConfig, Config
from ktedge.model.adapter import KTAdapter, drop_mask
from ktedge.model.data.synth import OUTER_EYE_CORNERS
from ktedge.model.tasks import TASKS, TaskHead
from ktedge.model.train import fit


@dataclass(frozen=True)
class Cell:
    """One training setting of the adapter for one canonical encoder."""
    key: str  # e.g. "priors:none", "priors:face+age", "mask:p_drop=0.25"
    group: str  # "priors" (which priors) or "mask" (the drop-mask setting, all priors)
    canonical: str  # encoder key of the canonical encoder
    priors: tuple[str, ...]  # embedding keys of the prior tokens the adapter sees in training
    p_drop: float
    p_all: float
    p_canon: float


@dataclass
class Embeddings:
    """Every frozen encoder's embedding of the train and held-out faces, and their labels."""
    train: dict[str, torch.Tensor]  # encoder key -> (N, C)
    val: dict[str, torch.Tensor]
    y_train: dict[str, torch.Tensor]  # task -> targets
    y_val: dict[str, torch.Tensor]


class CellModel(nn.Module):
    """The adapter over a cell's prior tokens and d_c (KTAdapter and the task head, as in KTModel)."""

    def __init__(self, canonical_dim: int, prior_dims: list[int], a: AdapterConfig, decoder: nn.Module):
        super().__init__()
        self.adapter = KTAdapter(canonical_dim, prior_dims, a.dim, a.heads, a.layers, a.mlp_ratio)
        self.decoder = decoder

    def forward(self, e_c: torch.Tensor, e_priors: list[torch.Tensor], key_mask: torch.Tensor) -> torch.Tensor:
        """A training step's output under an explicit drop mask: KTAdapter.forward, computed for
        the one row the adapter uses. The last block runs only the knowledge token's query (the
        other tokens are still its keys and values), everything of t_k alone (its LayerNorm, query,
        key, value) once rather than per face, attention as broadcasts rather than tiny matmuls,
        and every Linear on a 2-D input (under vmap a 3-D one becomes per-sample outer products).
        The ablation's trainings are bound by this step; a test holds it equal to KTAdapter.forward."""
        ad = self.adapter
        b = e_c.shape[0]
        tokens = torch.cat([ad.canonical(e_c)[:, None], *(proj(e)[:, None] for proj, e in zip(ad.priors, e_priors))], 1)
        t_k = ad.knowledge.reshape(1, -1)  # (1, D)
        for blk in ad.blocks[:-1]:  # earlier blocks (layers > 1) need every row
            x = blk(torch.cat([t_k.expand(b, -1)[:, None], tokens], 1), key_mask)
            t_k, tokens = x[:, 0], x[:, 1:]
        blk = ad.blocks[-1]
        n, d = tokens.shape[1], tokens.shape[2]
        att, heads = blk.attn, blk.attn.heads
        h_k, h = blk.norm1(t_k), blk.norm1(tokens).reshape(b * n, d)

        def keys(lin: nn.Linear) -> torch.Tensor:  # t_k's row, then the other tokens': (B, 1 + n, H, d)
            return torch.cat([lin(h_k).expand(b, -1)[:, None], lin(h).reshape(b, n, d)], 1).reshape(b, n + 1, heads, -1)

        k, v = keys(att.k), keys(att.v)
        q = att.q(h_k).reshape(-1, 1, heads, d // heads)  # (1 or B, 1, H, d)
        score = (q * k).sum(-1) * (d // heads) ** -0.5  # (B, 2 + n, H)
        weight = score.masked_fill(~key_mask[:, :, None], float("-inf")).softmax(1)
        o_k = t_k + att.proj((weight[..., None] * v).sum(1).reshape(b, d))  # (B, D)
        o_k = o_k + blk.mlp(blk.norm2(o_k))
        return self.decoder(e_c + ad.out(o_k))

    @torch.no_grad()
    def decode(self, e_c: torch.Tensor, e_priors: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The deploy graph ({t_k, t_c}) with no priors given, else the ensemble (every prior token)."""
        return self.decoder(self.adapter(e_c, e_priors))


def _nme_per_face(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    a, b = OUTER_EYE_CORNERS
    iod = np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)
    return 100 * np.linalg.norm(pred - gt, axis=-1).mean(1) / iod


# Per-face values whose mean over faces is the task's metric (TASKS[task].metric): what a paired
# bootstrap over faces resamples.
PER_FACE = {
    "landmarks": _nme_per_face,
    "age": lambda pred, gt: np.abs(pred - gt),
    "attributes": lambda logits, gt: 100 * ((logits > 0) == (gt > 0.5)).mean(1),
}


def per_face(task: str, pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """(N,) per-face metric values of `task`."""
    return PER_FACE[task](pred.numpy(), target.numpy()).astype(np.float64)


def _loss(cfg: Config, task: str) -> nn.Module:
    return TASKS[task].loss(cfg.data.image_size, cfg.data.n_identities, cfg.train.landmark_loss)


def fit_decoder(cfg: Config, task: str, emb: Embeddings, encoder: str, epochs: int, bar, seed: int) -> TaskHead:
    """A fresh decoder for `task` on a frozen encoder's embeddings: the canonical-alone model of an
    encoder whose own training head was discarded (the priors'), with the run's recipe."""
    with torch.random.fork_rng():  # seeded here without moving the caller's random stream
        torch.manual_seed(seed)
        head = TASKS[task].head(emb.train[encoder].shape[1], cfg.model.head_hidden)
    loss_fn = _loss(cfg, task)
    x_tr, x_val, y_tr, y_val = emb.train[encoder], emb.val[encoder], emb.y_train[task], emb.y_val[task]

    def val_loss() -> float:
        with torch.no_grad():
            return loss_fn(head(x_val), y_val).item()

    fit([*head.parameters(), *loss_fn.parameters()], [head, loss_fn], lambda idx: loss_fn(head(x_tr[idx]), y_tr[idx]),
        val_loss, len(x_tr), epochs, cfg.train, bar, f"decoder ({task} on {encoder})", seed)
    return head.eval()


def train_cells(cfg: Config, task: str, emb: Embeddings, runs: list[tuple[Cell, int]], baseline: nn.Module,
                epochs: int, on_epoch: Callable[[], None] = lambda: None) -> list[CellModel]:
    """The adapter + d_c of every (cell, seed) in `runs`, trained `epochs` on the cached embeddings.

    The run's recipe (`fit`: AdamW, one-cycle schedule, batches in the seed's order), but models
    that share their prior tokens are trained side by side in one vmapped step: a step of one
    model is a few hundred tiny ops, and batched they cost about half as much per model on CPU.
    Per model the gradient and the AdamW update (elementwise; fused, the same arithmetic) are
    exactly its own.
    A seed fixes the adapter's initialisation, the batch order and the drop masks' random draws,
    so cells differing only in mask probabilities see the same draws (a paired comparison)."""
    models = []
    for cell, seed in runs:
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # the adapter's initialisation
            models.append(CellModel(emb.train[cell.canonical].shape[1], [emb.train[p].shape[1] for p in cell.priors],
                                    cfg.model.adapter, copy.deepcopy(baseline).requires_grad_(True)).train())
    priors = {cell.priors for cell, _ in runs}
    if len(priors) != 1 or len({cell.canonical for cell, _ in runs}) != 1:
        raise ValueError("train_cells: the cells trained together must share their canonical encoder and priors")
    canonical, prior_keys = runs[0][0].canonical, runs[0][0].priors
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    loss_fn = _loss(cfg, task)

    def loss_of(p: dict, b: dict, e_c: torch.Tensor, e_p: list[torch.Tensor], mask: torch.Tensor,
                y: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(base, (p, b), (e_c, e_p, mask)), y)

    tc = cfg.train
    n = len(emb.train[canonical])
    opt = torch.optim.AdamW(params.values(), lr=tc.lr, weight_decay=tc.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=max(1, epochs * -(-n // tc.batch_size)),
                                                pct_start=0.15)
    orders = [torch.Generator().manual_seed(seed) for _, seed in runs]
    draws = [torch.Generator().manual_seed(seed) for _, seed in runs]
    e_c, e_p, y = emb.train[canonical], [emb.train[k] for k in prior_keys], emb.y_train[task]
    step = vmap(loss_of)
    for _ in range(epochs):
        for idx in zip(*(torch.randperm(n, generator=g).split(tc.batch_size) for g in orders)):
            idx = torch.stack(idx)  # (models, batch)
            masks = torch.stack([drop_mask(idx.shape[1], len(prior_keys), cell.p_drop, cell.p_all, cell.p_canon, g)
                                 for (cell, _), g in zip(runs, draws)])
            loss = step(params, buffers, e_c[idx], [e[idx] for e in e_p], masks, y[idx]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        on_epoch()
    with torch.no_grad():
        for i, m in enumerate(models):
            m.load_state_dict({**{k: v[i] for k, v in params.items()}, **{k: v[i] for k, v in buffers.items()}})
    return [m.eval() for m in models]


@torch.no_grad()
def evaluate_cell(model: CellModel, emb: Embeddings, cell: Cell, task: str) -> dict:
    """Held-out per-face values of the deploy graph ({t_k, t_c}) and, where the cell has priors,
    of the ensemble (every prior token); how many prior tokens the adapter has; and how much its
    output moves when prior embeddings (the cell's, or for the control every other encoder's) are
    shuffled across faces: 0 for an adapter with no prior token. `collapsed`: see `collapsed`."""
    e_c, y = emb.val[cell.canonical], emb.y_val[task]
    e_p = [emb.val[k] for k in (cell.priors or [k for k in emb.val if k != cell.canonical])]
    perm = torch.randperm(len(e_c), generator=torch.Generator().manual_seed(0))
    seen, deploy = model.decode(e_c, e_p), model.decode(e_c)
    out = {"deploy": per_face(task, deploy, y), "collapsed": collapsed(deploy, y),
           "prior_tokens": len(model.adapter.priors),
           "prior_influence": float((seen - model.decode(e_c, [e[perm] for e in e_p])).abs().mean())}
    if cell.priors:
        out["ensemble"] = per_face(task, seen, y)
    return out


def collapsed(pred: torch.Tensor, target: torch.Tensor) -> bool:
    """A training that diverged: its held-out output is (nearly) the same for every face, its
    spread across faces under 5 % of the labels'. The run's recipe (AdamW to lr 3e-3) does this
    for some seeds: at the peak learning rate e_c' grows ~40x, every hidden ReLU of d_c dies and
    nothing moves again (landmarks: the mean shape, NME ~20.6)."""
    return bool(pred.float().std(0).mean() < 0.05 * target.float().std(0).mean())
