"""Does the knowledge token carry the priors' knowledge? The KT-Adapter paper's ablations on a
trained run, with seeds and paired bootstrap intervals.

`python -m ktedge.benchmarks.kt_ablation --out DIR` reuses the run's frozen encoders (nothing is
retrained but adapters and decoders): their embeddings of the train and held-out (`val`) faces are
computed once and cached in DIR/bench/kt_ablation_cache.pt, keyed by the checkpoint's sha256.
Then, per seed, the adapter + d_c is trained again for every cell:

- number of priors: none (the control for "more decoder training": the same adapter, epochs and
  recipe with no prior token), every subset of the priors, all of them;
- mask strategy (all priors): no drop mask, p_drop swept, no all-hidden step (p_all 0), the
  canonical mask (p_canon);
- every other encoder of the run with labels (age, attributes) as the canonical encoder, the rest
  as its priors: the control and all priors.

Writes DIR/bench/kt_ablation.json and DIR/report/kt_ablation.png; `ablation_section` in
kt_ablation_report.py renders the report's section from the JSON.
"""
from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import queue
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ktedge.atomic import read_json, sha256_file, write_json, write_serialized
from ktedge.benchmarks.bootstrap import RESAMPLES, paired_interval
from ktedge.config import Config
from ktedge.errors import KtedgeError
from ktedge.model.ablation import PER_FACE, Cell, Embeddings, evaluate_cell, fit_decoder, per_face, train_cells
from ktedge.model.checkpoint import load_checkpoint
from ktedge.model.data.datasets import held_out_source, split_faces
from ktedge.model.kt_model import KTModel
from ktedge.model.tasks import TASKS
from ktedge.progress import console, progress

FORMAT = "ktedge.kt_ablation/1"
CACHE_FORMAT = "ktedge.kt_ablation_cache/1"
PLANS = ("full", "headline")
SPLIT = "val"  # the held-out faces train/metrics.json reports on
CONTROL, ALL, ALL_SHUFFLED = "priors:none", "priors:all", "priors:all-shuffled"
SHUFFLED = "shuffled:"  # an encoder key's prefix: its embeddings permuted across faces
MAX_SUBSET_PRIORS = 3  # every subset of up to 3 priors (8 cells); with more: none, each one, all
P_DROP_SWEEP = (0.25, 0.5, 0.75)
P_CANON_SWEEP = (0.25, 0.5)
# Models trained in one vmapped step: from ~15 on a bigger step saves little per model (measured
# on the 2-core VM), and smaller chunks share out over the workers evenly. Chunks never depend on
# --workers, so neither do the figures.
CHUNK_MODELS = 15


def json_path(out: Path) -> Path:
    return out / "bench" / "kt_ablation.json"


def plot_path(out: Path) -> Path:
    return out / "report" / "kt_ablation.png"


def cache_path(out: Path) -> Path:
    return out / "bench" / "kt_ablation_cache.pt"


def encoder_keys(cfg: Config) -> list[str]:
    """A name per encoder of the run, canonical first: its task, and where a task repeats, the
    encoder's index after the first (landmarks, face, landmarks#2)."""
    tasks = [cfg.model.canonical.task, *(p.task for p in cfg.model.priors)]
    return [t if t not in tasks[:i] else f"{t}#{i}" for i, t in enumerate(tasks)]


def _task_of(key: str) -> str:
    return key.split("#")[0]


def _load_cache(path: Path) -> dict | None:
    try:
        cache = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, RuntimeError, EOFError, OSError, ValueError):
        return None
    return cache if isinstance(cache, dict) and cache.get("format") == CACHE_FORMAT else None


def _embeddings(cache: dict) -> Embeddings:
    """The cached embeddings, plus a shuffled copy of each encoder's (SHUFFLED + key): the same
    vectors, permuted across faces, so a prior token carries no knowledge of the face it is on."""
    emb = Embeddings(dict(cache["train"]), dict(cache["val"]), cache["y_train"], cache["y_val"])
    for split in (emb.train, emb.val):
        for key in list(split):
            perm = torch.randperm(len(split[key]), generator=torch.Generator().manual_seed(0))
            split[SHUFFLED + key] = split[key][perm]
    return emb


def cached_embeddings(out: Path, model: KTModel, cfg: Config, checkpoint_sha256: str, bar) -> Embeddings:
    """Every encoder's embeddings of the train and held-out faces, from the cache when it was
    computed from this checkpoint, else computed (encoders frozen, eval mode) and cached."""
    cache = _load_cache(cache_path(out))
    if cache is None or cache.get("checkpoint_sha256") != checkpoint_sha256:
        cache = _compute_embeddings(out, model, cfg, checkpoint_sha256, bar)
    return _embeddings(cache)


def _compute_embeddings(out: Path, model: KTModel, cfg: Config, checkpoint_sha256: str, bar) -> dict:
    keys = encoder_keys(cfg)
    encoders = dict(zip(keys, [model.canonical, *model.priors]))
    row = bar.add_task("faces + the frozen encoders' embeddings", total=2 * len(keys), info="")
    emb: dict[str, dict] = {"train": {}, "val": {}, "y_train": {}, "y_val": {}}
    for split in ("train", SPLIT):
        fs = split_faces(cfg, split)
        t = fs.tensors()
        images = t.pop("image")
        for key, enc in encoders.items():
            with torch.no_grad():
                emb[split][key] = torch.cat([enc(images[i:i + 256]) for i in range(0, len(images), 256)])
            bar.update(row, advance=1)
        emb[f"y_{split}"] = {task: t[task] for task in PER_FACE if task in fs.labelled}
    cache = {"format": CACHE_FORMAT, "checkpoint_sha256": checkpoint_sha256, "split": SPLIT, **emb}
    write_serialized(cache_path(out), lambda f: torch.save(cache, f))
    return cache


def plan_cells(cfg: Config, emb: Embeddings, plan: str) -> dict[str, list[Cell]]:
    """Per canonical encoder (its key), the cells to train: the run's canonical encoder every cell
    of the plan, each other encoder with labels (full plan) the control and all priors."""
    if plan not in PLANS:
        raise KtedgeError(f"kt ablation: plan '{plan}' is not one of {', '.join(PLANS)}")
    a = cfg.model.adapter
    default = (a.p_drop, a.p_all, a.p_canon)
    keys = encoder_keys(cfg)
    variants = [k for k in keys if _task_of(k) in emb.y_val]  # encoders whose task has labels
    cells: dict[str, list[Cell]] = {}
    for canonical in variants if plan == "full" else variants[:1]:
        priors = tuple(k for k in keys if k != canonical)
        main = canonical == keys[0]
        if plan == "full" and main:
            subsets = ([s for r in range(len(priors) + 1) for s in itertools.combinations(priors, r)]
                       if len(priors) <= MAX_SUBSET_PRIORS else [(), *((p,) for p in priors), priors])
        else:
            subsets = [(), priors]
        rows = [Cell(CONTROL if not s else ALL if s == priors else "priors:" + "+".join(s), "priors", canonical, s,
                     *default) for s in subsets]
        if plan == "full" and main:  # all priors with no knowledge of the face: tokens, not knowledge
            rows.append(Cell(ALL_SHUFFLED, "priors", canonical, tuple(SHUFFLED + k for k in priors), *default))
            masks = {"mask:no-drop": (0.0, 0.0, 0.0),
                     **{f"mask:p_drop={p}": (p, a.p_all, a.p_canon) for p in P_DROP_SWEEP},
                     "mask:p_all=0": (a.p_drop, 0.0, a.p_canon),
                     **{f"mask:p_canon={p}": (a.p_drop, a.p_all, p) for p in P_CANON_SWEEP}}
            rows += [Cell(k, "mask", canonical, priors, *m) for k, m in masks.items() if m != default]
        cells[canonical] = rows
    return cells


@dataclass(frozen=True)
class Chunk:
    """Models of one canonical encoder that share their prior tokens, trained together in one worker."""
    task: str
    runs: tuple[tuple[Cell, int], ...]  # (cell, seed)

    @property
    def canonical(self) -> str:
        return self.runs[0][0].canonical


def chunks(runs: list[tuple[Cell, int]]) -> list[Chunk]:
    """Every (cell, seed), grouped by canonical encoder and prior tokens, at most CHUNK_MODELS a
    chunk, the costliest first (so the workers finish together)."""
    groups: dict[tuple[str, tuple[str, ...]], list[tuple[Cell, int]]] = {}
    for cell, seed in runs:
        groups.setdefault((cell.canonical, cell.priors), []).append((cell, seed))
    out = [Chunk(_task_of(canonical), tuple(rs[i:i + CHUNK_MODELS])) for (canonical, _), rs in groups.items()
           for i in range(0, len(rs), CHUNK_MODELS)]
    return sorted(out, key=lambda c: -len(c.runs) * (2 + len(c.runs[0][0].priors)))


_worker: dict = {}


def _init_worker(cfg: Config, cache: Path, baselines: dict[str, dict], epochs: int, progress_queue) -> None:
    torch.set_num_threads(1)
    _worker.update(cfg=cfg, emb=_embeddings(_load_cache(cache)), baselines=baselines, epochs=epochs,
                   queue=progress_queue)


def _train_chunk(chunk: Chunk) -> tuple[Chunk, list[dict], float]:
    """Train one chunk (in a worker, or in this process) and evaluate each of its models."""
    w = _worker
    cpu = time.process_time()
    cfg, emb = w["cfg"], w["emb"]
    head = TASKS[chunk.task].head(emb.train[chunk.canonical].shape[1], cfg.model.head_hidden)
    head.load_state_dict(w["baselines"][chunk.canonical])
    models = train_cells(cfg, chunk.task, emb, list(chunk.runs), head, w["epochs"],
                         lambda: w["queue"].put(len(chunk.runs)))
    evals = [evaluate_cell(m, emb, cell, chunk.task) for m, (cell, _) in zip(models, chunk.runs)]
    return chunk, evals, time.process_time() - cpu


def _train_all(jobs: list[Chunk], cfg: Config, out: Path, baselines: dict[str, dict], epochs: int, workers: int,
               bar, on_done: Callable[[Chunk, list[dict]], list[Chunk]]) -> float:
    """Every chunk over `workers` processes (one thread each), and the chunks `on_done` returns
    as each finishes (replacements, started at once), progress in model-epochs. -> CPU seconds."""
    total = epochs * sum(len(c.runs) for c in jobs)
    row = bar.add_task("KT ablation: adapter + d_c (model-epochs)", total=total, info="")
    cpu = 0.0

    def finished(result: tuple[Chunk, list[dict], float]) -> list[Chunk]:
        nonlocal cpu, total
        chunk, evals, seconds = result
        cpu += seconds
        new = on_done(chunk, evals)
        total += epochs * sum(len(c.runs) for c in new)
        bar.update(row, total=total)
        return new

    if workers <= 1:
        _init_worker(cfg, cache_path(out), baselines, epochs, _Advance(bar, row))
        todo = list(jobs)
        while todo:
            chunk = todo.pop(0)
            todo[:0] = finished(_train_chunk(chunk))
        return cpu
    ctx = mp.get_context("spawn")  # a fresh interpreter: no torch threads or locks inherited
    q = ctx.Queue()
    with ctx.Pool(workers, _init_worker, (cfg, cache_path(out), baselines, epochs, q)) as pool:
        # One chunk per worker in flight, the rest waiting here: a replacement goes to the front,
        # not behind everything the pool was already given.
        waiting, pending = list(jobs), []
        while waiting or pending:
            while waiting and len(pending) < workers:
                pending.append(pool.apply_async(_train_chunk, (waiting.pop(0),)))
            try:
                bar.update(row, advance=q.get(timeout=0.5))
            except queue.Empty:
                pass
            for r in [r for r in pending if r.ready()]:
                pending.remove(r)
                waiting[:0] = finished(r.get())  # get() re-raises a worker's error
    return cpu


class _Advance:
    """In-process stand-in for the workers' progress queue: advances the bar directly."""

    def __init__(self, bar, row):
        self.bar, self.row = bar, row

    def put(self, n: int) -> None:
        self.bar.update(self.row, advance=n)


def _summary(values: list[float]) -> dict:
    return {"per_seed": values, "mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def run_ablation(out: str | Path, plan: str = "full", seeds: int = 5, epochs: int | None = None,
                 workers: int = 2, resamples: int = RESAMPLES) -> dict:
    """Train every cell of `plan` for `seeds` seeds on the run in `out`; write and return the JSON."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers, and this process with --workers 1, use one thread each
    try:
        return _run(Path(out), plan, seeds, epochs, workers, resamples)
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, plan: str, seeds: int, epochs: int | None, workers: int, resamples: int) -> dict:
    t0, cpu0 = time.perf_counter(), time.process_time()
    ckpt = out / "train" / "checkpoint.pt"
    model, cfg = load_checkpoint(ckpt)
    if not isinstance(model, KTModel):
        raise KtedgeError(f"{ckpt}: the KT ablation needs a KT model (model.system kt), not {cfg.model.system}")
    sha = sha256_file(ckpt)
    epochs = cfg.train.adapter_epochs if epochs is None else epochs
    keys = encoder_keys(cfg)
    with progress() as bar:
        emb = cached_embeddings(out, model, cfg, sha, bar)
        t_emb = time.perf_counter() - t0
        cells = plan_cells(cfg, emb, plan)
        baselines = _baselines(cfg, model, emb, cells, bar)
        t_train = time.perf_counter()
        evals, cpu_train = _train_converged(cfg, out, cells, {t: b for t, (b, _) in baselines.items()}, seeds, epochs,
                                            workers, bar)
        t_train = time.perf_counter() - t_train
    result = {"format": FORMAT, "plan": plan, "checkpoint_sha256": sha,
              "held_out": {"split": SPLIT, "source": held_out_source(cfg, SPLIT), "faces": len(emb.val[keys[0]])},
              "seeds_per_cell": seeds, "adapter_epochs": epochs,
              "adapter": {k: getattr(cfg.model.adapter, k)
                          for k in ("dim", "heads", "layers", "p_drop", "p_all", "p_canon")},
              "bootstrap": {"resamples": resamples, "level": 0.95,
                            "resampled": "faces (paired) and seeds (within each arm)"},
              "encoders": {k: {"task": e.task, "backbone": e.backbone, "pretrained": e.pretrained or None,
                               "role": "canonical" if i == 0 else "prior"}
                           for i, (k, e) in enumerate(zip(keys, [cfg.model.canonical, *cfg.model.priors]))},
              "tasks": {variant: _task_result(cfg, rows, emb, *baselines[variant], evals, seeds, resamples)
                        for variant, rows in cells.items()},
              "workers": workers,
              "wall_s": {"embeddings": round(t_emb, 2), "adapters": round(t_train, 2),
                         "total": round(time.perf_counter() - t0, 2)},
              # CPU seconds summed over the workers: on a shared machine the wall time also
              # counts what other jobs took.
              "cpu_s": {"adapters": round(cpu_train, 2), "main_process": round(time.process_time() - cpu0, 2)}}
    write_json(json_path(out), result)
    from ktedge.benchmarks.kt_ablation_report import plot_ablation

    plot_ablation(result, plot_path(out))
    return result


def _baselines(cfg: Config, model: KTModel, emb: Embeddings, cells: dict[str, list[Cell]],
               bar) -> dict[str, tuple[dict, str]]:
    """Per canonical encoder, the canonical-alone decoder's state dict (d_c starts from it) and how
    it was made."""
    out = {}
    for canonical in cells:
        if canonical == encoder_keys(cfg)[0]:
            out[canonical] = (model.baseline_decoder.state_dict(),
                              "the run's canonical decoder (trained with its encoder)")
        else:
            head = fit_decoder(cfg, _task_of(canonical), emb, canonical, cfg.train.canonical_epochs, bar, cfg.seed)
            out[canonical] = head.state_dict(), (f"a fresh decoder trained on the frozen {canonical} encoder's "
                                                 f"cached embeddings ({cfg.train.canonical_epochs} epochs, the run's "
                                                 "recipe): the run kept no decoder for it")
    return out


def _train_converged(cfg: Config, out: Path, cells: dict[str, list[Cell]], baselines: dict[str, dict], seeds: int,
                     epochs: int, workers: int, bar) -> tuple[dict[tuple[str, str], dict[int, dict]], float]:
    """Seeds 0..S-1 of every cell; a training that collapsed (model/ablation.py `collapsed`) is
    kept on record and replaced by the cell's next seeds, at most 2S trainings a cell: the figures
    are of the first S (by seed) that converged, and how often each cell collapsed is a result too.
    A cell's replacements are decided once all its trainings so far are back, so which seeds are
    trained never depends on the workers' timing. -> {(canonical, cell): {seed: evaluation}}, CPU s."""
    evals: dict[tuple[str, str], dict[int, dict]] = {}
    scheduled = {(cell.canonical, cell.key): list(range(seeds)) for rows in cells.values() for cell in rows}

    def done(chunk: Chunk, ev: list[dict]) -> list[Chunk]:
        for (cell, seed), e in zip(chunk.runs, ev):
            evals.setdefault((cell.canonical, cell.key), {})[seed] = e
        new = []
        for cell in dict.fromkeys(cell for cell, _ in chunk.runs):
            key, got = (cell.canonical, cell.key), evals[(cell.canonical, cell.key)]
            if len(got) < len(scheduled[key]):
                continue  # more of this cell still training
            ok = [float(x["deploy"].mean()) for _, x in sorted(got.items()) if not x["collapsed"]]
            name, lost = f"  {cell.canonical:<10} {cell.key:<24}", len(got) - len(ok)
            if len(ok) >= seeds or len(got) >= 2 * seeds:
                ok = ok[:seeds]
                figure = (f"{np.mean(ok):.3f} ± {np.std(ok, ddof=1) if len(ok) > 1 else 0:.3f}" if ok else "-")
                console.print(f"{name} deploy {TASKS[chunk.task].metric_name} {figure} ({len(ok)} seeds; "
                              f"{lost} of {len(got)} trainings collapsed)")
                continue
            # twice the missing seeds at once: a cell that collapsed once tends to again
            extra = list(range(len(got), len(got) + min(2 * (seeds - len(ok)), 2 * seeds - len(got))))
            scheduled[key] += extra
            console.print(f"{name} {lost} of {len(got)} trainings collapsed: training seeds "
                          f"{extra[0]}..{extra[-1]}")
            new += chunks([(cell, s) for s in extra])
        return new

    jobs = chunks([(cell, s) for rows in cells.values() for cell in rows for s in range(seeds)])
    # The 0-prior control collapses most often (4 of 9 trainings on the default run): start its
    # chunks first, so its replacements overlap the other cells instead of trailing them.
    jobs.sort(key=lambda c: c.runs[0][0].key != CONTROL)
    return evals, _train_all(jobs, cfg, out, baselines, epochs, workers, bar, done)


def _task_result(cfg: Config, rows: list[Cell], emb: Embeddings, baseline: dict, how: str,
                 evals: dict, seeds: int, resamples: int) -> dict:
    canonical = rows[0].canonical
    task = _task_of(canonical)
    t = TASKS[task]
    head = t.head(emb.train[canonical].shape[1], cfg.model.head_hidden)
    head.load_state_dict(baseline)
    with torch.no_grad():
        base = per_face(task, head.eval()(emb.val[canonical]), emb.y_val[task])[None]  # (1, faces): one model
    used = {}
    for cell in rows:
        got = evals[(canonical, cell.key)]
        used[cell.key] = [s for s in sorted(got) if not got[s]["collapsed"]][:seeds] or sorted(got)[:seeds]
    arms = {cell.key: {mode: np.stack([evals[(canonical, cell.key)][s][mode] for s in used[cell.key]])
                       for mode in ("deploy", "ensemble") if cell.priors or mode == "deploy"} for cell in rows}
    lower = t.lower_is_better
    control = arms[CONTROL]["deploy"]
    cells = {}
    for cell in rows:
        got = evals[(canonical, cell.key)]
        ev = [got[s] for s in used[cell.key]]
        a = arms[cell.key]
        c = {"group": cell.group, "priors": list(cell.priors), "p_drop": cell.p_drop, "p_all": cell.p_all,
             "p_canon": cell.p_canon, "seeds": used[cell.key],
             "collapsed_seeds": [s for s in sorted(got) if got[s]["collapsed"]],
             "prior_tokens": max(e["prior_tokens"] for e in ev),
             "prior_influence": float(np.mean([e["prior_influence"] for e in ev])),
             **{mode: _summary(v.mean(1).tolist()) for mode, v in a.items()},
             "deploy_every_training": _summary([float(got[s]["deploy"].mean()) for s in sorted(got)]),
             "vs_canonical": paired_interval(a["deploy"], base, lower, ("deploy", "canonical_alone"), resamples)}
        c["vs_control"] = (None if cell.key == CONTROL else
                           paired_interval(a["deploy"], control, lower, ("deploy", "control"), resamples))
        c["ensemble_vs_control"] = (paired_interval(a["ensemble"], control, lower, ("ensemble", "control"), resamples)
                                    if "ensemble" in a else None)
        cells[cell.key] = c
    if ALL_SHUFFLED in cells:  # the same tokens, no knowledge of the face: what the knowledge adds
        cells[ALL]["vs_shuffled"] = paired_interval(arms[ALL]["deploy"], arms[ALL_SHUFFLED]["deploy"], lower,
                                                    ("deploy", "shuffled priors"), resamples)
    return {"task": task, "metric": t.metric_name, "lower_is_better": lower, "canonical": canonical,
            "priors": [k for k in encoder_keys(cfg) if k != canonical],
            "canonical_alone": {"how": how, t.metric_name: float(base.mean())},
            "cells": cells, "headline": _headline(cells, float(base.mean()))}


def _headline(cells: dict, canonical: float) -> dict:
    """Deploy (all priors, the run's mask) vs canonical alone vs the 0-prior control, in words too."""
    kt, control = cells[ALL], cells[CONTROL]
    vs = kt["vs_control"]
    if not vs["significant"]:
        verdict = "does not beat the 0-prior control (no significant difference)"
    elif vs["favours"] == "deploy":
        verdict = "beats the 0-prior control (significant)"
    else:
        verdict = "is worse than the 0-prior control (significant)"
    return {"canonical_alone": canonical, "control": control["deploy"], "kt_deploy": kt["deploy"],
            "ensemble": kt.get("ensemble"), "deploy_vs_canonical": kt["vs_canonical"],
            "control_vs_canonical": control["vs_canonical"], "deploy_vs_control": vs,
            "ensemble_vs_control": kt["ensemble_vs_control"], "beats_control": vs["favours"] == "deploy",
            "collapsed": {k: [len(c["collapsed_seeds"]), len(c["deploy_every_training"]["per_seed"])]
                          for k, c in (("control", control), ("kt_deploy", kt))},
            "deploy_vs_shuffled": kt.get("vs_shuffled"),
            "verdict": f"the knowledge token (KT deploy, all priors) {verdict}"}


def ablation_is_current(out: str | Path, plan: str = "headline") -> bool:
    """A finished ablation of `plan` (or the full one) for the run's current checkpoint."""
    out = Path(out)
    rec = read_json(json_path(out))
    ckpt = out / "train" / "checkpoint.pt"
    return (rec is not None and ckpt.is_file() and rec.get("checkpoint_sha256") == sha256_file(ckpt)
            and rec.get("plan") in (plan, "full") and plot_path(out).is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the KT-Adapter's ablations on a trained run, with seeds and intervals")
    p.add_argument("--out", type=Path, required=True, help="a run directory with train/checkpoint.pt")
    p.add_argument("--plan", choices=PLANS, default="full",
                   help="full: every cell; headline: the 0-prior control and all priors, canonical task only")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=None, help="adapter epochs per cell (default: the run's)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes, one thread each (default: 2, or 1 on a 1-core machine)")
    p.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples per interval")
    p.add_argument("--force", action="store_true", help="re-run even where this run's ablation is up to date")
    args = p.parse_args(argv)
    if not args.force and ablation_is_current(args.out, args.plan):
        console.print(f"KT ablation: up to date ({json_path(args.out)}), skipped")
        return 0
    if args.seeds < 2:
        p.error("--seeds must be >= 2 (the table gives a standard deviation over seeds)")
    try:
        result = run_ablation(args.out, args.plan, args.seeds, args.epochs, args.workers, args.resamples)
    except KtedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from ktedge.benchmarks.kt_ablation_report import headline_lines
    from ktedge.benchmarks.report import refresh_report

    refresh_report(args.out)

    for line in headline_lines(result):
        console.print(line)
    n = sum(len(t["cells"]) for t in result["tasks"].values())
    w = result["wall_s"]
    trained = sum(len(c["deploy_every_training"]["per_seed"])
                  for t in result["tasks"].values() for c in t["cells"].values())
    console.print(f"KT ablation ({result['plan']}): {n} cells x {result['seeds_per_cell']} seeds "
                  f"({trained} trainings), "
                  f"{result['adapter_epochs']} "
                  f"epochs each, in {w['total']:.1f} s wall ({w['embeddings']:.1f} s faces + embeddings, "
                  f"{w['adapters']:.1f} s adapters on {result['workers']} worker(s), {result['cpu_s']['adapters']:.0f} "
                  f"CPU s) -> {json_path(args.out)}, "
                  f"{plot_path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
