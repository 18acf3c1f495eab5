"""`ktedge run`: the whole chain on one config, skipping stages whose inputs have not changed,
ending with <out>/summary.json (DESIGN.md §2.8)."""
from __future__ import annotations

import time
from pathlib import Path

from ktedge.atomic import read_json, sha256_file, write_json
from ktedge.config import Config
from ktedge.progress import console


def train_is_current(cfg: Config, out: Path) -> bool:
    """A finished train stage for exactly this config: its checkpoint and matching metrics exist."""
    from ktedge.model.train import train_config_sha256

    metrics = read_json(out / "train" / "metrics.json")
    return (metrics is not None and metrics.get("config_sha256") == train_config_sha256(cfg)
            and (out / "train" / "checkpoint.pt").is_file())


def fuse_is_current(out: Path) -> bool:
    parity = read_json(out / "fuse" / "parity.json")
    return (parity is not None and parity.get("passed") is True and (out / "fuse" / "deploy.pt2").is_file()
            and parity.get("checkpoint_sha256") == sha256_file(out / "train" / "checkpoint.pt"))


def run(cfg: Config, out: str | Path) -> dict:
    from ktedge.model.fuse import fuse_stage
    from ktedge.model.train import train
    from ktedge.quantize.stage import quantize_is_current, quantize_stage

    out = Path(out)
    t0 = time.perf_counter()
    if train_is_current(cfg, out):
        console.print(f"train: up to date ({out / 'train' / 'checkpoint.pt'}), skipped")
    else:
        train(cfg, out)
    if fuse_is_current(out):
        console.print(f"fuse: up to date ({out / 'fuse' / 'deploy.pt2'}), skipped")
    else:
        fuse_stage(out)
    if quantize_is_current(cfg, out):
        console.print(f"quantize: up to date ({out / 'quantize'}), skipped")
    else:
        quantize_stage(cfg, out)
    summary = build_summary(out)
    summary["pipeline_wall_s"] = round(time.perf_counter() - t0, 2)
    write_json(out / "summary.json", summary)
    return summary


def build_summary(out: Path) -> dict:
    """summary.json from what the stages wrote in the run directory."""
    metrics = read_json(out / "train" / "metrics.json") or {}
    name = metrics.get("metric")
    train_block = {"metric": name, **{k: metrics[k] for k in ("canonical_alone", "kt_deploy", "ensemble") if k in metrics}}
    parity = read_json(out / "fuse" / "parity.json") or {}
    quantize, quantize_wall = {}, 0.0
    for path in sorted((out / "quantize").glob("*/sensitivity.json")):
        rec = read_json(path) or {}
        quantize[path.parent.name] = {k: rec.get(k) for k in ("drift_rel", "passed", "float_layers", "fp32", "int8")}
        quantize_wall += rec.get("wall_s") or 0.0
    return {"train": train_block, "fuse": {"max_abs_error": parity.get("max_abs_error")}, "quantize": quantize,
            "wall_s": {"train": metrics.get("wall_s"), "fuse": parity.get("wall_s"), "quantize": round(quantize_wall, 2)}}
