"""`ktedge bench`: latency of every artifact under one protocol -> bench/<device>/latency.json.

Host: one measurement process per runtime (ExecuTorch runtime, LiteRT interpreter, onnxruntime;
Core ML is skipped off Apple with the reason), its targets timed interleaved (see harness).
Comparisons in the same run: the KT deploy graph against the full ensemble (all priors + adapter)
and the canonical encoder alone, exported by the same exporters; MediaPipe's face models as peers.
Android (`--device android[:SERIAL]`): the same artifacts pushed and run over adb."""
from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ktedge.atomic import read_json, sha256_file, sha256_json, write_bytes, write_json
from ktedge.config import Config
from ktedge.errors import KtedgeError
from ktedge.export.manifest import load_manifest
from ktedge.export.registry import exporters
from ktedge.export.source import ExportSource, batch_one, replace_prelu, task_output
from ktedge.model.data.faces import generate_faces, split_seed
from ktedge.progress import console, progress
from ktedge.schema import check, load_schema

SCHEMA_ID = "ktedge.latency/1"
VARIANT_EXPORTERS = ("executorch-fp32", "tflite-fp32", "onnx-fp32")  # what the three-model comparison runs in
VARIANT_RECIPE = 4  # bump when what the comparison models are changes


def check_latency(data: dict, where: str) -> dict:
    return check(data, load_schema("ktedge.benchmarks", "latency.schema.json"), where, "latency results")


class ModeModel(nn.Module):
    """One of KTModel's comparison models as a plain module (raw RGB 0..255 in)."""

    def __init__(self, model: nn.Module, mode: str):
        super().__init__()
        self.model, self.mode = model, mode

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.run(image, self.mode)


def export_variants(cfg: Config, out: Path, bar) -> dict[str, Path]:
    """The ensemble (as trained, eval mode) and the canonical encoder alone (folded like the deploy
    graph, without the adapter), exported by the deploy graph's exporters; reused while the
    checkpoint and this recipe are unchanged. -> {"<variant>/<exporter>": artifact dir}."""
    from ktedge.export.stage import export_one
    from ktedge.model.checkpoint import load_checkpoint

    if cfg.model.system != "kt":
        return {}  # the ensemble and canonical-alone comparison belongs to the KT model
    ckpt = out / "train" / "checkpoint.pt"
    digest = sha256_file(ckpt)
    root = out / "bench" / "variants"
    stamp = read_json(root / "stamp.json") or {}
    registry = {e.name: e for exps in exporters().values() for e in exps}
    names = [e for e in VARIANT_EXPORTERS if e.split("-")[0] in cfg.export.formats]  # the runtimes exported to
    dirs = {f"{v}/{e}": root / v / e for v in ("ensemble", "canonical-alone") for e in names}
    current = stamp.get("checkpoint_sha256") == digest and stamp.get("recipe") == VARIANT_RECIPE
    if current and all((d / "manifest.json").is_file() for d in dirs.values()):
        return dirs
    model, _ = load_checkpoint(ckpt)
    model = replace_prelu(model.eval())  # the O-Net prior's PReLU (see export.source)
    from ktedge.model.fuse import fuse_canonical_alone

    faces = generate_faces(4, split_seed(cfg.seed, "calibration"), cfg.data.image_size).tensors()["image"]
    variants = {"ensemble": ModeModel(model, "ensemble"),
                "canonical-alone": fuse_canonical_alone(model)}
    task = bar.add_task("export comparison models", total=len(dirs), info="")
    for variant, module in variants.items():
        with torch.no_grad():
            shape = list(module.eval()(faces[:1]).shape)
        src = ExportSource(name=variant, program=batch_one(module, faces[:1].clone()), quantized={}, float_layers={},
                           calibration=faces.numpy(), outputs=[task_output(cfg.model.canonical.task, shape)],
                           crop="as the deploy model's", checkpoint_sha256=digest, observer=cfg.quantize.observer,
                           program_sha256={"fp32": digest})
        for name in names:
            bar.update(task, info=f"{variant} {name}")
            export_one(src, registry[name], root / variant)
            bar.update(task, advance=1)
    write_json(root / "stamp.json", {"checkpoint_sha256": digest, "recipe": VARIANT_RECIPE})
    return dirs


def _run_group(targets: list[str], image: Path, protocol: list[str], timeout_s: float) -> dict[str, dict]:
    """Measure `targets` (artifact:DIR / peer:NAME) in one fresh process -> {target: result}.
    A target the process never reported (crash, timeout) gets an error naming why."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ktedge.benchmarks.harness", "--image", str(image), *protocol, *targets]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        stdout, why = p.stdout, f"measurement process failed (exit {p.returncode})"
        tail = (p.stderr.strip().splitlines() or [""])[-1][:200]
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        why, tail = f"timed out after {timeout_s:.0f} s", ""
    results = {}
    for line in stdout.splitlines():
        if line.startswith("KTEDGE_RESULT "):
            r = json.loads(line.removeprefix("KTEDGE_RESULT "))
            results[r.pop("target")] = r
    for t in targets:
        results.setdefault(t, {"error": f"{why}{': ' + tail if tail else ''}"})
    return results


MEASURED = ("load_ms", "first_ms", "latency_ms", "peak_rss_mb", "model_rss_mb", "threads")


def _row(target: str, model: str, manifest: dict, measured: dict | None, reason: str | None = None) -> dict:
    row = {"target": target, "model": model, **{k: manifest[k] for k in ("format", "precision", "runtime")},
           "delegate": manifest["variant"], "size_bytes": manifest["size_bytes"]}
    if measured is None:
        return {**row, "status": "skipped", "reason": reason}
    if "error" in measured:
        return {**row, "status": "error", "reason": measured["error"]}
    return {**row, "status": "ok", **{k: measured.get(k) for k in MEASURED}, **({"reason": reason} if reason else {})}


def deploy_label(cfg: Config) -> str:
    """The `model` of the deploy artifacts' rows: the KT model's, or another system's."""
    return "kt-deploy" if cfg.model.system == "kt" else f"{cfg.model.system}-deploy"


def _targets(cfg: Config, out: Path, bar) -> list[tuple[str, str, Path]]:
    """(target name, model, artifact dir) for every artifact this bench covers."""
    index = read_json(out / "export" / "index.json")
    if index is None:
        raise KtedgeError(f"{out / 'export' / 'index.json'}: nothing to benchmark (run `ktedge export` first)")
    targets = [(a["name"], deploy_label(cfg), Path(a["path"]).parent) for a in index["artifacts"] if a["ok"]]
    onet = read_json(out / "onet" / "export" / "index.json") or {"artifacts": []}
    targets += [(f"onet/{a['name']}", "mtcnn-onet", Path(a["path"]).parent) for a in onet["artifacts"] if a["ok"]]
    for key, d in export_variants(cfg, out, bar).items():
        targets.append((key, key.split("/")[0], d))
    return targets


def bench_face(cfg: Config, out: Path) -> Path:
    """The one face crop every host target is fed (a face, not noise: some delegates take
    data-dependent paths)."""
    face = generate_faces(1, split_seed(cfg.seed, "test"), cfg.data.image_size).tensors()["image"].numpy()
    buf = io.BytesIO()
    np.save(buf, face.astype(np.float32))
    path = out / "bench" / "host" / "face.npy"
    write_bytes(path, buf.getvalue())
    return path


def bench_host(cfg: Config, out: Path, threads: int, warmup: int, iters: int, rounds: int) -> dict:
    from ktedge.benchmarks.peers import PEERS, peer_path

    protocol = ["--threads", str(threads), "--warmup", str(warmup), "--iters", str(iters), "--rounds", str(rounds)]
    image = bench_face(cfg, out)
    with progress() as bar:
        targets = _targets(cfg, out, bar)
        rows: dict[str, dict] = {}
        groups: dict[str, list[tuple[str, str, dict]]] = {}  # runtime -> (target, model, manifest)
        specs: dict[str, str] = {}
        for target, model, d in targets:
            manifest = load_manifest(d)
            if manifest["format"] == "coreml" or manifest["variant"] == "coreml":
                rows[target] = _row(target, model, manifest, None, "Core ML runs only on macOS/iOS; not measured here")
            else:
                groups.setdefault(manifest["format"], []).append((target, model, manifest))
                specs[target] = f"artifact:{d}"
        for name, (member, _, what) in PEERS.items():
            path = peer_path(name)
            manifest = {"format": "tflite", "precision": "fp32", "runtime": "ai_edge_litert interpreter",
                        "variant": "xnnpack", "size_bytes": path.stat().st_size if path else 0}
            if path is None:
                rows[name] = _row(name, name, manifest, None,
                                  "MediaPipe peer models not installed (`make install` extracts them)")
            else:
                groups.setdefault("tflite", []).append((name, name, {**manifest, "note": what}))
                specs[name] = f"peer:{name}"
        task = bar.add_task("bench host", total=sum(len(g) for g in groups.values()), info="")
        for runtime, group in groups.items():
            bar.update(task, info=f"{runtime} ({len(group)} targets)")
            measured = _run_group([specs[t] for t, _, _ in group], image, protocol, 120 + 30 * len(group))
            for target, model, manifest in group:
                rows[target] = _row(target, model, manifest, measured[specs[target]], manifest.get("note"))
            bar.update(task, advance=len(group))
    return {"schema": SCHEMA_ID,
            "device": {"kind": "host", "name": platform.node() or "host", "cpu": platform.processor() or platform.machine(),
                       "os": f"{platform.system()} {platform.release()}", "cores": os.cpu_count() or 1},
            "protocol": {"warmup": warmup, "iters": iters, "threads": threads, "rounds": rounds},
            "results": [rows[t] for t, _, _ in targets] + [rows[n] for n in PEERS if n in rows]}


def bench_android(cfg: Config, out: Path, serial: str | None, runner: str, runner_path: str | None, delegate: str,
                  adb: str, threads: int, warmup: int, iters: int) -> dict:
    from ktedge.benchmarks.android import AdbError, DeviceGone, find_device, run_on_device

    if runner in ("benchmark_model", "executor_runner") and not runner_path:
        raise KtedgeError(f"--runner {runner} needs --runner-path: where the binary is on the phone "
                          f"(e.g. /data/local/tmp/{runner}, pushed there once)")
    dev = find_device(serial, adb)
    device = dev.info()
    wanted = {"benchmark_model": ("tflite",), "executor_runner": ("executorch",), "app": ("tflite", "executorch")}[runner]
    rows, gone = [], None
    index = read_json(out / "export" / "index.json") or {"artifacts": []}
    targets = [Path(a["path"]) for a in index["artifacts"] if a["ok"]]
    with progress() as bar:
        task = bar.add_task(f"bench {device['name']}", total=len(targets), info="")
        for path in targets:
            manifest = load_manifest(path.parent)
            name = path.parent.name
            bar.update(task, info=name)
            if manifest["format"] not in wanted or manifest["variant"] == "coreml":
                pass  # this runner does not run this format
            elif gone is not None:
                rows.append(_row(name, deploy_label(cfg), manifest, {"error": gone}))
            else:
                try:
                    m = run_on_device(dev, path, runner, runner_path, delegate, warmup, iters, threads)
                    rows.append({**_row(name, deploy_label(cfg), manifest, {**m, "threads": threads}),
                                 "runtime": runner, "delegate": m["delegate"]})
                except DeviceGone as e:
                    gone = str(e)
                    rows.append(_row(name, deploy_label(cfg), manifest, {"error": gone}))
                except AdbError as e:
                    rows.append(_row(name, deploy_label(cfg), manifest, {"error": str(e)}))
            bar.update(task, advance=1)
    return {"schema": SCHEMA_ID, "device": device, "protocol": {"warmup": warmup, "iters": iters, "threads": threads},
            "results": rows}


def bench_inputs(cfg: Config, out: Path) -> str:
    index = read_json(out / "export" / "index.json") or {}
    return sha256_json({"artifacts": [a.get("sha256") for a in index.get("artifacts", [])],
                        "bench": cfg.to_dict()["bench"], "variants": VARIANT_RECIPE})


def bench_is_current(cfg: Config, out: Path) -> bool:
    record = read_json(out / "bench" / "host" / "latency.json")
    return record is not None and record.get("inputs_sha256") == bench_inputs(cfg, out)


def bench_stage(cfg: Config, out: str | Path, device: str = "host", runner: str = "benchmark_model",
                runner_path: str | None = None, delegate: str = "xnnpack", adb: str = "adb") -> dict:
    out = Path(out)
    t0 = time.perf_counter()
    b = cfg.bench
    if device == "host":
        result = bench_host(cfg, out, b.threads, b.warmup, b.iters, b.rounds)
    elif device == "android" or device.startswith("android:"):
        serial = device.split(":", 1)[1] if ":" in device else None
        result = bench_android(cfg, out, serial, runner, runner_path, delegate, adb, b.threads, b.warmup, b.iters)
        device = f"android-{result['device']['serial']}"
    else:
        raise KtedgeError(f"--device '{device}': expected host, android or android:SERIAL")
    check_latency(result, f"bench/{device}/latency.json")
    errors = [r for r in result["results"] if r["status"] == "error"]
    for r in errors:
        console.print(f"[red]bench {r['target']}: {r['reason']}[/red]")
    write_json(out / "bench" / device / "latency.json",
               {**result, "inputs_sha256": bench_inputs(cfg, out), "wall_s": round(time.perf_counter() - t0, 2)})
    return result
