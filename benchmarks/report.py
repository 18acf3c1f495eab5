"""The run's report: DIR/report.md with its plots in DIR/report/ (latency bars, accuracy vs
latency), rendered from summary.json and the stages' JSON only, so it can be rebuilt at any time
(`python -m ktedge.benchmarks.report --out DIR`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ktedge.atomic import atomic_path, read_json, write_json, write_text
from ktedge.benchmarks.kt_ablation_report import ablation_section
from ktedge.benchmarks.ratios import ratio_artifacts, table_rows
from ktedge.quantize.gate import gate_text

ROLE_LABELS = {"deploy": "the deployed model", "canonical_alone": "canonical encoder alone",
               "ensemble": "ensemble (all priors + adapter)"}
ROLE_COLOURS = {"deploy": "#1f77b4", "ensemble": "#d62728", "canonical_alone": "#2ca02c", "published": "#9467bd",
                "peer": "#7f7f7f"}


def _f(v: float | None, fmt: str = ".3f", suffix: str = "") -> str:
    return "-" if v is None else f"{v:{fmt}}{suffix}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _gate(a: dict) -> str:
    if not a["validated"]:
        where = a.get("not_run") or "not run here"
        return f"structure ok, accuracy: {where}" if a["passed"] else (where if a["passed"] is None else "FAIL")
    return "pass" if a["passed"] else "**FAIL** " + ", ".join(a.get("failed_tasks") or [])


def artifact_table(artifacts: list[dict], metric: str) -> str:
    """format x precision x size x metric x drift x latency x speed-up over the format's fp32."""
    arts = [a for a in artifacts if a.get("exported", True)]
    fp32_names = {f: fp for f, (fp, _, _) in ratio_artifacts().items()}
    fp32 = {a["format"]: (a["latency_ms"] or {}).get("median") for a in arts if a["name"] == fp32_names.get(a["format"])}
    rows = []
    for a in arts:
        lat = a["latency_ms"] or {}
        base = fp32.get(a["format"])
        speedup = f"{base / lat['median']:.2f}x" if base and lat.get("median") else "-"
        rows.append([a["format"], f"{a['precision']} ({a['variant']})", f"{a['size_bytes'] / 1e6:.2f} MB",
                     _f(a["metric"]), _f(None if a["drift_rel"] is None else 100 * a["drift_rel"], ".2f", "%"),
                     _gate(a), _f(lat.get("median")), _f(lat.get("p90")),
                     f"NPU: {npu['by']} est. {npu['inference_ms']:.2f} ms" if (npu := a.get("npu_estimate"))
                     else "not run here" if a.get("bench_status") == "skipped" else speedup])
    failed = [[a["format"], a["precision"], "-", "-", "-", f"**export failed**: {a.get('error', '')[:120]}", "-", "-",
               "-"] for a in artifacts if not a.get("exported", True)]
    return _md_table(["format", "precision", "size", metric, "drift", "gate", "median ms", "p90 ms",
                      "speed-up vs fp32"], rows + failed)


def placement_table(artifacts: list[dict]) -> str:
    """Per artifact: delegate partitions, the ops its runtime runs outside them, and (int8) the ops
    that compute in float: what a phone NPU taking only integer graphs would not take."""
    def ops(d: dict | None) -> str:
        return ", ".join(f"{k} x{v}" for k, v in (d or {}).items()) or "none"

    rows = [[a["name"], p["delegate"] or "-", str(p["partitions"]), ops(p["outside"]),
             ops(p["float_ops"]) if a["precision"] == "int8" else "(float artifact)"]
            for a in artifacts if (p := a.get("placement"))]
    return _md_table(["artifact", "delegate", "partitions", "ops outside the delegate", "float ops in the int8 graph"],
                     rows)


def npu_table(artifacts: list[dict]) -> str | None:
    """Each Ethos-U program: Vela's estimate for its target, the NPU's share of the ops, and the
    accuracy of its TOSA graph in the reference model against the float program."""
    rows = [[a["model"], a["name"], f"{npu['target']} ({npu['system_config']}, {npu['clock_mhz']:.0f} MHz)",
             _f(npu["inference_ms"]), f"{npu['macs'] / 1e6:.1f} M", f"{npu['sram_kib']:.0f} KiB",
             f"{npu['off_chip_flash_kib']:.0f} KiB",
             f"{p['ops_in_delegate']} in {p['partitions']} partition(s); CPU: "
             + (", ".join(f"{k.split('::')[-1]} x{v}" for k, v in p["outside"].items()) or "none")
             if (p := a.get("placement")) and "ops_in_delegate" in p else "-",
             _f(a["metric"]), _f(None if a["drift_rel"] is None else 100 * a["drift_rel"], ".2f", "%"), _gate(a)]
            for a in artifacts if (npu := a.get("npu_estimate"))]
    if not rows:
        return None
    return _md_table(["model", "artifact", "target", "Vela est. ms", "MACs", "SRAM", "off-chip flash",
                      "TOSA ops on the NPU", "metric (TOSA ref.)", "drift", "gate"], rows)


def train_table(train: dict) -> str:
    """The trained model beside what it is measured against (train/metrics.json's `compare`)."""
    rows = train["compare"]
    names = list(rows[0]["metrics"])
    return _md_table(["model", *names], [[r["label"], *(_f(r["metrics"].get(n)) for n in names)] for r in rows])


def comparison_table(summary: dict, latency: dict) -> str:
    """The deployed model and its comparison models: held-out accuracy (training's) and fp32 latency per runtime."""
    compare = {r["key"]: r for r in summary["train"].get("compare", [])}
    runtimes = [(f, fp) for f, (fp, _, here) in ratio_artifacts().items() if here]
    metric = summary["train"]["metric"]
    rows = []
    for role, key in (("ensemble", "ensemble"), ("deploy", "kt_deploy"), ("canonical_alone", "canonical_alone")):
        measured = {r["target"].rsplit("/", 1)[-1]: r for r in latency["results"]
                    if r.get("role") == role and r["status"] == "ok"}
        row = compare.get(key, {"label": ROLE_LABELS[role], "metrics": {}})
        rows.append([row["label"], _f(row["metrics"].get(metric)),
                     *(_f(measured[fp]["latency_ms"]["median"]) if fp in measured else "-" for _, fp in runtimes)])
    return _md_table(["model", f"held-out {metric}", *(f"{f} fp32 ms" for f, _ in runtimes)], rows)


def ratio_table(ratios: dict) -> str:
    rows = [[name.replace("_", " "), where, _f(v), target, {True: "met", False: "**missed**", None: "-"}[met]]
            for name, where, v, target, met in table_rows(ratios)]
    return _md_table(["ratio", "where", "value", "target", ""], rows)


def published_section(out: Path, summary: dict) -> list[str]:
    """Each published model deployed beside the run's: its tasks and agreement per artifact, in its runtime."""
    parts = []
    for name, pub in (summary.get("published") or {}).items():
        run = out / "published" / name
        validation = read_json(run / "validate" / "accuracy.json") or {}
        ref = ", ".join(f"{t} {r['metric']} {r['value']:.3f}" for t, r in (pub.get("fp32_torch") or {}).items())
        parts += [f"### {name}", "", f"On {pub.get('faces')}; the float program: {ref}.", ""]
        rows = []
        for art in (a for a in summary["artifacts"] if a["model"] == name and a.get("exported", True)):
            v = validation.get("artifacts", {}).get(art["name"], {})
            tasks = "; ".join(f"{t} {gate_text(g)}" for t, g in (v.get("tasks") or {}).items())
            agree = "; ".join(f"{o} NME {g['nme_vs_fp32']:.2f}%" for o, g in (v.get("outputs") or {}).items()
                              if "nme_vs_fp32" in g)
            lat = art.get("latency_ms") or {}
            rows.append([art["name"], f"{art['size_bytes'] / 1e6:.2f} MB", tasks or "-", agree or "-", _gate(art),
                         _f(lat.get("median")), _f(lat.get("p90"))])
        parts += [_md_table(["artifact", "size", "tasks: value (drift of its gate, or its bound)", "points vs fp32",
                             "gate", "median ms", "p90 ms"], rows), ""]
        if side := pub.get("against_original"):
            parts += original_table(name, side)
    return parts


def original_table(name: str, side: dict) -> list[str]:
    """A port's artifacts against the file it ports, measured in the same bench run."""
    lat = side["latency_ms"]
    rows = [[f"{side['original']} (the original)", f"{side['size_bytes'] / 1e6:.2f} MB", "1.00", _f(lat["median"]),
             _f(lat["p90"]), "1.00", "-"]]
    rows += [[f"{name}/{a}", f"{r['size_bytes'] / 1e6:.2f} MB", _f(r["size_ratio"], ".2f"),
              _f(r["latency_ms"]["median"]), _f(r["latency_ms"]["p90"]), _f(r["median_ratio"], ".2f"), _f(r["metric"])]
             for a, r in side["artifacts"].items()]
    return [f"Side by side with {side['original']}, same LiteRT interpreter threads and bench run "
            f"(ratios: ours / the original's; metric: each artifact's task metric against the original's outputs):", "",
            _md_table(["target", "size", "size ratio", "median ms", "p90 ms", "median ratio", "metric"], rows), ""]


def peers_table(latency: dict) -> str:
    """MediaPipe's own face models in the same interpreter, same threads."""
    rows = []
    for r in latency["results"]:
        if r.get("role") == "peer":
            lat = r.get("latency_ms") or {}
            rows.append([r["target"], r["format"], r["precision"], _f((r.get("size_bytes") or 0) / 1e6, ".2f", " MB"),
                         _f(lat.get("median")), _f(lat.get("p90")),
                         r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason', '')}"])
    return _md_table(["target", "format", "precision", "size", "median ms", "p90 ms", "status"], rows)


def pipeline_table(latency: dict) -> str | None:
    """Each model behind the run's detector, timed as one call on a whole photo, beside the two
    timed alone in the same bench run; None where the bench timed no pipeline."""
    by_target = {r["target"]: r for r in latency["results"]}
    median = lambda r: (r or {}).get("latency_ms", {}).get("median") if (r or {}).get("status") == "ok" else None  # noqa: E731
    rows = []
    for r in latency["results"]:
        if r.get("role") != "pipeline":
            continue
        model, detector = by_target.get(r["target"].removeprefix("pipeline/")), by_target.get(r["detector"])
        faces = r.get("faces")
        per_face = median(r) / faces if median(r) is not None and faces else None
        rows.append([r["target"].removeprefix("pipeline/"), r["detector"], _f(median(detector)), _f(median(model)),
                     "-" if faces is None else str(faces), _f(median(r)), _f(per_face),
                     r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason', '')}"])
    if not rows:
        return None
    return _md_table(["model", "detector", "detector alone ms", "model alone ms", "faces", "pipeline ms",
                      "pipeline ms per face", "status"], rows)


def plot_latency(latency: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in latency["results"] if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1.2))
    y = range(len(rows))
    med = [r["latency_ms"]["median"] for r in rows]
    p90 = [r["latency_ms"]["p90"] - r["latency_ms"]["median"] for r in rows]
    ax.barh(list(y), med, xerr=[[0] * len(rows), p90], color=[ROLE_COLOURS.get(r.get("role"), "#7f7f7f") for r in rows])
    ax.set_yticks(list(y), [r["target"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"latency ms (median, whisker to p90; {latency['protocol']['threads']} thread(s))")
    ax.set_title(f"latency on {latency['device']['name']}")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ROLE_COLOURS.values()]
    ax.legend(handles, list(ROLE_COLOURS), fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def plot_accuracy_latency(summary: dict, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [a for a in summary["artifacts"] if a["model"] == summary["model"] and a.get("validated")
           and a.get("latency_ms")]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    markers = dict(zip(ratio_artifacts(), "os^D"))
    for a in pts:
        ax.scatter(a["latency_ms"]["median"], a["metric"], marker=markers.get(a["format"], "o"), s=50)
        ax.annotate(a["name"], (a["latency_ms"]["median"], a["metric"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    ax.set_xlabel("median latency ms (host)")
    ax.set_ylabel(f"held-out {metric}")
    ax.set_title(f"accuracy vs latency of {summary['model']}'s artifacts")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def faces_in_words(out: Path) -> str:
    return (read_json(out / "validate" / "accuracy.json") or {}).get("faces_source") or "the run's held-out faces"


def quantization_section(q: dict) -> list[str]:
    parts = ["## Quantization", "", _md_table(
        ["backend", "worst task drift", "gates", "float layers"],
        [[b, _f(100 * r["drift_rel"] if r.get("drift_rel") is not None else None, ".2f", "%"),
          "pass" if r.get("passed") else "**FAIL**", ", ".join(r.get("float_layers") or []) or "-"]
         for b, r in q.items()]), ""]
    # Every task's gate: the configured drift, widened to what the held-out faces resolve.
    parts += [_md_table(["backend", "task", "metric", "fp32", "int8", "drift", "resolution", "gate", "decisions agree"],
                        [[b, t, r["metric"], _f(r["fp32"]), _f(r["value"]), _f(100 * r["drift_rel"], ".2f", "%"),
                          _f(100 * r["resolution_rel"], ".2f", "%"), _f(100 * r["gate_rel"], ".2f", "%"),
                          _f(100 * r["decisions_agree"] if "decisions_agree" in r else None, ".1f", "%")]
                         for b, res in q.items() for t, r in (res.get("tasks") or {}).items()]), ""]
    return parts


def write_report(out: Path, summary: dict) -> Path:
    """summary.json + bench/host/latency.json -> report.md and its PNGs."""
    latency = read_json(out / "bench" / "host" / "latency.json")
    train = summary["train"]
    metric = train["metric"] or "metric"
    name = summary.get("model") or out.name
    parts = [f"# ktedge run `{out.name}`: {name}", ""]
    if latency is not None:
        d, p = latency["device"], latency["protocol"]
        parts += [f"Measured on {d['name']} ({d.get('cpu', '')}, {d.get('cores', '?')} cores, {d.get('os', '')}); "
                  f"{p['threads']} thread(s), {p['warmup']} warm-up runs, median/p90 of {p['iters']} timed runs.", ""]
    if train.get("imported"):
        src = train["imported"]
        parts += [f"Imported by `ktedge import` from {src.get('path') or src.get('factory')} "
                  f"(sha256 {src['sha256'][:12]}...); nothing was trained.", ""]
    elif train.get("compare"):
        parts += ["## Training (held-out validation faces)", "", train_table(train), ""]
    parts += [f"## {name}'s artifacts", "",
              f"Task metric: {metric} on {faces_in_words(out)}; drift is |int8 - fp32| / fp32 against the "
              f"deployable's float program on the same faces; speed-up is over the same format's fp32 artifact.", "",
              artifact_table([a for a in summary["artifacts"] if a["model"] == summary.get("model")], metric), ""]
    own = [a for a in summary["artifacts"] if a["model"] == summary.get("model")]
    if any(a.get("placement") for a in own):
        parts += ["## Where the ops run", "",
                  "Read from each file in its runtime here (ExecuTorch: the .pte's plan; LiteRT: the nodes after "
                  "XNNPACK delegation; onnxruntime: its optimised graph; Ethos-U: the .pte's plan, the input's "
                  "quantize and the outputs' dequantize on the CPU by design). Core ML places ops per device at "
                  "load, on Apple only.", "", placement_table(own), ""]
    if (npu := npu_table(summary["artifacts"])) is not None:
        parts += ["## Ethos-U NPU programs (Vela's estimate; numerics in the TOSA reference model)", "",
                  "ExecuTorch's Arm backend lowered each model's EthosUQuantizer int8 program to TOSA and Vela "
                  "compiled it for the NPU. No Ethos-U (nor Arm's Corstone FVP) is here: the time is Vela's static "
                  "estimate at its system config's clock, not a measurement; the metric is the TOSA graph Vela "
                  "takes, run in tosa-tools' reference model on the same faces as every artifact (Vela's own "
                  "lowering to the command stream runs only on the FVP or a device). "
                  "QNN (Qualcomm), NeuroPilot (MediaTek) and Exynos NPUs need their vendors' SDKs, which are "
                  "downloaded from the vendors and not part of this toolkit.", "", npu, ""]
    if summary.get("ratios"):
        parts += ["## Targets", "", ratio_table(summary["ratios"]), ""]
    if latency is not None:
        plot_latency(latency, out / "report" / "latency.png")
        plot_accuracy_latency(summary, metric, out / "report" / "accuracy_latency.png")
        if any(r.get("role") in ("ensemble", "canonical_alone") for r in latency["results"]):
            parts += ["## The deployed model against its comparison models", "",
                      "The same exporters, fp32; accuracy from the training stage's held-out faces.", "",
                      comparison_table(summary, latency), ""]
        if summary.get("published"):
            parts += ["## Published models deployed beside it, same chain, same runtimes", "",
                      *published_section(out, summary)]
        if (pipelines := pipeline_table(latency)) is not None:
            parts += ["## Detector, alignment and model: one photo end to end", "",
                      "The whole photo (scikit-image's astronaut, 512 px) through the run's detector artifact in "
                      "the model's format (letterboxed, one pass, as an app runs it on a camera frame), the "
                      "eyes-level alignment and the model on each face found, all in one timed call; beside it the "
                      "detector and the model each timed alone on their own inputs in the same bench run.", "",
                      pipelines, ""]
        parts += ["## MediaPipe's own face models, same LiteRT interpreter", "", peers_table(latency), "",
                  "![latency](report/latency.png)", "", "![accuracy vs latency](report/accuracy_latency.png)", ""]
    parts += real_faces_section(out)
    if (ablation := ablation_section(out)) is not None:
        parts += [ablation]
    if summary.get("quantize"):
        parts += quantization_section(summary["quantize"])
    if summary["fuse"].get("max_abs_error") is not None:
        parts += [f"Deployable parity (its program against what it was made from): max abs error "
                  f"{_f(summary['fuse']['max_abs_error'], '.2e')}.", ""]
    parts += ["## Wall time", "", _md_table(["stage", "seconds"], [[k, _f(v, ".1f")] for k, v in summary["wall_s"].items()]),
              ""]
    path = out / "report.md"
    write_text(path, "\n".join(parts))
    return path


def refresh_report(out: Path) -> None:
    """A finished run's summary.json and report.md rebuilt, so a measurement made after the run
    (the KT ablation, the real-face check) shows in both at once."""
    from ktedge.pipeline import build_summary

    if (out / "summary.json").is_file():
        summary = build_summary(out)
        write_json(out / "summary.json", summary)
        write_report(out, summary)


def real_faces_section(out: Path) -> list[str]:
    """The landmark artifacts' points against FaceMesh's on real photos (benchmarks/real_faces.py)."""
    result = read_json(out / "bench" / "real_faces.json")
    if result is None:
        return []
    rows = [[name, str(r["faces"]), _f(r["mean_pct"], ".1f", " %"),
             ", ".join(f"{f['photo']} {f['mean_pct']:.0f} %" for f in r["faces_detail"])]
            for name, r in result["artifacts"].items()]
    return ["## On real faces", "",
            f"Each face found by `ktedge predict`'s detector, aligned by the manifest's rule, and the artifact's "
            f"{result['points']}, against {result['reference']}. Photos: {', '.join(result['photos'])}.", "",
            _md_table(["artifact", "faces", "mean error", "per photo"], rows), ""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="rebuild DIR/report.md from a finished run")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    summary = read_json(args.out / "summary.json")
    if summary is None:
        print(f"{args.out / 'summary.json'}: missing (run `ktedge run --out {args.out}`)", file=sys.stderr)
        return 2
    print(f"-> {write_report(args.out, summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
