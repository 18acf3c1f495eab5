"""The run's report: DIR/report.md with its plots in DIR/report/ (latency bars, accuracy vs
latency), rendered from summary.json and the stages' JSON only, so it can be rebuilt at any time
(`python -m ktedge.benchmarks.report --out DIR`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ktedge.atomic import atomic_path, read_json, write_text
from ktedge.benchmarks.ratios import FLOAT_NAME, table_rows

MODEL_LABELS = {"ensemble": "ensemble (all priors + adapter)", "kt-deploy": "KT deploy {t_k, t_c}",
                "canonical-alone": "canonical encoder alone"}


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


def artifact_table(summary: dict) -> str:
    """format x precision x size x metric x drift x latency x speed-up over the format's fp32."""
    arts = [a for a in summary["artifacts"] if a.get("exported", True)]
    fp32 = {a["format"]: (a["latency_ms"] or {}).get("median") for a in arts if a["name"] == FLOAT_NAME.get(a["format"])}
    metric = summary["train"]["metric"] or "metric"
    rows = []
    for a in arts:
        lat = a["latency_ms"] or {}
        base = fp32.get(a["format"])
        speedup = f"{base / lat['median']:.2f}x" if base and lat.get("median") else "-"
        where = a["bench_reason"] if a.get("bench_status") == "skipped" else ""
        rows.append([a["format"], a["precision"] + ("" if a["variant"] in ("xnnpack", "mlprogram", "float-io", "qdq", "float")
                                                    else f" ({a['variant']})"),
                     f"{a['size_bytes'] / 1e6:.2f} MB", _f(a["metric"]), _f(None if a["drift_rel"] is None
                                                                            else 100 * a["drift_rel"], ".2f", "%"),
                     _gate(a), _f(lat.get("median")), _f(lat.get("p90")),
                     speedup if not where else "not run here"])
    return _md_table(["format", "precision", "size", metric, "drift", "gate", "median ms", "p90 ms",
                      "speed-up vs fp32"], rows)


def comparison_table(summary: dict, latency: dict) -> str:
    """Ensemble vs KT deploy vs canonical alone: held-out accuracy and fp32 latency per runtime."""
    med = {r["target"]: r for r in latency["results"] if r["status"] == "ok"}
    metric = summary["train"]["metric"]
    keys = {"ensemble": "ensemble", "kt-deploy": "kt_deploy", "canonical-alone": "canonical_alone"}
    rows = []
    for model, label in MODEL_LABELS.items():
        acc = (summary["train"].get(keys[model]) or {}).get(metric)
        cells = [label, _f(acc)]
        for fmt in ("executorch", "tflite", "onnx"):
            target = FLOAT_NAME[fmt] if model == "kt-deploy" else f"{model}/{FLOAT_NAME[fmt]}"
            r = med.get(target)
            cells.append(_f(r["latency_ms"]["median"]) if r else "-")
        size = next((r.get("size_bytes") for r in latency["results"] if r["target"] ==
                     (FLOAT_NAME["tflite"] if model == "kt-deploy" else f"{model}/{FLOAT_NAME['tflite']}")), None)
        cells.append(_f(None if size is None else size / 1e6, ".2f", " MB"))
        rows.append(cells)
    return _md_table(["model", f"held-out {metric}", "ExecuTorch ms", "LiteRT ms", "onnxruntime ms",
                      "size (tflite fp32)"], rows)


def ratio_table(ratios: dict) -> str:
    rows = [[name.replace("_", " "), where, _f(v), target, {True: "met", False: "**missed**", None: "-"}[met]]
            for name, where, v, target, met in table_rows(ratios)]
    return _md_table(["ratio", "where", "value", "target", ""], rows)


def other_rows_table(latency: dict) -> str:
    """The published MTCNN O-Net and MediaPipe's models, same interpreter, same threads."""
    rows = []
    for r in latency["results"]:
        if r["model"] in ("mtcnn-onet",) or r["model"].startswith("mediapipe"):
            lat = r.get("latency_ms") or {}
            rows.append([r["target"], r["format"], r["precision"], _f((r.get("size_bytes") or 0) / 1e6, ".2f", " MB"),
                         _f(lat.get("median")), _f(lat.get("p90")),
                         r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason', '')}"])
    return _md_table(["target", "format", "precision", "size", "median ms", "p90 ms", "status"], rows)


def plot_latency(latency: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in latency["results"] if r["status"] == "ok"]
    colors = {"kt-deploy": "#1f77b4", "ensemble": "#d62728", "canonical-alone": "#2ca02c", "mtcnn-onet": "#9467bd"}
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1.2))
    y = range(len(rows))
    med = [r["latency_ms"]["median"] for r in rows]
    p90 = [r["latency_ms"]["p90"] - r["latency_ms"]["median"] for r in rows]
    ax.barh(list(y), med, xerr=[[0] * len(rows), p90], color=[colors.get(r["model"], "#7f7f7f") for r in rows])
    ax.set_yticks(list(y), [r["target"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"latency ms (median, whisker to p90; {latency['protocol']['threads']} thread(s))")
    ax.set_title(f"latency on {latency['device']['name']}")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in [*colors.values(), "#7f7f7f"]]
    ax.legend(handles, [*colors, "MediaPipe peers"], fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def plot_accuracy_latency(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [a for a in summary["artifacts"] if a.get("validated") and a.get("latency_ms")]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    markers = {"executorch": "o", "tflite": "s", "onnx": "^", "coreml": "D"}
    for a in pts:
        ax.scatter(a["latency_ms"]["median"], a["metric"], marker=markers[a["format"]], s=50)
        ax.annotate(a["name"], (a["latency_ms"]["median"], a["metric"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    ax.set_xlabel("median latency ms (host)")
    ax.set_ylabel(f"held-out {summary['train']['metric']} (lower is better)")
    ax.set_title("accuracy vs latency of the exported KT deploy model")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def system_table(train: dict) -> str:
    """A system of the family (model.system other than kt): its held-out metrics beside its
    baseline of the same size (and, for multi-source transfer, its teachers)."""
    names = list(train["system_model"])
    rows = [["system", train["system_model"]], ["baseline of the same size", train["baseline"]]]
    if "teachers" in train:
        rows.append(["teachers (a head on their embeddings)", train["teachers"]])
    return _md_table(["model", *names], [[label, *(_f(m[n]) for n in names)] for label, m in rows])


def faces_in_words(train: dict) -> str:
    data = train.get("data") or {"format": "synthetic"}
    return "synthetic labelled faces" if data["format"] == "synthetic" else data["held_out"]


def write_report(out: Path, summary: dict) -> Path:
    """summary.json + bench/host/latency.json -> report.md and its PNGs."""
    latency = read_json(out / "bench" / "host" / "latency.json")
    train = summary["train"]
    metric = train["metric"]
    parts = [f"# ktedge run `{out.name}`", ""]
    if latency is not None:
        d, p = latency["device"], latency["protocol"]
        parts += [f"Measured on {d['name']} ({d.get('cpu', '')}, {d.get('cores', '?')} cores, {d.get('os', '')}); "
                  f"{p['threads']} thread(s), {p['warmup']} warm-up runs, median/p90 of {p['iters']} timed runs.", ""]
    faces = faces_in_words(train)
    if "system_model" in train:
        parts += [f"## {train['system']} (held-out, {faces})", "", system_table(train), ""]
    parts += ["## Exported artifacts", "",
              f"Task metric: held-out {metric} on {faces}; drift is |int8 - fp32| / fp32 against the "
              f"fp32 torch model on the same faces; speed-up is over the same format's fp32 artifact.", "",
              artifact_table(summary), ""]
    if summary.get("ratios"):
        parts += ["## Targets", "", ratio_table(summary["ratios"]), ""]
    if latency is not None:
        plot_latency(latency, out / "report" / "latency.png")
        plot_accuracy_latency(summary, out / "report" / "accuracy_latency.png")
        parts += ["## Ensemble vs KT deploy vs canonical encoder alone", "",
                  "The same exporters, fp32; accuracy from the training stage's held-out faces.", "",
                  comparison_table(summary, latency), "",
                  "## Published models, same runtimes", "",
                  "MTCNN O-Net (facenet-pytorch weights) through the same chain; MediaPipe's own face models "
                  "in the same LiteRT interpreter.", "", other_rows_table(latency), "",
                  "![latency](report/latency.png)", "", "![accuracy vs latency](report/accuracy_latency.png)", ""]
    q = summary.get("quantize") or {}
    if q:
        parts += ["## Quantization", "", _md_table(
            ["backend", "worst task drift", "gates", "float layers"],
            [[b, _f(100 * r["drift_rel"] if r.get("drift_rel") is not None else None, ".2f", "%"),
              "pass" if r.get("passed") else "**FAIL**", ", ".join(r.get("float_layers") or []) or "-"]
             for b, r in q.items()]), ""]
        # Every task's gate: the configured drift, widened to what the held-out faces resolve.
        parts += [_md_table(["backend", "task", "metric", "fp32", "int8", "drift", "resolution", "gate",
                             "decisions agree"],
                            [[b, t, r["metric"], _f(r["fp32"]), _f(r["value"]), _f(100 * r["drift_rel"], ".2f", "%"),
                              _f(100 * r["resolution_rel"], ".2f", "%"), _f(100 * r["gate_rel"], ".2f", "%"),
                              _f(100 * r["decisions_agree"] if "decisions_agree" in r else None, ".1f", "%")]
                             for b, res in q.items() for t, r in (res.get("tasks") or {}).items()]), ""]
    parts += [f"Fuse parity (deploy graph vs training graph): max abs error {_f(summary['fuse']['max_abs_error'], '.2e')}.",
              "", "## Wall time", "",
              _md_table(["stage", "seconds"], [[k, _f(v, ".1f")] for k, v in summary["wall_s"].items()]), ""]
    path = out / "report.md"
    write_text(path, "\n".join(parts))
    return path


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
