"""`ktedge run`: the whole chain on one run directory, skipping stages whose inputs have not changed,
ending with <out>/summary.json (docs/design.md).

A run makes its deployable (ktedge's training + fuse, or nothing more where `ktedge import` wrote
it), imports ktedge's published models beside it (`published:`, each a run of its own under
published/), then takes every deployable through quantize -> export -> validate, benchmarks them
all in one bench run, and writes the summary and the report."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ktedge.atomic import matches_record, read_json, remove_stale_temps, sha256_file, sha256_json, write_json
from ktedge.config import Config
from ktedge.deployable import RECORD, published_runs
from ktedge.progress import console


def is_imported(out: Path) -> bool:
    """Whether the run's deployable came from `ktedge import` (the run then trains nothing)."""
    record = read_json(out / "fuse" / RECORD) or {}
    return record.get("provenance", {}).get("made_by") == "ktedge import"


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


def published_overrides(cfg: Config) -> list[dict]:
    """What a published model's run takes from the run it is deployed beside (the run's one bench
    measures it)."""
    d = cfg.to_dict()
    return [{k: d[k] for k in ("seed", "quantize", "export")}]


def published_is_current(cfg: Config, run: Path, name: str) -> bool:
    from ktedge.model.importer import import_config, read_spec
    from ktedge.specs import shipped_spec

    record = read_json(run / "fuse" / RECORD)
    stored = read_json(run / "fuse" / "parity.json") or {}
    spec = shipped_spec(name)
    want = import_config(read_spec(spec), published_overrides(cfg)).to_dict()
    return (record is not None and record["provenance"]["source"].get("spec_sha256") == sha256_file(spec)
            and stored.get("config_sha256") == sha256_json(want)
            and matches_record(run / "fuse" / "deploy.pt2", run / "fuse" / "parity.json", "deploy_sha256"))


def import_published(cfg: Config, run: Path, name: str) -> dict:
    from ktedge.model.importer import import_model
    from ktedge.specs import shipped_spec

    return import_model(run, shipped_spec(name), overrides=published_overrides(cfg))


def run_configs(cfg: Config, out: Path) -> list[tuple[Config, Path]]:
    """The run and each published model's run beside it, with the config each was made with."""
    from ktedge.config import load_config

    return [(cfg, out)] + [(load_config(r / "config.yaml"), r) for r in published_runs(out)]


def _stage(name: str, is_current: Callable[[], bool], do: Callable[[], object], what: Path, skipped: list[str]) -> None:
    if is_current():
        console.print(f"{name}: up to date ({what}), skipped")
        skipped.append(name)
    else:
        console.rule(name)
        do()


def run(cfg: Config, out: str | Path) -> dict:
    """[train -> fuse] -> import the published models -> quantize -> export -> validate (each run)
    -> bench -> summary.json and the report. A stage whose recorded inputs match is skipped."""
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
    skipped: list[str] = []
    if is_imported(out):
        console.print(f"{out / 'fuse'}: imported by `ktedge import`; nothing to train")
    else:
        _stage("train", lambda: train_is_current(cfg, out), lambda: train(cfg, out), out / "train" / "checkpoint.pt",
               skipped)
        _stage("fuse", lambda: fuse_is_current(out), lambda: fuse_stage(out), out / "fuse" / RECORD, skipped)
    for name in cfg.published:
        run_dir = out / "published" / name
        _stage(f"import {name}", lambda: published_is_current(cfg, run_dir, name),
               lambda: import_published(cfg, run_dir, name), run_dir / "fuse" / RECORD, skipped)
    for c, r in run_configs(cfg, out):
        label = "" if r == out else f" {r.name}"
        _stage(f"quantize{label}", lambda: quantize_is_current(c, r), lambda: quantize_stage(c, r), r / "quantize",
               skipped)
        _stage(f"export{label}", lambda: export_is_current(c, r), lambda: export_stage(c, r), r / "export", skipped)
        _stage(f"validate{label}", lambda: validate_is_current(c, r), lambda: validate_stage(c, r),
               r / "validate" / "accuracy.json", skipped)
    _stage("bench", lambda: bench_is_current(cfg, out), lambda: bench_stage(cfg, out),
           out / "bench" / "host" / "latency.json", skipped)
    summary = build_summary(out)
    summary["skipped"] = skipped
    summary["pipeline_wall_s"] = round(time.perf_counter() - t0, 2)
    write_json(out / "summary.json", summary)
    write_report(out, summary)
    return summary


def _artifacts(run: Path, latency: dict[str, dict], prefix: str = "") -> list[dict]:
    """summary.json's artifacts of one run: each export joined with its validation, its host
    latency and its manifest's placement."""
    from ktedge.export.manifest import artifact_dir
    index = read_json(run / "export" / "index.json") or {"artifacts": []}
    accuracy = read_json(run / "validate" / "accuracy.json") or {}
    model = (read_json(run / "fuse" / RECORD) or {}).get("name")
    rows = []
    for a in index["artifacts"]:
        base = {"name": a["name"], "model": model, "format": a["format"], "precision": a["precision"]}
        if not a["ok"]:
            rows.append({**base, "exported": False, "error": a.get("error")})
            continue
        acc = accuracy.get("artifacts", {}).get(a["name"], {})
        bench = latency.get(prefix + a["name"], {})
        lat = bench.get("latency_ms")
        rows.append({**base, "variant": a["variant"], "path": a["path"],
                     "size_bytes": a["size_bytes"], "sha256": a["sha256"], "validated": acc.get("validated", False),
                     "metric": acc.get("metric"), "drift_rel": acc.get("drift_rel"), "passed": acc.get("passed"),
                     "not_run": acc.get("not_run"),
                     "failed_tasks": [t for t, g in (acc.get("tasks") or {}).items() if not g["passed"]]
                     + [o for o, g in (acc.get("outputs") or {}).items() if g.get("passed") is False],
                     "latency_ms": {"median": lat["median"], "p90": lat["p90"]} if lat else None,
                     "bench_status": bench.get("status"), "bench_reason": bench.get("reason"),
                     "runtime": acc.get("runtime") or bench.get("runtime"),
                     **_from_manifest(read_json(artifact_dir(run, a) / "manifest.json") or {})})
    return rows


def _from_manifest(manifest: dict) -> dict:
    """What an artifact row carries of its manifest: its placement; where its format is not timed
    here, the target's own speed estimate."""
    from ktedge.export.registry import formats

    row = {"placement": manifest.get("placement")}
    estimate = formats()[manifest["format"]].estimate if manifest else None
    if estimate is not None:
        row["npu_estimate"] = estimate(manifest)
    return row


def against_original(name: str, rows: list[dict], by_target: dict[str, dict]) -> dict | None:
    """A published port's artifacts beside the file it ports (its spec's `original`, measured in
    the same bench run): size and latency ratios, and how far each one's task is from it."""
    from ktedge.model.importer import read_spec
    from ktedge.specs import SHIPPED, shipped_spec

    original = read_spec(shipped_spec(name)).get("original") if name in SHIPPED else None
    peer = by_target.get(original or "")
    if peer is None or peer.get("status") != "ok":
        return None
    base = peer["latency_ms"]
    ratios = {}
    for r in rows:
        if r.get("exported") is False or not r.get("latency_ms"):
            continue
        ratios[r["name"]] = {"size_bytes": r["size_bytes"], "latency_ms": r["latency_ms"],
                             "size_ratio": round(r["size_bytes"] / peer["size_bytes"], 3),
                             "median_ratio": round(r["latency_ms"]["median"] / base["median"], 3),
                             "p90_ratio": round(r["latency_ms"]["p90"] / base["p90"], 3),
                             "metric": r.get("metric"), "passed": r.get("passed")}
    return {"original": original, "size_bytes": peer["size_bytes"],
            "latency_ms": {"median": base["median"], "p90": base["p90"]}, "artifacts": ratios}


def _quantize(run: Path) -> tuple[dict, float]:
    quantize, wall = {}, 0.0
    for path in sorted((run / "quantize").glob("*/sensitivity.json")):
        rec = read_json(path) or {}
        quantize[path.parent.name] = {k: rec.get(k) for k in ("drift_rel", "passed", "float_layers", "fp32", "int8",
                                                              "tasks")}
        wall += rec.get("wall_s") or 0.0
    return quantize, round(wall, 2)


def build_summary(out: Path) -> dict:
    """summary.json (docs/design.md) from what the stages wrote in the run directory."""
    from ktedge.benchmarks.kt_ablation_report import ablation_summary
    from ktedge.benchmarks.ratios import compute_ratios

    metrics = read_json(out / "train" / "metrics.json") or {}
    deployable = read_json(out / "fuse" / RECORD) or {}
    task = next((o["task"] for o in deployable.get("outputs", []) if o.get("task")), None) or {}
    train_block = {"metric": metrics.get("metric", task.get("metric")),
                   **{k: metrics[k] for k in ("canonical_alone", "kt_deploy", "ensemble", "system", "system_model",
                                              "baseline", "teachers", "tasks", "params", "data", "compare")
                      if k in metrics}}
    if is_imported(out):
        train_block["imported"] = deployable["provenance"]["source"]
    parity = read_json(out / "fuse" / "parity.json") or {}
    latency = read_json(out / "bench" / "host" / "latency.json")
    by_target = {r["target"]: r for r in (latency or {}).get("results", [])}
    quantize, quantize_wall = _quantize(out)
    index = read_json(out / "export" / "index.json")
    accuracy = read_json(out / "validate" / "accuracy.json") or {}
    artifacts = _artifacts(out, by_target)
    published = {}
    for run in published_runs(out):
        name = (read_json(run / "fuse" / RECORD) or {}).get("name", run.name)
        rows = _artifacts(run, by_target, f"{name}/")
        artifacts += rows
        validation = read_json(run / "validate" / "accuracy.json") or {}
        published[name] = {"faces": validation.get("faces_source"), "fp32_torch": validation.get("tasks_fp32_torch"),
                           "quantize": _quantize(run)[0],
                           "passed": all(r.get("passed") is not False for r in validation.get("artifacts", {}).values())}
        if (side := against_original(name, rows, by_target)) is not None:
            published[name]["against_original"] = side
    summary = {"model": deployable.get("name"), "train": train_block,
               "fuse": {"max_abs_error": parity.get("max_abs_error")}, "quantize": quantize,
               "artifacts": artifacts,
               "ratios": compute_ratios(latency, index) if latency and index else None,
               "wall_s": {"train": metrics.get("wall_s"), "fuse": parity.get("wall_s"),
                          "quantize": quantize_wall, "export": (index or {}).get("wall_s"),
                          "validate": accuracy.get("wall_s"), "bench": (latency or {}).get("wall_s")}}
    if published:
        summary["published"] = published
    if (ablation := ablation_summary(out)) is not None:
        summary["kt_ablation"] = ablation
    if (real := read_json(out / "bench" / "real_faces.json")) is not None:
        summary["real_faces"] = {"reference": real["reference"], "points": real["points"],
                                 "artifacts": {k: {"faces": v["faces"], "mean_error_pct": v["mean_pct"]}
                                               for k, v in real["artifacts"].items()}}
    return summary

