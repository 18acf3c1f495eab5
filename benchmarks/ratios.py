"""The headline ratios of one run, all from one bench run on one machine:

- int8/fp32 latency per runtime and int8/fp32 size per format (the KT deploy model);
- KT deploy / canonical encoder alone latency (what the adapter costs at inference);
- ensemble (all priors + adapter) / KT deploy latency (what dropping the priors saves);
- the pipeline's wall time per stage.

`python -m ktedge.benchmarks.ratios --out DIR` benchmarks the run if its bench is not current,
then prints the ratios against their targets and writes DIR/bench/ratios.json."""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from ktedge.atomic import read_json, write_json

TARGETS = {"int8_fp32_latency": ("<=", 0.35), "int8_fp32_size": ("<=", 0.30),
           "deploy_canonical_latency": ("<=", 1.05), "ensemble_deploy_latency": (">=", 2.0)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 4)


def ratio_artifacts() -> dict[str, tuple[str, str, bool]]:
    """format -> (its fp32 artifact, the int8 one its ratios take, whether it runs here), from the registry."""
    from ktedge.export.registry import formats, runs_here

    out = {}
    for name, f in formats().items():
        fp32 = next((e for e in f.exporters if e.reference), None)
        int8 = next((e for e in f.exporters if e.int8_ratio), None)
        if fp32 is not None and int8 is not None:  # an int8-only format (Ethos-U) has no ratio to take
            out[name] = (fp32.name, int8.name, runs_here(fp32))
    return out


def median_ms(results: list[dict], role: str) -> dict[str, float]:
    """{artifact: median latency (ms)} of one role's targets measured ok (the artifact's own name)."""
    return {r["target"].rsplit("/", 1)[-1]: r["latency_ms"]["median"] for r in results
            if r.get("role") == role and r["status"] == "ok" and r.get("latency_ms", {}).get("median") is not None}


def compute_ratios(latency: dict, index: dict) -> dict:
    """latency.json (host) and export/index.json -> the ratios block of summary.json."""
    names = ratio_artifacts()
    deploy = median_ms(latency["results"], "deploy")
    canonical, ensemble = median_ms(latency["results"], "canonical_alone"), median_ms(latency["results"], "ensemble")
    size = {a["name"]: a["size_bytes"] for a in index["artifacts"] if a["ok"]}
    here = {f: v for f, v in names.items() if v[2]}
    lat = {f: _ratio(deploy.get(i8), deploy.get(fp)) for f, (fp, i8, _) in here.items()}
    sizes = {f: _ratio(size.get(i8), size.get(fp)) for f, (fp, i8, _) in names.items()}
    by_deploy = {f: _ratio(deploy.get(fp), canonical.get(fp)) for f, (fp, _, _) in here.items()}
    by_ensemble = {f: _ratio(ensemble.get(fp), deploy.get(fp)) for f, (fp, _, _) in here.items()}

    def known(d: dict) -> list[float]:
        return [v for v in d.values() if v is not None]
    # One number each for the two model comparisons: the median over the runtimes; per runtime beside it.
    return {"int8_fp32_latency": lat, "int8_fp32_size": sizes,
            "deploy_canonical_latency": statistics.median(known(by_deploy)) if known(by_deploy) else None,
            "ensemble_deploy_latency": statistics.median(known(by_ensemble)) if known(by_ensemble) else None,
            "deploy_canonical_latency_by_runtime": by_deploy, "ensemble_deploy_latency_by_runtime": by_ensemble,
            "int8_name": {f: i8 for f, (_, i8, _) in names.items()},
            "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()}}


def meets(name: str, value: float | None) -> bool | None:
    if value is None:
        return None
    op, target = TARGETS[name]
    return value <= target if op == "<=" else value >= target


def table_rows(ratios: dict) -> list[tuple[str, str, float | None, str, bool | None]]:
    """(ratio, where, value, target, met) for printing and the report."""
    rows = []
    for name in ("int8_fp32_latency", "int8_fp32_size"):
        for where, v in ratios[name].items():
            rows.append((name, where, v, ratios["targets"][name], meets(name, v)))
    for name in ("deploy_canonical_latency", "ensemble_deploy_latency"):
        for where, v in ratios[f"{name}_by_runtime"].items():
            rows.append((name, where, v, ratios["targets"][name], meets(name, v)))
        rows.append((name, "median over runtimes", ratios[name], ratios["targets"][name], meets(name, ratios[name])))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="print the run's int8/fp32, deploy/canonical and ensemble/deploy ratios")
    p.add_argument("--out", type=Path, required=True, help="a run directory (after `ktedge export`)")
    args = p.parse_args(argv)
    from ktedge.progress import quiet_library_logs

    quiet_library_logs()
    from ktedge.benchmarks.stage import bench_is_current, bench_stage
    from ktedge.config import load_config

    config = args.out / "config.yaml"
    cfg = load_config(config if config.is_file() else None)
    if not bench_is_current(cfg, args.out):
        bench_stage(cfg, args.out)
    latency = read_json(args.out / "bench" / "host" / "latency.json")
    ratios = compute_ratios(latency, read_json(args.out / "export" / "index.json"))
    summary = read_json(args.out / "summary.json") or {}
    ratios["wall_s"] = summary.get("wall_s")
    for name, where, value, target, met in table_rows(ratios):
        verdict = {True: "met", False: "MISSED", None: "not measured"}[met]
        shown = "-" if value is None else f"{value:.3f}"
        print(f"{name:26s} {where:22s} {shown:>7s}  target {target:7s} {verdict}")
    if ratios["wall_s"]:
        print("wall time (s): " + ", ".join(f"{k} {v}" for k, v in ratios["wall_s"].items() if v is not None))
    write_json(args.out / "bench" / "ratios.json", ratios)
    print(f"-> {args.out / 'bench' / 'ratios.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
