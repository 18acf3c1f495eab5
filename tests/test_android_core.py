"""The Android app's core module (android_demo/core: Kotlin, no Android imports) compiled and unit
tested on the desktop JVM, then held equal to ktedge's own Python pre/post-processing on the same
photos and manifests, and its benchmark result file read by the harness. The app's activities
need the Android SDK and are not compiled here (its runtime wrappers are:
test_android_app_compiles.py); their intent contract is checked against the harness's adb command."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from ktedge.benchmarks.android import APP_ACTIVITY, APP_PACKAGE, APP_RESULT, app_command
from ktedge.benchmarks.stage import check_latency
from ktedge.export.manifest import load_manifest
from ktedge.export.preprocess import Crop, decode, face_crop, load_image, model_input
from ktedge.export.runtimes import open_runner
from tests.conftest import ONET

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "android_demo"
JARS = Path("/usr/share/java")
FIXTURES = Path(__file__).parent / "fixtures" / "android"


def _toolchain_missing() -> str | None:
    missing = [j for j in ("gson.jar", "junit4.jar", "hamcrest-core.jar", "kotlin-stdlib.jar") if not (JARS / j).is_file()]
    if shutil.which("kotlinc") is None or shutil.which("java") is None:
        missing.append("kotlinc/java")
    return ", ".join(missing) or None


@pytest.fixture(scope="module")
def core(tmp_path_factory) -> tuple[Path, str]:
    """android_demo/core compiled by its own script, its JUnit tests run. -> (build folder, test log)."""
    missing = _toolchain_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"Kotlin toolchain missing in CI ({missing}): `make android-core-deps` should have installed it")
        pytest.skip(f"Kotlin toolchain missing ({missing}): run `make android-core-deps`")
    out = tmp_path_factory.mktemp("kotlin")
    r = subprocess.run(["bash", str(DEMO / "core" / "build_desktop.sh"), str(out)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r.stdout


def kotlin(core, *args: str) -> str:
    out, _ = core
    cp = ":".join([str(out / "core.jar"), str(out / "core-tests.jar"), str(JARS / "gson.jar"),
                   str(JARS / "kotlin-stdlib.jar")])
    r = subprocess.run(["java", "-cp", cp, "org.ktedge.demo.core.ParityTool", *map(str, args)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_the_core_module_compiles_and_its_junit_tests_pass(core):
    _, log = core
    m = re.search(r"OK \((\d+) tests\)", log)
    assert m and int(m.group(1)) >= 15, log[-2000:]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real photos of several shapes: the astronaut (512 px: box filter 8x), her face (160 px:
    box 2x or 3x), a landscape crop (400x300: off-centre crop)."""
    folder = tmp_path_factory.mktemp("photos")
    a = data.astronaut()
    images = {"astronaut": a, "face": a[30:190, 160:320], "landscape": a[0:300, 50:450]}
    paths = {}
    for name, pixels in images.items():
        paths[name] = folder / f"{name}.png"
        Image.fromarray(pixels).save(paths[name])
    return paths


ARTIFACTS = [("export", "tflite-int8-int8io"), ("export", "executorch-fp32"), ("export", "tflite-fp32"),
             (f"{ONET}/export", "tflite-int8-int8io")]


@pytest.mark.parametrize("where, name", ARTIFACTS)
def test_the_app_feeds_the_model_what_ktedge_feeds_it(exported, core, photos, where, name):
    """Same photo + same manifest -> the same input tensor in Kotlin and in Python (int8: at most
    one quantization step apart where a float rounds on the other side of .5)."""
    out, *_ = exported
    folder = out / where / name
    manifest = load_manifest(folder)
    for photo in photos.values():
        result = json.loads(kotlin(core, "input", folder / "manifest.json", photo))
        x, crop = face_crop(load_image(photo), manifest["preprocessing"]["crop_size"])
        expected = model_input(x, manifest).reshape(-1)
        got = np.array(result["input"], dtype=np.float64)
        assert Crop(**result["crop"]) == crop
        assert got.shape == expected.shape
        if manifest["input"]["quantization"] is None:
            np.testing.assert_allclose(got, expected, atol=2e-3)
        else:
            diff = np.abs(got - expected.astype(np.float64))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())


@pytest.mark.parametrize("where, name", [("export", "tflite-fp32"), (f"{ONET}/export", "tflite-int8-int8io")])
def test_the_app_aligns_a_detected_face_as_ktedge_predict_does(exported, core, photos, tmp_path, where, name):
    """A face BlazeFace found in a real photo, turned 20 degrees: the app's eyes-level crop (its
    matrix, the box average, the bilinear warp) gives the input ktedge predict gives: equal value
    for value here; at most one step apart, and rarely, where another CPU's float64 rounds a
    sample on the other side of .5."""
    from skimage import transform

    from ktedge.export.predict import aligned_input, find_faces

    out, *_ = exported
    folder = out / where / name
    manifest = load_manifest(folder)
    rule = manifest["preprocessing"]["alignment"]
    turned = transform.rotate(data.astronaut(), 20, preserve_range=True).round().astype(np.uint8)
    Image.fromarray(turned).save(tmp_path / "turned.png")
    for photo, pixels in ((photos["astronaut"], load_image(photos["astronaut"])), (tmp_path / "turned.png", turned)):
        (face,) = find_faces(pixels, 48)
        eyes = [face.keypoint("right_eye").tolist(), face.keypoint("left_eye").tolist()]
        (tmp_path / "eyes.json").write_text(json.dumps(eyes))
        result = json.loads(kotlin(core, "align", folder / "manifest.json", photo, tmp_path / "eyes.json"))
        x, m = aligned_input(pixels, rule, *map(np.array, eyes))
        np.testing.assert_allclose(np.array(result["to_photo"]).reshape(2, 3), m, rtol=1e-12, atol=1e-9)
        expected = model_input(x, manifest).reshape(-1).astype(np.float64)
        diff = np.abs(np.array(result["input"], dtype=np.float64) - expected)
        step = 1.0 if manifest["input"]["quantization"] else 1.0 / min(manifest["preprocessing"]["std"])
        assert diff.max() <= step + 1e-6 and (diff > 1e-6).mean() < 0.001, (diff.max(), (diff > 1e-6).mean())


@pytest.mark.parametrize("where, name", [("export", "tflite-int8"), (f"{ONET}/export", "tflite-int8-int8io")])
def test_the_app_decodes_runtime_outputs_as_ktedge_does(exported, core, photos, tmp_path, where, name):
    """The artifact's real outputs on a real photo, decoded by Kotlin and by Python: the same
    landmarks (image pixels), box and face probability."""
    out, *_ = exported
    folder = out / where / name
    runner = open_runner(folder)
    manifest = runner.manifest
    x, crop = face_crop(load_image(photos["face"]), manifest["preprocessing"]["crop_size"])
    outputs = runner(x)
    to_photo = crop.to_photo(manifest["preprocessing"]["crop_size"])
    (tmp_path / "to_photo.json").write_text(json.dumps(to_photo.reshape(-1).tolist()))
    raw = []  # what the runtime hands the app: int8 outputs as integers (the app dequantizes them)
    for y, spec in zip(outputs, manifest["outputs"]):
        q = spec["quantization"]
        raw.append((y if q is None else np.round(y / q["scale"]) + q["zero_point"]).reshape(-1).tolist())
    (tmp_path / "outputs.json").write_text(json.dumps(raw))
    got = json.loads(kotlin(core, "decode", folder / "manifest.json", tmp_path / "to_photo.json",
                            tmp_path / "outputs.json"))["answers"]
    want = decode(outputs, manifest, to_photo)
    assert got.keys() == want.keys()
    for key in want:
        if isinstance(want[key], dict):
            assert got[key].keys() == want[key].keys()
            np.testing.assert_allclose(list(got[key].values()), list(want[key].values()), rtol=1e-5)
        else:
            np.testing.assert_allclose(np.array(got[key]), np.array(want[key]), rtol=1e-5, atol=1e-4)
    if "face_prob" in want:
        assert got["face_prob"]["face"] > 0.9  # the real O-Net sees her face through the app's code path


@pytest.mark.parametrize("name", ["executorch-fp32", "executorch-int8", "tflite-int8", "tflite-int8-int8io"])
def test_the_app_loads_what_ktedge_exports_on_the_runtimes_it_pins(exported, core, name):
    """Artifact.load on the real exported file and manifest: its size and sha256 match, and the
    runtime it needs (the exporter's own version, from the manifest's tools) is not newer than the
    one the app is built with."""
    out, *_ = exported
    folder = out / "export" / name
    manifest = load_manifest(folder)
    got = json.loads(kotlin(core, "load", folder / manifest["file"]))
    runtime, tool = ("executorch", "executorch") if manifest["format"] == "executorch" else ("litert", "ai-edge-litert")
    assert got == {"runtime": runtime, "needs": manifest["tools"][tool], "field": f"tools.{tool}"}


def _structure(value):
    if isinstance(value, dict):
        return {k: _structure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_structure(v) for v in value]
    return type(value).__name__ if value is not None else "null"


def test_the_apps_result_file_is_what_the_harness_reads(exported, blazeface_run, core):
    """The Kotlin writer's output passes the harness's schema check, and the hand-written fixtures
    the fake-phone tests pull (without and with a detector) have exactly its structure."""
    out, *_ = exported
    written = json.loads(kotlin(core, "result", out / "export" / "tflite-int8" / "manifest.json"))
    check_latency(written, "LatencyResult.kt output")
    row = written["results"][0]
    assert row["latency_ms"]["median"] == pytest.approx(0.50) and row["latency_ms"]["p90"] == pytest.approx(0.574)
    assert row["model"] == "kt-landmarks" and row["format"] == "tflite" and written["device"]["kind"] == "android"
    fixture = json.loads((FIXTURES / "app_latency.json").read_text())
    check_latency(fixture, "fixture")
    assert _structure(fixture) == _structure(written)
    # Given a detector: its row and the pipeline's, naming it, after the model's own.
    written = json.loads(kotlin(core, "result", out / "export" / "tflite-int8" / "manifest.json",
                                blazeface_run[0] / "export" / "tflite-int8" / "manifest.json"))
    check_latency(written, "LatencyResult.kt output with a detector")
    model, detector, pipeline = written["results"]
    assert (detector["role"], pipeline["role"], pipeline["detector"]) == ("published", "pipeline", detector["target"])
    assert pipeline["model"] == model["model"] and pipeline["faces"] == 1
    fixture = json.loads((FIXTURES / "app_latency_pipeline.json").read_text())
    check_latency(fixture, "fixture")
    assert _structure(fixture) == _structure(written)


def test_benchmark_activity_reads_the_intent_the_harness_sends():
    """The extras, activity, package and result path in the Kotlin sources are the ones
    benchmarks/android.py uses (a rename on either side fails here)."""
    command = app_command("/sdcard/m.tflite", "gpu", 3, 30, 2, "/sdcard/d/model.tflite")
    activity = (DEMO / "app/src/main/kotlin/org/ktedge/demo/BenchmarkActivity.kt").read_text()
    for kind, key in re.findall(r"--e([si]) (\w+) ", command + " "):
        getter = {"s": "getStringExtra", "i": "getIntExtra"}[kind]
        assert re.search(rf'{getter}\("{key}"', activity), f"BenchmarkActivity does not read --e{kind} {key}"
    assert f"-n {APP_PACKAGE}/{APP_ACTIVITY} " in command
    gradle = (DEMO / "app/build.gradle.kts").read_text()
    assert f'applicationId = "{APP_PACKAGE}"' in gradle
    manifest = (DEMO / "app/src/main/AndroidManifest.xml").read_text()
    assert re.search(rf'android:name="\{APP_ACTIVITY}"\s+android:exported="true"', manifest)
    assert APP_RESULT == f"/sdcard/Android/data/{APP_PACKAGE}/files/latency.json"
    assert 'const val RESULT = "latency.json"' in activity and "getExternalFilesDir(null), RESULT" in activity


@pytest.mark.parametrize("name", ["tflite-int8", "executorch-int8"])
def test_the_app_finds_faces_with_the_detector_artifact_as_ktedge_does(blazeface_run, core, tmp_path, name):
    """The int8 BlazeFace artifact on real photos of three shapes (the astronaut, a window of the
    group photo with two faces, the whole group photo, wider than tall): the app's letterboxed
    input is ktedge's, and its decoding of the artifact's real outputs (threshold, weighted NMS,
    photo pixels) gives ktedge's faces."""
    from ktedge.assets import installed
    from ktedge.export.predict import warp_to_input
    from ktedge.model.blazeface import letterbox_matrix

    folder = blazeface_run[0] / "export" / name
    runner = open_runner(folder)
    manifest = runner.manifest
    group = load_image(installed("insightface-t1"))
    photos = {"astronaut": (data.astronaut(), 1), "window": (group[60:490, 700:1130], 2), "group": (group, None)}
    for label, (pixels, faces) in photos.items():
        Image.fromarray(pixels).save(tmp_path / f"{label}.png")
        result = json.loads(kotlin(core, "detect", folder / "manifest.json", tmp_path / f"{label}.png"))
        m = letterbox_matrix(*pixels.shape[:2], size=manifest["preprocessing"]["crop_size"])
        np.testing.assert_allclose(np.array(result["to_photo"]).reshape(2, 3), m, rtol=1e-12)
        x = warp_to_input(pixels, m, manifest["preprocessing"]["crop_size"])
        expected = model_input(x, manifest).reshape(-1).astype(np.float64)
        diff = np.abs(np.array(result["input"]) - expected)  # a sample may round the other way: one step
        assert diff.max() <= 1 / min(manifest["preprocessing"]["std"]) + 1e-6 and (diff > 1e-6).mean() < 0.001
        (outputs,) = runner(x)
        (tmp_path / "m.json").write_text(json.dumps(m.reshape(-1).tolist()))
        (tmp_path / "outputs.json").write_text(json.dumps([outputs.reshape(-1).tolist()]))
        got = json.loads(kotlin(core, "decode", folder / "manifest.json", tmp_path / "m.json",
                                tmp_path / "outputs.json"))["answers"]["detections"]
        want = decode([outputs], manifest, m)["detections"]
        assert len(got) == len(want) and (faces is None or len(want) == faces), (label, len(got), len(want))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g["box"], w["box"], atol=1e-3)
            np.testing.assert_allclose(g["keypoints"], w["keypoints"], atol=1e-3)
            assert g["score"] == pytest.approx(w["score"], abs=1e-6)
