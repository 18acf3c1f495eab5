"""The latency protocol every host target follows: load, first inference, warm-up runs, N timed
runs, median / p90 / p99, peak memory.

`python -m ktedge.benchmarks.harness --image FACE.npy [--photo PHOTO.npy] artifact:DIR peer:NAME
pipeline:DETECTOR_DIR|MODEL_DIR ...` loads the targets one after another in this fresh process,
then times them interleaved (rounds that visit every target in turn), and prints one
`KTEDGE_RESULT {json}` line per target. The bench stage starts one process per runtime: the
runtime's import is paid once, never inside a timed load, the process holds no torch unless its
runtime needs it, and the int8/fp32, deploy/canonical and ensemble/deploy ratios compare targets
timed side by side. Memory per target: the process's peak
RSS while that target loaded and warmed up (the peak is reset between targets) and how far that
peak rose above the RSS before loading, i.e. the memory the model itself cost."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ktedge.errors import KtedgeError


def summarize(samples_ms: list[float]) -> dict:
    a = np.asarray(samples_ms, dtype=np.float64)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max())}


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak (VmHWM) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def prepare(load, image: np.ndarray, warmup: int) -> tuple[Callable, dict]:
    """`load()` -> a callable taking `image`. Times loading and the first call, runs the warm-up,
    and records the memory this target cost. -> (run, figures)."""
    reset_peak_rss()
    rss_before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    run = load()
    load_ms = 1e3 * (time.perf_counter() - t0)
    t0 = time.perf_counter()
    run(image)
    first_ms = 1e3 * (time.perf_counter() - t0)
    for _ in range(warmup):
        run(image)
    peak = _status_mb("VmHWM")
    return lambda: run(image), {"load_ms": load_ms, "first_ms": first_ms, "peak_rss_mb": peak,
                                "model_rss_mb": None if peak is None or rss_before is None
                                else max(0.0, peak - rss_before)}


def time_interleaved(runs: dict[str, Callable], iters: int, rounds: int) -> dict[str, list[float]]:
    """`iters` timed calls per target, spread over `rounds` rounds that visit every target in turn,
    so a slow spell of a shared machine lands on all targets alike and their ratios stay fair."""
    samples: dict[str, list[float]] = {k: [] for k in runs}
    per_round = [iters // rounds + (1 if r < iters % rounds else 0) for r in range(rounds)]
    for n in per_round:
        for key, run in runs.items():
            for _ in range(n):
                t0 = time.perf_counter()
                run()
                samples[key].append(1e3 * (time.perf_counter() - t0))
    return samples


def resize(image_nchw: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a (1, 3, H, W) float image (PIL, so no torch in this process)."""
    from PIL import Image

    if image_nchw.shape[2:] == (h, w):
        return image_nchw
    hwc = image_nchw[0].transpose(1, 2, 0).clip(0, 255).astype(np.uint8)
    out = np.asarray(Image.fromarray(hwc).resize((w, h), Image.BILINEAR), dtype=np.float32)
    return np.ascontiguousarray(out.transpose(2, 0, 1)[None])


def import_runtime(artifact_dir: Path) -> dict:
    """Imports the artifact's runtime modules (import time is not load time). -> its manifest."""
    from ktedge.export.manifest import load_manifest
    from ktedge.export.registry import formats

    manifest = load_manifest(artifact_dir)
    for module in formats()[manifest["format"]].runtime_modules:
        importlib.import_module(module)
    return manifest


def artifact_loader(artifact_dir: Path, face: np.ndarray, threads: int) -> tuple[Callable, np.ndarray]:
    """-> (load, the face at the artifact's crop size)."""
    from ktedge.export.registry import formats
    from ktedge.export.runtimes import open_runner

    manifest = import_runtime(artifact_dir)
    if formats()[manifest["format"]].estimate is not None:  # its runtime here is a reference, not the target
        raise KtedgeError(f"{artifact_dir}: {manifest['runtime']}; it is not timed here")
    size = manifest["preprocessing"]["crop_size"]
    return lambda: open_runner(artifact_dir, threads=threads), resize(face, size, size)


def peer_loader(name: str, face: np.ndarray, threads: int) -> tuple[Callable, np.ndarray]:
    """A MediaPipe .tflite in the same LiteRT interpreter, fed the face at its own input size
    (NHWC, 0..1 as MediaPipe's graphs feed it)."""
    from ai_edge_litert.interpreter import Interpreter

    from ktedge.assets import installed

    path = installed(name)
    _, h, w, _ = Interpreter(model_path=str(path)).get_input_details()[0]["shape"]
    image = np.ascontiguousarray(resize(face, int(h), int(w)).transpose(0, 2, 3, 1) / 255.0, dtype=np.float32)

    def load():
        it = Interpreter(model_path=str(path), num_threads=threads)
        it.allocate_tensors()
        index = it.get_input_details()[0]["index"]

        def run(x):
            it.set_tensor(index, x)
            it.invoke()
        return run
    return load, image


def pipeline_loader(what: str, photo: np.ndarray, threads: int) -> tuple[Callable, np.ndarray]:
    """`DETECTOR_DIR|MODEL_DIR`: both artifacts in their runtime, one call = a whole photo through
    the detector, the alignment and the model on each face (export/predict.py pipeline_frame)."""
    from ktedge.export.predict import pipeline_frame
    from ktedge.export.runtimes import open_runner
    from ktedge.model import blazeface  # noqa: F401  (the detector's decoding; import time is not load time)

    detector_dir, model_dir = map(Path, what.split("|"))
    import_runtime(model_dir)

    def load():
        detector, model = open_runner(detector_dir, threads=threads), open_runner(model_dir, threads=threads)
        return lambda p: pipeline_frame(detector, model, p)
    return load, photo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="measure artifacts (artifact:DIR) and peer models (peer:NAME) in "
                                            "their runtimes; one KTEDGE_RESULT JSON line per target")
    p.add_argument("targets", nargs="+")
    p.add_argument("--image", type=Path, required=True, help="a (1, 3, H, W) float32 RGB 0..255 face crop (.npy)")
    p.add_argument("--photo", type=Path, help="a whole (H, W, 3) uint8 RGB photo (.npy): what pipeline targets take")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--rounds", type=int, default=10, help="interleave the timed runs over this many rounds")
    args = p.parse_args(argv)
    face = np.load(args.image)
    runs, figures = {}, {}
    for target in args.targets:  # load, first run, warm-up and memory: one target at a time
        kind, _, what = target.partition(":")
        try:
            if kind == "peer":
                load, image = peer_loader(what, face, args.threads)
            elif kind == "artifact":
                load, image = artifact_loader(Path(what), face, args.threads)
            elif kind == "pipeline" and args.photo is not None:
                load, image = pipeline_loader(what, np.load(args.photo), args.threads)
            else:
                raise KtedgeError(f"target '{target}': expected artifact:DIR, peer:NAME or pipeline:DETECTOR|MODEL "
                                  f"(with --photo)")
            runs[target], figures[target] = prepare(load, image, args.warmup)
            if kind == "pipeline":
                figures[target]["faces"] = len(runs[target]())  # the model ran once per face
        except KtedgeError as e:
            print("KTEDGE_RESULT " + json.dumps({"target": target, "error": str(e)}), flush=True)
    samples = time_interleaved(runs, args.iters, max(1, min(args.rounds, args.iters)))
    for target, times in samples.items():
        result = {"target": target, **figures[target], "latency_ms": summarize(times), "threads": args.threads}
        print("KTEDGE_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
