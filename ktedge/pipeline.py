"""`ktedge run`: the whole chain on one config, skipping stages whose inputs have not changed,
ending with <out>/summary.json (DESIGN.md §2.8)."""
from __future__ import annotations

import time
from pathlib import Path

from ktedge.atomic import matches_record, read_json, remove_stale_temps, sha256_file, write_json
from ktedge.config import Config
from ktedge.progress import console


def train_is_current(cfg: Config, out: Path) -> bool:
    """A finished train stage for exactly this config: its checkpoint and matching metrics exist."""
    from ktedge.model.train import train_config_sha256

    metrics = read_json(out / "train" / "metrics.json")
    return (metrics is not None and metrics.get("config_sha256") == train_config_sha256(cfg)
            and matches_record(out / "train" / "checkpoint.pt", out / "train" / "metrics.json", "checkpoint_sha256"))


def fuse_is_current(out: Path) -> bool:
    parity = read_json(out / "fuse" / "parity.json")
    return (parity is not None and parity.get("passed") is True
            and matches_record(out / "fuse" / "deploy.pt2", out / "fuse" / "parity.json", "deploy_sha256")
            and parity.get("checkpoint_sha256") == sha256_file(out / "train" / "checkpoint.pt"))


def run(cfg: Config, out: str | Path) -> dict:
    """train (if no current checkpoint) -> fuse -> quantize -> export -> validate -> bench ->
    summary.json and the report. A stage whose recorded inputs match is skipped."""
    from ktedge.benchmarks.report import write_report
    from ktedge.benchmarks.stage import bench_is_current, bench_stage
    from ktedge.export.stage import export_is_current, export_stage
    from ktedge.export.validate import validate_is_current, validate_stage
    from ktedge.model.fuse import fuse_stage
    from ktedge.model.train import train
    from ktedge.quantize.stage import quantize_is_current, quantize_stage

    out = Path(out)
    t0 = time.perf_counter()
    if out.is_dir():
        for p in remove_stale_temps(out):
            console.print(f"removed {p} (left by an interrupted write)")
    stages = [
        ("train", lambda: train_is_current(cfg, out), lambda: train(cfg, out), out / "train" / "checkpoint.pt"),
        ("fuse", lambda: fuse_is_current(out), lambda: fuse_stage(out), out / "fuse" / "deploy.pt2"),
        ("quantize", lambda: quantize_is_current(cfg, out), lambda: quantize_stage(cfg, out), out / "quantize"),
        ("export", lambda: export_is_current(cfg, out), lambda: export_stage(cfg, out), out / "export"),
        ("validate", lambda: validate_is_current(cfg, out), lambda: validate_stage(cfg, out),
         out / "validate" / "accuracy.json"),
        ("bench", lambda: bench_is_current(cfg, out), lambda: bench_stage(cfg, out),
         out / "bench" / "host" / "latency.json"),
    ]
    skipped = []
    for name, is_current, do, what in stages:
        if is_current():
            console.print(f"{name}: up to date ({what}), skipped")
            skipped.append(name)
        else:
            console.rule(name)
            do()
    summary = build_summary(out)
    summary["skipped"] = skipped
    summary["pipeline_wall_s"] = round(time.perf_counter() - t0, 2)
    write_json(out / "summary.json", summary)
    write_report(out, summary)
    return summary


def _artifacts(out: Path) -> list[dict]:
    """summary.json's artifacts: each export joined with its validation and its host latency."""
    index = read_json(out / "export" / "index.json") or {"artifacts": []}
    accuracy = (read_json(out / "validate" / "accuracy.json") or {}).get("artifacts", {})
    latency = {r["target"]: r for r in (read_json(out / "bench" / "host" / "latency.json") or {}).get("results", [])}
    rows = []
    for a in index["artifacts"]:
        if not a["ok"]:
            rows.append({"name": a["name"], "format": a["format"], "precision": a["precision"], "exported": False,
                         "error": a.get("error")})
            continue
        acc = accuracy.get(a["name"], {})
        bench = latency.get(a["name"], {})
        lat = bench.get("latency_ms")
        rows.append({"name": a["name"], "format": a["format"], "precision": a["precision"], "variant": a["variant"],
                     "path": str(Path(a["path"]).relative_to(out)), "size_bytes": a["size_bytes"],
                     "sha256": a["sha256"], "validated": acc.get("validated", False), "metric": acc.get("metric"),
                     "drift_rel": acc.get("drift_rel"), "passed": acc.get("passed"), "not_run": acc.get("not_run"),
                     "failed_tasks": [t for t, g in (acc.get("tasks") or {}).items() if not g["passed"]],
                     "latency_ms": {"median": lat["median"], "p90": lat["p90"]} if lat else None,
                     "bench_status": bench.get("status"), "bench_reason": bench.get("reason"),
                     "runtime": acc.get("runtime") or bench.get("runtime")})
    return rows


def build_summary(out: Path) -> dict:
    """summary.json (DESIGN.md §2.8) from what the stages wrote in the run directory."""
    from ktedge.benchmarks.ratios import compute_ratios

    metrics = read_json(out / "train" / "metrics.json") or {}
    name = metrics.get("metric")
    train_block = {"metric": name, **{k: metrics[k] for k in ("canonical_alone", "kt_deploy", "ensemble", "system",
                                                                "system_model", "baseline", "teachers", "tasks",
                                                                "params", "data") if k in metrics}}
    parity = read_json(out / "fuse" / "parity.json") or {}
    quantize, quantize_wall = {}, 0.0
    for path in sorted((out / "quantize").glob("*/sensitivity.json")):
        rec = read_json(path) or {}
        quantize[path.parent.name] = {k: rec.get(k) for k in ("drift_rel", "passed", "float_layers", "fp32", "int8", "tasks")}
        quantize_wall += rec.get("wall_s") or 0.0
    index = read_json(out / "export" / "index.json")
    accuracy = read_json(out / "validate" / "accuracy.json") or {}
    latency = read_json(out / "bench" / "host" / "latency.json")
    summary = {"train": train_block, "fuse": {"max_abs_error": parity.get("max_abs_error")}, "quantize": quantize,
               "artifacts": _artifacts(out),
               "ratios": compute_ratios(latency, index) if latency and index else None,
               "wall_s": {"train": metrics.get("wall_s"), "fuse": parity.get("wall_s"),
                          "quantize": round(quantize_wall, 2), "export": (index or {}).get("wall_s"),
                          "validate": accuracy.get("wall_s"), "bench": (latency or {}).get("wall_s")}}
    onet = read_json(out / "onet" / "validate" / "accuracy.json")
    if onet is not None:
        summary["onet"] = {"images": onet.get("images"), "fp32_torch": onet.get("fp32_torch"),
                           "passed": all(r.get("passed") is not False for r in onet["artifacts"].values())}
    return summary
