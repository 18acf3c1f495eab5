"""The `ktedge` command: one sub-command per stage, each reading/writing the run directory --out."""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from ktedge.errors import KtedgeError
from ktedge.progress import console, quiet_library_logs


def _config(args: argparse.Namespace):
    """--config, else the run directory's resolved config.yaml (a stage run alone), else the default."""
    from ktedge.config import load_config, parse_override

    path = args.config
    if path is None and args.command != "train" and (Path(args.out) / "config.yaml").is_file():
        path = Path(args.out) / "config.yaml"
    return load_config(path, [parse_override(s) for s in args.set])


def _runs(args: argparse.Namespace):
    """The run and the published models' runs beside it, each with its config."""
    from ktedge.pipeline import run_configs

    return run_configs(_config(args), Path(args.out))


def _name(run: Path) -> str:
    from ktedge.deployable import load_deployable

    return load_deployable(run / "fuse").name


def cmd_train(args: argparse.Namespace) -> None:
    from ktedge.model.train import train

    cfg = _config(args)
    metrics = train(cfg, args.out)
    _print_train(metrics, Path(args.out))


def cmd_fuse(args: argparse.Namespace) -> None:
    from ktedge.model.fuse import fuse_stage

    parity = fuse_stage(args.out)
    _print_parity(parity, Path(args.out))


def cmd_import(args: argparse.Namespace) -> None:
    from ktedge.config import parse_override
    from ktedge.model.importer import import_model

    record = import_model(args.out, args.spec, model=args.model, factory=args.factory, weights=args.weights,
                          overrides=[parse_override(s) for s in args.set])
    console.print(f"import: {', '.join(record['folded'])}; parity on {record['faces']} of the run's faces: max abs "
                  f"error {record['max_abs_error']:.2e} (gate {record['tolerance']:.0e}) -> "
                  f"{Path(args.out) / 'fuse' / 'deployable.json'}")
    console.print(f"next: `ktedge run --out {args.out}` (quantize, export, validate, bench; nothing is trained)")


def _print_parity(parity: dict, out: Path) -> None:
    p = parity["params"]
    removed = (f"{p['prior_encoders_removed']:,} prior-encoder parameters removed" if "prior_encoders_removed" in p
               else f"of {p.get('trained_model', p['deploy_graph']):,} trained")
    console.print(f"fuse: deploy graph {p['deploy_graph']:,} parameters ({removed}); parity on {parity['faces']} "
                  f"held-out faces: max abs error {parity['max_abs_error']:.2e} (gate {parity['tolerance']:.0e})"
                  f" -> {out / 'fuse' / 'deployable.json'}")


def cmd_quantize(args: argparse.Namespace) -> None:
    from ktedge.quantize.stage import quantize_stage

    for cfg, run in _runs(args):
        _print_quantize(quantize_stage(cfg, run), _name(run))


def _print_quantize(results: dict[str, dict], model: str) -> None:
    from rich.table import Table

    from ktedge.quantize.gate import NOISE_CAP, bound_text

    table = Table(title=f"{model}: int8 post-training quantization (task gates on labelled held-out faces, widened "
                        f"to what the faces resolve, at most {NOISE_CAP:g}x)")
    for col in ("backend", "metric", "fp32", "int8", "drift", "gate", "float layers", "status"):
        table.add_column(col, justify="right" if col in ("fp32", "int8", "drift", "gate") else "left")
    for b, r in results.items():
        status = "[green]pass" if r["passed"] else "[red]FAIL"
        for i, (task, t) in enumerate(r["tasks"].items()):  # a multi-task graph: a row per task, gated together
            label = t["metric"] if len(r["tasks"]) == 1 else f"{task} {t['metric']}"
            table.add_row(b if i == 0 else "", label, f"{t['fp32']:.3f}", f"{t['value']:.3f}",
                          *((f"{100 * t['drift_rel']:.2f}%", f"{100 * t['gate_rel']:.1f}%") if t["drift_rel"] is not None
                            else ("-", bound_text(t))),
                          (", ".join(r["float_layers"]) or "-") if i == 0 else "", status if i == 0 else "")
    console.print(table)


def cmd_export(args: argparse.Namespace) -> None:
    from ktedge.export.stage import export_stage

    for cfg, run in _runs(args):
        _print_export(export_stage(cfg, run), _name(run))


def _print_export(index: dict, model: str) -> None:
    from rich.table import Table

    table = Table(title=f"{model}: exported artifacts")
    for col in ("artifact", "size", "status"):
        table.add_column(col, justify="right" if col == "size" else "left")
    rows = [(a["name"], a) for a in index["artifacts"]]
    rows += [(f"{c}/{a['name']}", a) for c, arts in index.get("comparisons", {}).items() for a in arts]
    for name, a in rows:
        table.add_row(name, f"{a['size_bytes'] / 1e6:.2f} MB" if a["ok"] else "-",
                      "[green]ok" if a["ok"] else f"[red]{a['error']}")
    console.print(table)


def cmd_validate(args: argparse.Namespace) -> None:
    from ktedge.export.validate import validate_stage

    for cfg, run in _runs(args):
        _print_validate(validate_stage(cfg, run))


def _print_validate(result: dict) -> None:
    from rich.table import Table

    from ktedge.quantize.gate import gate_text

    tasks = result["tasks_fp32_torch"]
    head = ", ".join(f"{t} {r['metric']} {r['value']:.3f}" for t, r in tasks.items())
    table = Table(title=f"{result['model']}: artifacts in their runtimes on {result['faces']} labelled held-out faces "
                        f"(float program: {head}); value (drift of its gate)")
    table.add_column("artifact")
    for t, ref in tasks.items():
        table.add_column(f"{t} {ref['metric']}", justify="right")
    table.add_column("agreement with float", justify="right")
    table.add_column("status")
    for key, r in result["artifacts"].items():
        if not r["validated"]:
            table.add_row(key, *["-"] * len(tasks), "-", _not_run_status(r))
            continue
        agree = [f"{o} {g['nme_vs_fp32']:.2f}% NME" for o, g in r["outputs"].items() if "nme_vs_fp32" in g]
        table.add_row(key, *(gate_text(r["tasks"][t]) for t in tasks),
                      ", ".join(agree) or f"cosine {r['cosine_min']:.4f}",
                      "[green]pass" if r["passed"] else "[red]FAIL")
    console.print(table)


def cmd_bench(args: argparse.Namespace) -> None:
    from ktedge.benchmarks.stage import bench_stage

    result = bench_stage(_config(args), args.out, args.device, args.runner, args.runner_path, args.delegate, args.adb)
    _print_bench(result)


def _print_bench(result: dict) -> None:
    from rich.table import Table

    p = result["protocol"]
    table = Table(title=f"latency on {result['device']['name']} ({p['threads']} thread(s), {p['warmup']} warm-up, "
                        f"{p['iters']} timed runs)")
    for col in ("target", "model", "size", "median ms", "p90 ms", "model RSS", "status"):
        table.add_column(col, justify="left" if col in ("target", "model", "status") else "right")
    notes: list[str] = []  # reasons once each, as numbered notes under the table
    for r in result["results"]:
        lat = r.get("latency_ms") or {}
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        status = {"ok": "[green]ok", "skipped": "[yellow]skipped", "error": "[red]error"}[r["status"]]
        if r["status"] != "ok":
            if r["reason"] not in notes:
                notes.append(r["reason"])
            status += f" [{notes.index(r['reason']) + 1}]"
        rss = r.get("model_rss_mb")
        table.add_row(r["target"], r["model"], f"{r['size_bytes'] / 1e6:.2f} MB" if r.get("size_bytes") else "-",
                      fmt(lat.get("median")), fmt(lat.get("p90")), "-" if rss is None else f"{rss:.1f} MB", status)
    console.print(table)
    for i, note in enumerate(notes, 1):
        console.print(f"  [{i}] {note}", highlight=False)


def _not_run_status(row: dict) -> str:
    if row.get("passed") is None:
        return f"[yellow]not run here ({row.get('not_run', 'Apple only')})"
    return "[green]structure ok[/green], accuracy not run here" if row["passed"] else "[red]structure FAIL"


def cmd_predict(args: argparse.Namespace) -> None:
    from ktedge.atomic import write_json
    from ktedge.export.manifest import load_manifest
    from ktedge.export.predict import draw_overlay, predict
    from ktedge.model.align import POINT_KINDS

    if args.no_detect and args.detector:
        raise KtedgeError("--detector and --no-detect: give one (--no-detect runs no detector)")
    result = predict(args.artifact, args.image, args.threads, detect=not args.no_detect, min_face=args.min_face,
                     detector=args.detector)
    manifest = load_manifest(result["artifact"], verify_hash=False)
    where = "the centred square" if args.no_detect else "face(s) found"
    det = result["detector"]
    fallback = "the PyTorch BlazeFace (the run has no detector artifact in this format)"
    by = f" by {det['artifact'] or fallback}" if det else ""
    console.print(f"{result['model']} ({result['format']} {result['precision']}) on {args.image}: "
                  f"{len(result['faces'])} {where}{by}")
    if not result["faces"] and result["detector"]:
        console.print(f"  no face found (faces down to {result['detector']['min_face_px']} px wide were looked for)")
    elif not result["faces"]:
        console.print("  no face found (the detector on the whole photo, letterboxed to its input)")
    for i, face in enumerate(result["faces"]):
        x0, y0, x1, y1 = face["box"]
        score = "" if face["score"] is None else f", score {face['score']:.2f}"
        console.print(f"face {i + 1}: box ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}){score}, "
                      f"{face['latency_ms']:.2f} ms", highlight=False)
        for spec in manifest["outputs"]:
            answer = face["answers"][spec["name"]]
            if spec["kind"] in POINT_KINDS:
                xy = [f"({x:.1f}, {y:.1f})" for x, y in answer]
                answer = f"{len(xy)} points: {', '.join(xy[:3])}{', ...' if len(xy) > 3 else ''}"
            elif spec["kind"] == "embedding":
                answer = f"{len(answer)}-d unit embedding"
            elif spec["kind"] == "anchor_detections":  # a detector's own face: its keypoints
                answer = "keypoints " + ", ".join(f"({x:.1f}, {y:.1f})" for x, y in answer[0]["keypoints"])
            console.print(f"  {spec['name']}: {answer}", highlight=False)
    if args.json:
        write_json(args.json, result)
        console.print(f"-> {args.json}")
    if args.overlay:
        draw_overlay(args.image, result, manifest, args.overlay)
        console.print(f"-> {args.overlay}")


def cmd_run(args: argparse.Namespace) -> None:
    from ktedge.atomic import read_json
    from ktedge.pipeline import run

    out = Path(args.out)
    cfg = _config(args)
    summary = run(cfg, out)
    console.rule("summary")
    metrics = read_json(out / "train" / "metrics.json")
    if metrics is not None:
        _print_train(metrics, out)
    for c, r in _runs(args):
        quantized = {b: read_json(r / "quantize" / b / "sensitivity.json") for b in c.quantize.backends}
        _print_quantize({b: q for b, q in quantized.items() if q}, _name(r))
        _print_validate(read_json(r / "validate" / "accuracy.json"))
    _print_bench(read_json(out / "bench" / "host" / "latency.json"))
    if summary["ratios"]:
        _print_ratios(summary["ratios"])
    console.print(f"summary -> {out / 'summary.json'}, report -> {out / 'report.md'} "
                  f"(pipeline {summary['pipeline_wall_s']:.0f} s)")


def _print_ratios(ratios: dict) -> None:
    from rich.table import Table

    from ktedge.benchmarks.ratios import table_rows

    table = Table(title="targets (one bench run, this machine)")
    for col in ("ratio", "where", "value", "target", ""):
        table.add_column(col, justify="right" if col == "value" else "left")
    for name, where, value, target, met in table_rows(ratios):
        table.add_row(name, where, "-" if value is None else f"{value:.3f}", target,
                      {True: "[green]met", False: "[red]missed", None: "-"}[met])
    console.print(table)


def _print_train(metrics: dict, out: Path) -> None:
    from rich.table import Table

    rows = metrics["compare"]
    names = list(rows[0]["metrics"])
    table = Table(title=f"held-out ({metrics['held_out_faces']} faces)")
    table.add_column("model")
    for n in names:
        table.add_column(n, justify="right")
    for row in rows:
        table.add_row(row["label"], *(f"{row['metrics'][n]:.3f}" for n in names))
    console.print(table)
    params = metrics.get("params", {})
    if "teachers" in params:
        console.print(f"student {params['student']:,} parameters deployed vs teachers {params['teachers']:,} "
                      f"({params['teachers'] / params['student']:.1f}x)")
    elif "trainable" in params:
        console.print(f"parameters: {params['trainable']:,} trainable of {params['total']:,}; "
                      f"baseline {params.get('baseline', params.get('baseline_trainable')):,}")
    console.print(f"trained in {metrics['wall_s']:.0f} s on {metrics.get('device', 'cpu')} -> "
                  f"{out / 'train' / 'checkpoint.pt'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ktedge", description="Ship face models to phones: your own, or ktedge's "
                                                                "knowledge-token models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    def stage(name: str, help_: str, fn, config: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--out", default="runs/default", help="run directory (default: runs/default)")
        if config:
            p.add_argument("--config", help="YAML config merged over the embedded default")
            p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="override one config value, e.g. --set train.adapter_epochs=10")
        p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        p.set_defaults(fn=fn)
        return p

    stage("train", "train priors, the canonical encoder and the KT-Adapter", cmd_train, config=True)
    stage("fuse", "checkpoint -> the run's deployable (priors dropped, t_k/BatchNorm/input norm folded)", cmd_fuse)
    imp = sub.add_parser("import", help="your own model (a torch.export .pt2, or a factory + weights) and a spec -> "
                                        "the run's deployable; then `ktedge run --out DIR` trains nothing")
    imp.add_argument("model", nargs="?", help="a torch.export .pt2 (omit with --factory)")
    imp.add_argument("--spec", required=True, help="YAML: name, input (size, colour, mean, std), outputs (name, "
                                                   "kind, task)")
    imp.add_argument("--out", required=True, help="the run directory to create")
    imp.add_argument("--factory", help="pkg.module:function returning the nn.Module (instead of MODEL)")
    imp.add_argument("--weights", help="its state dict (loaded with weights_only=True)")
    imp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="run config, e.g. --set data.format=csv --set data.train_dir=faces/")
    imp.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    imp.set_defaults(fn=cmd_import)
    stage("quantize", "deployable -> int8 program per backend, with a task-accuracy gate", cmd_quantize, config=True)
    stage("export", "deployable + int8 programs -> ExecuTorch, TFLite, Core ML, ONNX, Ethos-U artifacts + manifests",
          cmd_export, config=True)
    stage("validate", "every artifact in its own runtime on labelled held-out faces", cmd_validate, config=True)
    bench = stage("bench", "latency of every artifact (host runtimes, or an Android phone over adb)", cmd_bench,
                  config=True)
    bench.add_argument("--device", default="host", help="host (default), android or android:SERIAL")
    bench.add_argument("--runner", default="benchmark_model", choices=["benchmark_model", "executor_runner", "app"],
                       help="on Android: LiteRT benchmark_model, ExecuTorch executor_runner, or the android_demo app")
    bench.add_argument("--runner-path", help="where the runner binary is on the phone")
    bench.add_argument("--delegate", default="xnnpack", choices=["xnnpack", "cpu", "gpu", "nnapi", "npu"],
                       help="on Android: the delegate to ask for (what ran is read back and recorded)")
    bench.add_argument("--adb", default="adb", help="the adb executable")
    stage("run", "the whole pipeline (finished stages are skipped; an imported run trains nothing)", cmd_run,
          config=True)
    pred = sub.add_parser("predict", help="run one exported artifact on every face of a photo, print the answers")
    pred.add_argument("artifact", help="an artifact folder (or its model file), e.g. runs/default/export/tflite-int8")
    pred.add_argument("image", help="a PNG or JPEG, RGB: a portrait, a group, a camera frame")
    pred.add_argument("--json", help="write the full result ({faces: [{box, score, answers}]}, photo pixels) here")
    pred.add_argument("--overlay", help="write the photo with every face's crop and points drawn on it (PNG)")
    pred.add_argument("--no-detect", action="store_true",
                      help="no face detection: the model on the photo's centred square (a photo cropped to the face)")
    pred.add_argument("--detector", help="a detector artifact to find the faces with (default: the run's own "
                                         "published/blazeface artifact of the same name or format)")
    pred.add_argument("--min-face", type=int, help="smallest face width looked for, in pixels (default 48)")
    pred.add_argument("--threads", type=int, default=1)
    pred.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    pred.set_defaults(fn=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_library_logs(verbose=args.debug)
    try:
        args.fn(args)
    except KtedgeError as e:
        if args.debug:
            traceback.print_exc()
        print(f"ktedge: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permissions, a vanished folder: name the file, no traceback
        if args.debug:
            traceback.print_exc()
        print(f"ktedge: error: {e.filename or ''}: {e.strerror or e} (check free space and permissions, then re-run)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ktedge: interrupted", file=sys.stderr)
        return 130
    return 0
