"""`ktedge bench`: latency of every artifact under one protocol -> bench/<device>/latency.json.

Host: one measurement process per runtime (ExecuTorch runtime, LiteRT interpreter, onnxruntime;
an artifact its format cannot run here, e.g. Core ML off Apple, is skipped with the reason), its
targets timed interleaved (see harness). Measured in the same run: the run's model, its comparison
models (the KT model's ensemble and canonical encoder alone), the published models deployed
beside it and MediaPipe's face models as peers, all as the export stage wrote them: bench never
exports. Android (`--device android[:SERIAL]`): the same artifacts pushed and run over adb."""
from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ktedge.atomic import read_json, sha256_json, write_bytes, write_json
from ktedge.config import Config
from ktedge.deployable import load_deployable, published_runs
from ktedge.errors import KtedgeError
from ktedge.export.manifest import artifact_dir, load_manifest
from ktedge.export.registry import exporter_of, formats
from ktedge.export.runtimes import cannot_run
from ktedge.model.data.datasets import split_faces
from ktedge.progress import console, progress
from ktedge.schema import check, load_schema

SCHEMA_ID = "ktedge.latency/1"


def check_latency(data: dict, where: str) -> dict:
    return check(data, load_schema("ktedge.benchmarks", "latency.schema.json"), where, "latency results")


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


def _row(target: str, model: str, role: str, manifest: dict, measured: dict | None, reason: str | None = None) -> dict:
    row = {"target": target, "model": model, "role": role, **{k: manifest[k] for k in ("format", "precision", "runtime")},
           "delegate": manifest["variant"], "size_bytes": manifest["size_bytes"]}
    if measured is None:
        return {**row, "status": "skipped", "reason": reason}
    if "error" in measured:
        return {**row, "status": "error", "reason": measured["error"]}
    return {**row, "status": "ok", **{k: measured.get(k) for k in MEASURED}, **({"reason": reason} if reason else {})}


def run_targets(out: Path) -> list[tuple[str, str, str, Path]]:
    """(target name, model, role, artifact dir) of every artifact of the run: its model's, its
    comparison models' (`<comparison>/<artifact>`) and its published models' (`<model>/<artifact>`)."""
    index = read_json(out / "export" / "index.json")
    if index is None:
        raise KtedgeError(f"{out / 'export' / 'index.json'}: nothing to benchmark (run `ktedge export` first)")
    deployable = load_deployable(out / "fuse")
    targets = [(a["name"], deployable.name, "deploy", artifact_dir(out, a)) for a in index["artifacts"] if a["ok"]]
    for folder, rows in index.get("comparisons", {}).items():
        comparison = load_deployable(out / "fuse" / "comparisons" / folder)
        targets += [(f"{folder}/{a['name']}", comparison.name, comparison.role, artifact_dir(out, a))
                    for a in rows if a["ok"]]
    for run in published_runs(out):
        published = read_json(run / "export" / "index.json") or {"artifacts": []}
        name = load_deployable(run / "fuse").name
        targets += [(f"{name}/{a['name']}", name, "published", artifact_dir(run, a))
                    for a in published["artifacts"] if a["ok"]]
    return targets


def bench_face(cfg: Config, out: Path) -> Path:
    """The one face crop every host target is fed, one of the run's held-out faces (a face, not
    noise: some delegates take data-dependent paths); resized to each artifact's crop size."""
    face = split_faces(cfg, "test", n=1).tensors()["image"].numpy()
    buf = io.BytesIO()
    np.save(buf, face.astype(np.float32))
    path = out / "bench" / "host" / "face.npy"
    write_bytes(path, buf.getvalue())
    return path


def bench_photo(out: Path) -> Path:
    """The whole photo pipeline targets take: scikit-image's astronaut (512 px, one real face)."""
    from skimage import data

    buf = io.BytesIO()
    np.save(buf, data.astronaut())
    path = out / "bench" / "host" / "photo.npy"
    write_bytes(path, buf.getvalue())
    return path


class Pipeline(NamedTuple):
    """A model artifact behind the run's detector artifact of its format, timed as one call."""
    target: str        # pipeline/<model_target>
    model: str         # the deployable's name
    model_target: str
    model_dir: Path
    detector: str      # the detector artifact's own target
    detector_dir: Path


def pipeline_targets(targets: list[tuple[str, str, str, Path]]) -> list[Pipeline]:
    """Every model artifact that takes an aligned face and has the run's detector artifact beside
    it (export/predict.py run_detector)."""
    from ktedge.export.predict import is_detector, run_detector

    by_dir = {d: t for t, _, _, d in targets}
    pipelines = []
    for target, model, role, d in targets:
        manifest = load_manifest(d)
        if role not in ("deploy", "published") or is_detector(manifest) or "alignment" not in manifest["preprocessing"]:
            continue
        detector = run_detector(d)
        if detector is not None and detector in by_dir:
            pipelines.append(Pipeline(f"pipeline/{target}", model, target, d, by_dir[detector], detector))
    return pipelines


def bench_host(cfg: Config, out: Path, threads: int, warmup: int, iters: int, rounds: int) -> dict:
    from ktedge.assets import PEERS, asset_path

    protocol = ["--threads", str(threads), "--warmup", str(warmup), "--iters", str(iters), "--rounds", str(rounds),
                "--photo", str(bench_photo(out))]
    image = bench_face(cfg, out)
    targets = run_targets(out)
    with progress() as bar:
        rows: dict[str, dict] = {}
        groups: dict[str, list[tuple[str, str, str, dict]]] = {}  # runtime -> (target, model, role, manifest)
        specs: dict[str, str] = {}
        for target, model, role, d in targets:
            manifest = load_manifest(d)
            why = cannot_run(manifest)
            if why is not None:
                rows[target] = _row(target, model, role, manifest, None, f"{manifest['runtime']}: {why}; not measured here")
            elif (estimate := formats()[manifest["format"]].estimate) is not None:
                e = estimate(manifest)
                rows[target] = _row(target, model, role, manifest, None,
                                    f"an {e['target']} program, not timed here (what runs here: {manifest['runtime']}); "
                                    f"{e['by']}'s estimate: {e['inference_ms']:.3f} ms at {e['clock_mhz']:.0f} MHz "
                                    f"({e['system_config']})")
            else:
                groups.setdefault(manifest["format"], []).append((target, model, role, manifest))
                specs[target] = f"artifact:{d}"
        for name, (member, _, what) in PEERS.items():
            path = asset_path(name)
            manifest = {"format": "tflite", "precision": "fp32", "runtime": "ai_edge_litert interpreter",
                        "variant": "xnnpack", "size_bytes": path.stat().st_size if path else 0}
            if path is None:
                rows[name] = _row(name, name, "peer", manifest, None,
                                  "MediaPipe peer models not installed (`make install` extracts them)")
            else:
                groups.setdefault("tflite", []).append((name, name, "peer", {**manifest, "note": what}))
                specs[name] = f"peer:{name}"
        pipelines = [p for p in pipeline_targets(targets) if p.detector in specs and p.model_target in specs]
        for p in pipelines:  # last in their group: they import torch
            manifest = load_manifest(p.model_dir)
            groups[manifest["format"]].append((p.target, p.model, "pipeline", manifest))
            specs[p.target] = f"pipeline:{p.detector_dir}|{p.model_dir}"
        detector_of = {p.target: p.detector for p in pipelines}
        task = bar.add_task("bench host", total=sum(len(g) for g in groups.values()), info="")
        for runtime, group in groups.items():
            bar.update(task, info=f"{runtime} ({len(group)} targets)")
            measured = _run_group([specs[t] for t, _, _, _ in group], image, protocol, 120 + 30 * len(group))
            for target, model, role, manifest in group:
                rows[target] = _row(target, model, role, manifest, measured[specs[target]], manifest.get("note"))
                if role == "pipeline":
                    rows[target] |= {"detector": detector_of[target],
                                     **({"faces": measured[specs[target]]["faces"]} if rows[target]["status"] == "ok" else {})}
            bar.update(task, advance=len(group))
    return {"schema": SCHEMA_ID,
            "device": {"kind": "host", "name": platform.node() or "host", "cpu": platform.processor() or platform.machine(),
                       "os": f"{platform.system()} {platform.release()}", "cores": os.cpu_count() or 1},
            "protocol": {"warmup": warmup, "iters": iters, "threads": threads, "rounds": rounds},
            "results": [rows[t] for t, _, _, _ in targets] + [rows[p.target] for p in pipelines]
                       + [rows[n] for n in PEERS if n in rows]}


def bench_android(cfg: Config, out: Path, serial: str | None, runner: str, runner_path: str | None, delegate: str,
                  adb: str, threads: int, warmup: int, iters: int) -> dict:
    from ktedge.benchmarks.android import RUNNER_FORMATS, AdbError, DeviceGone, find_device, run_on_device

    if runner in ("benchmark_model", "executor_runner") and not runner_path:
        raise KtedgeError(f"--runner {runner} needs --runner-path: where the binary is on the phone "
                          f"(e.g. /data/local/tmp/{runner}, pushed there once)")
    dev = find_device(serial, adb)
    device = dev.info()
    rows, gone = [], None
    everything = run_targets(out)
    targets = [t for t in everything if t[2] == "deploy"]
    # The app runner also times each model behind the run's detector (the demo screen's frame path).
    detectors = {p.model_target: p for p in pipeline_targets(everything)} if runner == "app" else {}
    with progress() as bar:
        task = bar.add_task(f"bench {device['name']}", total=len(targets), info="")
        for name, model, role, folder in targets:
            manifest = load_manifest(folder)
            bar.update(task, info=name)
            if manifest["format"] not in RUNNER_FORMATS[runner] or exporter_of(manifest).apple_only:
                pass  # this runner does not run this format, nor a phone an Apple-only artifact
            elif gone is not None:
                rows.append(_row(name, model, role, manifest, {"error": gone}))
            else:
                pipeline = detectors.get(name)
                try:
                    m = run_on_device(dev, folder / manifest["file"], runner, runner_path, delegate, warmup, iters,
                                      threads, detector=pipeline.detector_dir if pipeline else None)
                    rows.append({**_row(name, model, role, manifest, {**m, "threads": threads}),
                                 "runtime": runner, "delegate": m["delegate"]})
                    if pipeline:
                        det = load_manifest(pipeline.detector_dir)
                        if pipeline.detector not in {r["target"] for r in rows}:
                            rows.append({**_row(pipeline.detector, det["model"], "published", det,
                                                {**m["detector"], "threads": threads}),
                                         "runtime": runner, "delegate": m["detector"]["delegate"]})
                        rows.append({**_row(pipeline.target, model, "pipeline", manifest,
                                            {**m["pipeline"], "threads": threads}),
                                     "runtime": runner, "delegate": m["pipeline"]["delegate"],
                                     "detector": pipeline.detector, "faces": m["pipeline"]["faces"]})
                except DeviceGone as e:
                    gone = str(e)
                    rows.append(_row(name, model, role, manifest, {"error": gone}))
                except AdbError as e:
                    rows.append(_row(name, model, role, manifest, {"error": str(e)}))
            bar.update(task, advance=1)
    return {"schema": SCHEMA_ID, "device": device, "protocol": {"warmup": warmup, "iters": iters, "threads": threads},
            "results": rows}


def bench_inputs(cfg: Config, out: Path) -> str:
    """What the bench measured: every artifact of the run (by hash) and the protocol."""
    indexes = [read_json(out / "export" / "index.json") or {}] + [read_json(r / "export" / "index.json") or {}
                                                                 for r in published_runs(out)]
    hashes = [a.get("sha256") for index in indexes
              for rows in [index.get("artifacts", []), *index.get("comparisons", {}).values()] for a in rows]
    return sha256_json({"artifacts": hashes, "bench": cfg.to_dict()["bench"]})


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
