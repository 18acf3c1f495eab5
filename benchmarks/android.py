"""Android phones over adb: find the phone, read what it is, push an artifact, run a standard
runner on it (LiteRT `benchmark_model`, ExecuTorch `executor_runner`) or the android_demo app's
BenchmarkActivity, pull and parse the result, clean up. Every failure becomes an error row that
names the device and what to do; the other targets still report."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ktedge.errors import KtedgeError

REMOTE_DIR = "/data/local/tmp/ktedge"
APP_PACKAGE = "org.ktedge.demo"
APP_ACTIVITY = ".BenchmarkActivity"
APP_FILES = f"/sdcard/Android/data/{APP_PACKAGE}/files"  # the app reads here; apps cannot read /data/local/tmp
APP_RESULT = f"{APP_FILES}/latency.json"
# The artifacts each runner takes.
RUNNER_FORMATS = {"benchmark_model": ("tflite",), "executor_runner": ("executorch",), "app": ("tflite", "executorch")}
DELEGATE_FLAGS = {"xnnpack": ["--use_xnnpack=true"], "cpu": ["--use_xnnpack=false"], "gpu": ["--use_gpu=true"],
                  "nnapi": ["--use_nnapi=true"], "npu": ["--use_nnapi=true", "--nnapi_accelerator_name=npu"]}


class AdbError(KtedgeError):
    pass


class DeviceGone(AdbError):
    """The phone went away mid-run: later targets on it cannot run either."""


@dataclass
class Adb:
    serial: str
    adb: str = "adb"
    timeout_s: float = 120.0

    def run(self, *args: str, timeout: float | None = None) -> str:
        cmd = [self.adb, "-s", self.serial, *args]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or self.timeout_s)
        except FileNotFoundError:
            raise AdbError(f"adb not found ('{self.adb}'): install Android platform-tools or pass --adb PATH") from None
        except subprocess.TimeoutExpired:
            raise AdbError(f"adb {' '.join(args[:2])} on {self.serial} timed out after {timeout or self.timeout_s:.0f} s") from None
        err = (p.stderr or "").strip()
        if p.returncode != 0 or "error:" in err:
            if re.search(r"device .* not found|device offline|no devices", err):
                raise DeviceGone(f"Android device {self.serial} is gone ({err.splitlines()[-1]}); reconnect it and re-run")
            last = ((err or p.stdout).strip().splitlines() or [f"exit {p.returncode}"])[-1]
            raise AdbError(f"adb {' '.join(args)[:120]} on {self.serial} failed (exit {p.returncode}): {last}")
        return p.stdout

    def shell(self, command: str, timeout: float | None = None) -> str:
        return self.run("shell", command, timeout=timeout)

    def getprop(self, name: str) -> str:
        return self.shell(f"getprop {name}").strip()

    def info(self) -> dict:
        soc = self.getprop("ro.soc.model") or self.getprop("ro.board.platform") or self.getprop("ro.hardware")
        return {"kind": "android", "name": f"{self.getprop('ro.product.manufacturer')} {self.getprop('ro.product.model')}".strip(),
                "serial": self.serial, "model": self.getprop("ro.product.model"), "soc": soc,
                "os": f"Android {self.getprop('ro.build.version.release')} (SDK {self.getprop('ro.build.version.sdk')})"}


def list_devices(adb: str = "adb") -> list[tuple[str, str]]:
    """`adb devices` -> [(serial, state)], state e.g. device, unauthorized, offline."""
    try:
        out = subprocess.run([adb, "devices"], capture_output=True, text=True, timeout=30).stdout
    except FileNotFoundError:
        raise AdbError(f"adb not found ('{adb}'): install Android platform-tools or pass --adb PATH") from None
    rows = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            rows.append((parts[0], parts[1]))
    return rows


def find_device(serial: str | None, adb: str = "adb") -> Adb:
    devices = list_devices(adb)
    if serial is not None:
        devices = [d for d in devices if d[0] == serial]
        if not devices:
            raise AdbError(f"Android device {serial} is not connected (`adb devices` does not list it)")
    if not devices:
        raise AdbError("no Android device connected (`adb devices` lists none): plug one in with USB debugging on")
    if len(devices) > 1:
        raise AdbError(f"{len(devices)} Android devices connected: choose one with --device android:SERIAL "
                       f"({', '.join(d[0] for d in devices)})")
    found, state = devices[0]
    if state == "unauthorized":
        raise AdbError(f"Android device {found} is unauthorized: accept the USB debugging prompt on the phone")
    if state != "device":
        raise AdbError(f"Android device {found} is {state}: reconnect it")
    return Adb(found, adb)


# tflite/tools/benchmark stats (xla/tsl/util/stats_calculator.h): "count=N first=F curr=C min= max=
# avg= std=", or "count=N curr=C(all same)" when every run took the same time; builds whose stats
# keep percentiles append " p5= median= p95=". Values are microseconds, avg may be 1.2e+06.
_STAT = re.compile(r"count=(?P<count>\d+)(?: first=(?P<first>\S+))? curr=(?P<curr>[^\s(]+)(?P<same>\(all same\))?"
                   r"(?: min=(?P<min>\S+) max=(?P<max>\S+) avg=(?P<avg>\S+) std=(?P<std>\S+))?"
                   r"(?: p5=(?P<p5>\S+) median=(?P<median>\S+) p95=(?P<p95>\S+))?")
_TIMINGS = re.compile(r"Inference timings in us: Init: (?P<init>[^,\s]+), First inference: (?P<first>[^,\s]+), "
                      r"Warmup \(avg\): (?P<warmup>[^,\s]+), Inference \(avg\): (?P<avg>\S+)")


def parse_benchmark_model(text: str) -> dict:
    """LiteRT/TFLite `benchmark_model` output (plain, `INFO: `-prefixed or from logcat) -> ms.
    The stats line just before "Inference timings" is the timed runs' (the one before it, the
    warm-up's); the memory is the periodic-monitoring peak where printed, else the footprint delta."""
    timings = _TIMINGS.search(text)
    if not timings:
        raise AdbError("benchmark_model output has no 'Inference timings in us' line (did it crash? "
                       "its last lines: " + " | ".join(text.strip().splitlines()[-3:]) + ")")
    stats = [m for m in _STAT.finditer(text, 0, timings.start()) if m.group("avg") or m.group("same")]
    if not stats:
        raise AdbError("benchmark_model output has no run statistics ('count=... curr=...') before its timings")
    s = stats[-1]
    ms = lambda v: None if v is None else float(v) / 1e3  # noqa: E731  (microseconds -> ms)
    same = s.group("same") is not None
    mean = ms(s.group("curr")) if same else ms(s.group("avg"))
    peak = re.search(r"Overall peak memory footprint \(MB\) via periodic monitoring: (\S+)", text)
    delta = re.search(r"Memory footprint delta from the start of the tool \(MB\): init=(\S+) overall=(\S+)", text)
    applied = re.search(r"Explicitly applied (\w+) delegate, and the model graph will be (\w+) executed", text)
    return {"iters": int(s.group("count")), "load_ms": ms(timings.group("init")),
            "first_ms": ms(timings.group("first")),
            "latency_ms": {"median": mean if same else ms(s.group("median")), "p90": None, "p99": None,
                           "p95": mean if same else ms(s.group("p95")), "mean": mean,
                           "min": mean if same else ms(s.group("min")), "max": mean if same else ms(s.group("max"))},
            "peak_rss_mb": float(peak.group(1)) if peak else (float(delta.group(2)) if delta else None),
            "delegate": _delegate(applied, text)}


def _delegate(applied: re.Match | None, text: str) -> str:
    if applied:
        return f"{applied.group(1)} ({applied.group(2)})"
    if "Created TensorFlow Lite XNNPACK delegate for CPU" in text:
        return "XNNPACK (the interpreter's default delegate)"
    return "cpu (no delegate applied)"


def parse_executor_runner(text: str) -> dict:
    """ExecuTorch `executor_runner` output: 'Model executed successfully N time(s) in T ms.' ->
    the mean per run (the runner prints no per-run samples, so no percentiles)."""
    m = re.search(r"Model executed successfully (\d+) time\(s\) in ([0-9.]+) ms", text)
    if not m:
        raise AdbError("executor_runner output has no 'Model executed successfully' line")
    n, total = int(m.group(1)), float(m.group(2))
    return {"iters": n, "load_ms": None, "first_ms": None,
            "latency_ms": {"median": None, "p90": None, "p99": None, "mean": total / n, "min": None, "max": None},
            "peak_rss_mb": None, "delegate": "as lowered in the .pte (XNNPACK)"}


def app_command(remote_model: str, delegate: str, warmup: int, iters: int, threads: int,
                remote_detector: str | None = None) -> str:
    """The intent the android_demo app's BenchmarkActivity reads (see android_demo/README.md)."""
    detector = f" --es detector {shlex.quote(remote_detector)}" if remote_detector else ""
    return (f"am start -W -n {APP_PACKAGE}/{APP_ACTIVITY} --es model {shlex.quote(remote_model)} "
            f"--es delegate {delegate} --ei warmup {warmup} --ei iters {iters} --ei threads {threads}{detector}")


FIGURES = ("load_ms", "first_ms", "latency_ms", "peak_rss_mb", "delegate")


def run_on_device(dev: Adb, artifact: Path, runner: str, runner_path: str | None, delegate: str,
                  warmup: int, iters: int, threads: int, poll_s: float = 1.0, detector: Path | None = None) -> dict:
    """Push `artifact`, run it, parse the result, always clean up. -> parsed figures. The app gets
    the manifest beside the model (it preprocesses from it) in its own files folder; with a
    `detector` artifact (the app runner only) it also times the detector alone and the detector +
    alignment + model pipeline: -> figures["detector"], figures["pipeline"] (with its "faces")."""
    remote = f"{APP_FILES}/bench/{artifact.parent.name}" if runner == "app" else f"{REMOTE_DIR}/{artifact.parent.name}"
    remote_model = f"{remote}/{artifact.name}"
    remote_detector = None
    dev.shell(f"mkdir -p {remote}")
    try:
        dev.run("push", str(artifact), remote_model)
        if runner == "app":
            dev.run("push", str(artifact.parent / "manifest.json"), f"{remote}/manifest.json")
            if detector is not None:  # beside the model, in a folder of its own with its manifest
                from ktedge.export.manifest import load_manifest

                det_file = detector / load_manifest(detector)["file"]
                dev.shell(f"mkdir -p {remote}/detector")
                remote_detector = f"{remote}/detector/{det_file.name}"
                dev.run("push", str(det_file), remote_detector)
                dev.run("push", str(detector / "manifest.json"), f"{remote}/detector/manifest.json")
        if runner == "benchmark_model":
            flags = " ".join(DELEGATE_FLAGS[delegate])
            out = dev.shell(f"{runner_path} --graph={remote_model} --num_threads={threads} --warmup_runs={warmup} "
                            f"--num_runs={iters} {flags}", timeout=600)
            return parse_benchmark_model(out)
        if runner == "executor_runner":
            out = dev.shell(f"{runner_path} --model_path={remote_model} --num_executions={iters}", timeout=600)
            return parse_executor_runner(out)
        dev.shell(f"rm -f {APP_RESULT}")
        dev.shell(app_command(remote_model, delegate, warmup, iters, threads, remote_detector))
        deadline = time.monotonic() + dev.timeout_s
        while "No such file" in dev.shell(f"ls {APP_RESULT} 2>&1"):
            if time.monotonic() > deadline:
                raise AdbError(f"the android_demo app wrote no {APP_RESULT} within {dev.timeout_s:.0f} s "
                               f"(is {APP_PACKAGE} installed? see android_demo/README.md)")
            time.sleep(poll_s)
        with tempfile.TemporaryDirectory() as tmp:
            dev.run("pull", APP_RESULT, f"{tmp}/latency.json")
            result = json.loads(Path(tmp, "latency.json").read_text())
        from ktedge.benchmarks.stage import check_latency

        check_latency(result, f"{dev.serial}:{APP_RESULT}")
        row, *more = result["results"]
        figures = {k: row.get(k) for k in FIGURES} | {"iters": iters}
        if remote_detector is not None:
            roles = {r.get("role"): r for r in more}
            if not {"published", "pipeline"} <= set(roles):
                raise AdbError(f"the android_demo app was given a detector but wrote no detector and pipeline rows "
                               f"(an app older than this ktedge? rebuild it from android_demo/)")
            figures["detector"] = {k: roles["published"].get(k) for k in FIGURES}
            figures["pipeline"] = {k: roles["pipeline"].get(k) for k in (*FIGURES, "faces")}
        return figures
    finally:
        try:
            dev.shell(f"rm -rf {remote}")
        except AdbError:
            pass  # the device went away; nothing left to clean
