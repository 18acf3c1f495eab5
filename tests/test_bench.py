"""Bench, `ktedge run` and the report on a real exported tiny run; the Android flow against a fake
`adb` (the phone is the one thing that cannot be real here); the runner parsers on the tools'
output formats."""
import json
import shutil
import sys
from pathlib import Path

import pytest

from ktedge.benchmarks.android import (AdbError, app_command, find_device, parse_benchmark_model,
                                       parse_executor_runner)
from ktedge.benchmarks.stage import bench_is_current, bench_stage, check_latency
from ktedge.config import load_config
from ktedge.errors import KtedgeError
from ktedge.pipeline import run
from tests.conftest import QUICK, TINY

FIXTURES = Path(__file__).parent / "fixtures" / "android"
WALL = ["train", "fuse", "quantize", "export", "validate", "bench"]
# What `ktedge run` does on the benched run, in order: its own chain, then each published model's
# beside it (the O-Net it imports, the detector already deployed there), one bench.
STAGES = ["train", "fuse", "import mtcnn-onet", "quantize", "export", "validate", "quantize blazeface",
          "export blazeface", "validate blazeface", "quantize mtcnn-onet", "export mtcnn-onet", "validate mtcnn-onet",
          "bench"]


@pytest.fixture(scope="module")
def benched(exported, blazeface_run, tmp_path_factory):
    """A copy of the exported tiny run with the published detector deployed beside it, as `ktedge
    run` deploys blazeface, benchmarked on the host."""
    src, cfg, index, _ = exported
    out = tmp_path_factory.mktemp("benched")
    shutil.copytree(src, out, dirs_exist_ok=True)
    shutil.copytree(blazeface_run[0], out / "published" / "blazeface")
    return out, cfg, index, bench_stage(cfg, out)


def test_host_bench_measures_every_target_and_the_json_holds_its_schema(benched):
    out, _, index, _ = benched
    data = check_latency(json.loads((out / "bench" / "host" / "latency.json").read_text()), "latency.json")
    rows = {r["target"]: r for r in data["results"]}
    for a in index["artifacts"]:
        r = rows[a["name"]]
        if "coreml" in a["name"]:
            assert r["status"] == "skipped" and "Apple only; not measured here" in r["reason"]
            continue
        if a["format"] == "ethosu":  # an NPU program: Vela's estimate, never a time taken here
            vela = json.loads((out / Path(a["path"]).parent / "manifest.json").read_text())["ethosu"]["vela"]
            assert r["status"] == "skipped" and f"Vela's estimate: {vela['inference_ms']:.3f} ms" in r["reason"], r
            continue
        assert r["status"] == "ok", r
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["load_ms"] > 0 and r["first_ms"] > 0 and r["peak_rss_mb"] > 10 and r["size_bytes"] == a["size_bytes"]
    for fmt in ("executorch", "tflite", "onnx"):  # the three-model comparison, in each runtime
        ens, dep, can = (rows[k]["latency_ms"]["median"] for k in
                         (f"ensemble/{fmt}-fp32", f"{fmt}-fp32", f"canonical-alone/{fmt}-fp32"))
        assert ens > 1.5 * dep, (fmt, ens, dep)  # three prior encoders more
        assert can > 0
    assert {r["target"] for r in data["results"] if r["model"] == "mtcnn-onet"} >= {"mtcnn-onet/tflite-int8"}
    assert {r["role"] for r in data["results"]} == {"deploy", "canonical_alone", "ensemble", "published", "peer",
                                                     "pipeline"}
    # Each model behind the run's detector of its format: the astronaut's one face, detector + model
    # more than either alone.
    for model, detector in (("tflite-int8", "tflite-int8"), ("executorch-int8", "executorch-int8"),
                            ("tflite-fp32", "tflite-fp32"), ("mtcnn-onet/tflite-int8", "tflite-int8")):
        p = rows[f"pipeline/{model}"]
        assert p["status"] == "ok" and (p["detector"], p["faces"]) == (f"blazeface/{detector}", 1), p
        assert p["latency_ms"]["median"] > max(rows[model]["latency_ms"]["median"],
                                               rows[p["detector"]]["latency_ms"]["median"])
    for peer in ("mediapipe-face_landmark", "mediapipe-face_detection_short_range"):
        r = rows[peer]
        assert r["status"] == "ok" or (r["status"] == "skipped" and "not installed" in r["reason"])
    assert data["protocol"] == {"warmup": 2, "iters": 20, "threads": 1, "rounds": 4}


def test_a_latency_file_off_its_schema_is_refused_naming_the_field(benched):
    out = benched[0]
    data = json.loads((out / "bench" / "host" / "latency.json").read_text())
    data["results"][0]["status"] = "fast"
    with pytest.raises(KtedgeError, match="results/0/status"):
        check_latency(data, "latency.json")
    data["results"][0].update(status="ok", latency_ms={"median": 1.0})
    with pytest.raises(KtedgeError, match="results/0/latency_ms"):
        check_latency(data, "latency.json")


def test_run_again_skips_every_finished_stage_and_writes_summary_and_report(benched):
    out, cfg, _, _ = benched
    assert bench_is_current(cfg, out)
    summary = run(cfg, out)
    assert summary["skipped"] == STAGES
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["skipped"] == STAGES
    assert set(on_disk) >= {"train", "fuse", "quantize", "artifacts", "ratios", "wall_s"}
    assert set(on_disk["wall_s"]) == set(WALL) and all(v is not None for v in on_disk["wall_s"].values())
    arts = {(a["model"], a["name"]): a for a in on_disk["artifacts"]}  # every model's artifacts, named by model
    assert ("mtcnn-onet", "tflite-int8") in arts and on_disk["published"]["mtcnn-onet"]["passed"]
    tfl = arts["kt-landmarks", "tflite-int8"]
    assert (out / tfl["path"]).is_file() and tfl["validated"] and tfl["passed"] and tfl["latency_ms"]["median"] > 0
    ratios = on_disk["ratios"]
    assert set(ratios["int8_fp32_latency"]) == {"executorch", "tflite", "onnx"}
    assert set(ratios["int8_fp32_size"]) == {"executorch", "tflite", "onnx", "coreml"}
    assert all(0.15 < v < 0.45 for v in ratios["int8_fp32_size"].values())
    assert ratios["ensemble_deploy_latency"] > 1.5
    report = (out / "report.md").read_text()
    assert "| format | precision | size |" in report and "tflite" in report and "![latency]" in report
    assert "## Detector, alignment and model: one photo end to end" in report and "| tflite-int8 | blazeface/tflite-int8 |" in report
    npu = arts["kt-landmarks", "ethosu-int8-u55"]
    assert npu["passed"] and npu["npu_estimate"]["target"] == "ethos-u55-128" and npu["npu_estimate"]["inference_ms"] > 0
    assert "## Ethos-U NPU programs" in report and "| kt-landmarks | ethosu-int8-u55 | ethos-u55-128 (" in report
    for png in ("latency.png", "accuracy_latency.png"):
        assert (out / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_changed_bench_setting_reruns_only_the_bench(benched):
    out, _, _, _ = benched
    cfg = load_config(overrides=[TINY, QUICK, {"bench": {"iters": 10, "rounds": 2}}])
    assert not bench_is_current(cfg, out)
    summary = run(cfg, out)
    assert summary["skipped"] == STAGES[:-1]
    assert json.loads((out / "bench" / "host" / "latency.json").read_text())["protocol"]["iters"] == 10


# --- runner output parsers, on the formats the tools print --------------------------------------

def test_benchmark_model_with_percentiles_and_xnnpack():
    r = parse_benchmark_model((FIXTURES / "benchmark_model_xnnpack_percentiles.txt").read_text())
    assert r["iters"] == 3220  # the timed runs' line, not the warm-up's (count=1571)
    assert r["latency_ms"]["mean"] == pytest.approx(0.305512) and r["latency_ms"]["median"] == pytest.approx(0.301)
    assert r["latency_ms"]["p95"] == pytest.approx(0.338) and r["latency_ms"]["min"] == pytest.approx(0.284)
    assert r["load_ms"] == pytest.approx(7.412) and r["first_ms"] == pytest.approx(1.204)
    assert r["peak_rss_mb"] == pytest.approx(9.87109)  # periodic-monitoring peak preferred over the delta
    assert r["delegate"] == "XNNPACK (completely)"


def test_benchmark_model_from_logcat_with_a_partial_nnapi_delegate():
    r = parse_benchmark_model((FIXTURES / "benchmark_model_nnapi_logcat.txt").read_text())
    assert r["iters"] == 247 and r["latency_ms"]["mean"] == pytest.approx(4.0449)
    assert r["latency_ms"]["median"] is None  # this build prints no percentiles: none invented
    assert r["peak_rss_mb"] == pytest.approx(26.8125) and r["delegate"] == "NNAPI (partially)"


def test_benchmark_model_all_same_runs_and_scientific_notation():
    r = parse_benchmark_model((FIXTURES / "benchmark_model_all_same_sci.txt").read_text())
    assert r["iters"] == 3 and r["latency_ms"]["mean"] == pytest.approx(2100.0) == r["latency_ms"]["median"]
    assert r["load_ms"] == pytest.approx(1302.511) and r["delegate"] == "cpu (no delegate applied)"


def test_benchmark_model_failure_names_its_last_lines():
    with pytest.raises(AdbError, match="Benchmarking failed"):
        parse_benchmark_model((FIXTURES / "benchmark_model_crash.txt").read_text())


def test_executor_runner_gives_the_mean_of_its_runs():
    r = parse_executor_runner((FIXTURES / "executor_runner.txt").read_text())
    assert r["iters"] == 100 and r["latency_ms"]["mean"] == pytest.approx(0.4649375)
    assert r["latency_ms"]["median"] is None
    with pytest.raises(AdbError, match="Model executed successfully"):
        parse_executor_runner("I 00:00:00.000573 executorch:executor_runner.cpp:121] Model file x.pte is loaded.\n")


# --- Android over a fake adb ---------------------------------------------------------------------

SERIAL = "R58N30ABCDE"
PROPS = {"ro.product.manufacturer": "samsung", "ro.product.model": "SM-S911B", "ro.soc.model": "SM8550",
         "ro.build.version.release": "14", "ro.build.version.sdk": "34"}
APP_RESULT = "/sdcard/Android/data/org.ktedge.demo/files/latency.json"


def fake_phone(tmp_path: Path, **device) -> tuple[str, Path]:
    """-> (the adb executable to pass, the phone's state folder)."""
    state = tmp_path / "phone"
    (state / "fs").mkdir(parents=True)
    # The app's result file, written by hand in the format of android_demo's LatencyResult.kt
    # (tests/test_android_core.py holds the Kotlin writer's output to the same structure).
    app_result = json.loads((FIXTURES / "app_latency.json").read_text())
    app_result_pipeline = json.loads((FIXTURES / "app_latency_pipeline.json").read_text())  # given a detector
    (state / "device.json").write_text(json.dumps({
        "serial": SERIAL, "state": "device", "props": PROPS, "runner_path": "/data/local/tmp/benchmark_model",
        "runner_output": str(FIXTURES / "benchmark_model_xnnpack_percentiles.txt"), "app_result": app_result,
        "app_result_pipeline": app_result_pipeline, "app_result_path": APP_RESULT, "vanish_after": None, **device}))
    adb = tmp_path / "adb"
    adb.write_text(f"#!/bin/sh\nFAKE_ADB_STATE='{state}' exec '{sys.executable}' "
                   f"'{Path(__file__).parent / 'fake_adb.py'}' \"$@\"\n")
    adb.chmod(0o755)
    return str(adb), state


def adb_log(state: Path) -> list[list[str]]:
    return [json.loads(line) for line in (state / "log.jsonl").read_text().splitlines()]


def test_adb_flow_pushes_runs_pulls_parses_and_cleans_up(benched, tmp_path):
    out, cfg, index, _ = benched
    adb, state = fake_phone(tmp_path)
    result = bench_stage(cfg, out, device="android", runner="benchmark_model",
                         runner_path="/data/local/tmp/benchmark_model", delegate="xnnpack", adb=adb)
    written = check_latency(json.loads((out / "bench" / f"android-{SERIAL}" / "latency.json").read_text()), "x")
    assert written["device"] == {"kind": "android", "name": "samsung SM-S911B", "serial": SERIAL,
                                 "model": "SM-S911B", "soc": "SM8550", "os": "Android 14 (SDK 34)"}
    tflite = [a["name"] for a in index["artifacts"] if a["format"] == "tflite"]
    assert [r["target"] for r in result["results"]] == tflite  # benchmark_model runs .tflite only
    for r in result["results"]:
        assert r["status"] == "ok" and r["latency_ms"]["median"] == pytest.approx(0.301)
        assert r["delegate"] == "XNNPACK (completely)" and r["runtime"] == "benchmark_model"
    log = adb_log(state)
    for name in tflite:
        remote = f"/data/local/tmp/ktedge/{name}"
        push = log.index(["-s", SERIAL, "push", str(out / "export" / name / "model.tflite"), f"{remote}/model.tflite"])
        runs = [i for i, c in enumerate(log) if c[2:3] == ["shell"] and c[3].startswith("/data/local/tmp/benchmark_model")
                and f"--graph={remote}/model.tflite" in c[3]]
        clean = log.index(["-s", SERIAL, "shell", f"rm -rf {remote}"])
        assert push < runs[0] < clean
        assert "--use_xnnpack=true" in log[runs[0]][3] and "--num_runs=20" in log[runs[0]][3]
    assert not any((state / "fs" / "data/local/tmp/ktedge").iterdir())  # nothing left on the phone


def test_a_device_that_vanishes_mid_run_gives_error_rows_and_the_run_finishes(benched, tmp_path):
    out, cfg, _, _ = benched
    adb, state = fake_phone(tmp_path, vanish_after=12)  # devices + 5 getprops ... then one target, then gone
    result = bench_stage(cfg, out, device=f"android:{SERIAL}", runner="benchmark_model",
                         runner_path="/data/local/tmp/benchmark_model", adb=adb)
    statuses = [r["status"] for r in result["results"]]
    assert statuses[0] == "ok" and statuses[-1] == "error" and set(statuses) == {"ok", "error"}
    errors = [r for r in result["results"] if r["status"] == "error"]
    assert all(SERIAL in r["reason"] and "gone" in r["reason"] for r in errors)


def test_a_missing_runner_is_an_error_row_naming_it(benched, tmp_path):
    out, cfg, _, _ = benched
    adb, _ = fake_phone(tmp_path)
    result = bench_stage(cfg, out, device="android", runner="benchmark_model",
                         runner_path="/data/local/tmp/nowhere/benchmark_model", adb=adb)
    assert {r["status"] for r in result["results"]} == {"error"}
    assert "inaccessible or not found" in result["results"][0]["reason"]


def test_the_app_benchmark_mode_is_started_with_its_intent_and_its_json_pulled(benched, tmp_path):
    out, cfg, _, _ = benched
    adb, state = fake_phone(tmp_path)
    result = bench_stage(cfg, out, device="android", runner="app", delegate="gpu", adb=adb)
    rows = {r["target"]: r for r in result["results"]}
    assert rows["tflite-int8"]["latency_ms"]["median"] == 0.81 and rows["executorch-int8"]["status"] == "ok"
    starts = [c[3] for c in adb_log(state) if c[2:3] == ["shell"] and c[3].startswith("am start")]
    remote = "/sdcard/Android/data/org.ktedge.demo/files/bench/tflite-int8"
    assert starts[0].startswith("am start -W -n org.ktedge.demo/.BenchmarkActivity --es model ")
    pushes = [c[3:] for c in adb_log(state) if c[2:3] == ["push"]]
    assert [str(out / "export" / "tflite-int8" / "manifest.json"), f"{remote}/manifest.json"] in pushes  # the app reads it
    assert rows["tflite-int8"]["delegate"] == "GPU" and rows["tflite-int8"]["peak_rss_mb"] == 95.0
    # The model and the run's detector pushed side by side: the pipeline's row and the detector's, apart.
    assert app_command(f"{remote}/model.tflite", "gpu", 2, 20, 1) not in starts
    detector = f"{remote}/detector/model.tflite"
    assert app_command(f"{remote}/model.tflite", "gpu", 2, 20, 1, detector) in starts
    assert [str(out / "published/blazeface/export/tflite-int8/manifest.json"), f"{remote}/detector/manifest.json"] in pushes
    pipeline = rows["pipeline/tflite-int8"]
    assert (pipeline["role"], pipeline["detector"], pipeline["faces"]) == ("pipeline", "blazeface/tflite-int8", 1)
    assert pipeline["latency_ms"]["median"] == 7.9 and rows["blazeface/tflite-int8"]["latency_ms"]["median"] == 1.42
    assert not any((state / "fs" / "sdcard/Android/data/org.ktedge.demo/files/bench").iterdir())  # cleaned up


@pytest.mark.parametrize("state,message", [("unauthorized", "accept the USB debugging prompt"),
                                           ("offline", "is offline")])
def test_an_unusable_device_is_a_clear_error(tmp_path, state, message):
    adb, _ = fake_phone(tmp_path, state=state)
    with pytest.raises(AdbError, match=message):
        find_device(None, adb)


def test_no_device_or_a_wrong_serial_is_a_clear_error(tmp_path):
    adb, _ = fake_phone(tmp_path, vanish_after=0)
    with pytest.raises(AdbError, match="no Android device connected"):
        find_device(None, adb)
    adb, _ = fake_phone(tmp_path / "other")
    with pytest.raises(AdbError, match="XYZ is not connected"):
        find_device("XYZ", adb)
    with pytest.raises(AdbError, match="adb not found"):
        find_device(None, str(tmp_path / "no-adb-here"))
