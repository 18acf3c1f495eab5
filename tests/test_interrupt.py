"""SIGKILL `ktedge run` inside each stage, at points chosen by what is on disk (mid-write included),
then run it again: it must finish without clean-up and match an uninterrupted run."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.conftest import TINY

# Small on purpose: one int8 backend, one format, no published model; the stages are the real ones.
SMALL = {**TINY, "quantize": {"backends": ["onnx"], "calibration_faces": 32, "eval_faces": 60, "max_float_layers": 2},
         "export": {"formats": ["onnx"]}, "bench": {"warmup": 1, "iters": 5, "rounds": 1}, "published": []}
# (what must exist under the run directory, then kill): inside fuse (one graph written, not its
# record), quantize (its program written, not its record), export (mid-artifact and between),
# validate, bench
KILL_POINTS = ["fuse/deploy.pt2", "quantize/onnx/calibration.json", "export/.*.tmp", "export/onnx-fp32",
               "validate/runtimes.log", "bench/host/face.npy"]


def ktedge_run(out: Path, config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ktedge", "run", "--out", str(out), "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_when(proc: subprocess.Popen, out: Path, pattern: str, timeout: float = 240) -> bool:
    """SIGKILL the run's process group as soon as `pattern` exists; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(out.glob(pattern)):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"{pattern} never appeared")


def comparable(summary: dict) -> dict:
    """What an interrupted run must reproduce exactly: the artifacts' hashes and metrics."""
    return {"fuse": summary["fuse"], "quantize": summary["quantize"],
            "artifacts": [{k: a[k] for k in ("name", "sha256", "size_bytes", "metric", "drift_rel", "passed")}
                          for a in summary["artifacts"]]}


def test_sigkill_inside_every_stage_then_run_finishes_like_an_uninterrupted_run(tiny_run, tmp_path):
    src, _ = tiny_run
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    for d in (ref, cut):
        shutil.copytree(src / "train", d / "train")

    uninterrupted = ktedge_run(ref, config)  # beside the interrupted ones: two cores
    killed = []
    for pattern in KILL_POINTS:
        if kill_when(ktedge_run(cut, config), cut, pattern):
            killed.append(pattern)
    assert len(killed) >= 5, killed  # the kills really landed inside the stages
    p = ktedge_run(cut, config)
    log = p.communicate(timeout=600)[0]
    assert p.returncode == 0, log
    assert not list(cut.rglob(".*.tmp"))  # what the kills left half-written is gone
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.stdout.read()

    want, got = (json.loads((d / "summary.json").read_text()) for d in (ref, cut))
    assert comparable(got) == comparable(want)
    bench = json.loads((cut / "bench" / "host" / "latency.json").read_text())
    assert {r["target"] for r in bench["results"] if r["status"] == "ok"} >= {"onnx-fp32", "onnx-int8"}
