"""`ktedge predict` and the manifest-driven image pipeline (export/preprocess.py): resampling
equal to PyTorch's, a real photo through real int8 artifacts, and every bad image named."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

from ktedge.export.preprocess import face_crop, model_input
from tests.conftest import ONET

KTEDGE = [sys.executable, "-m", "ktedge"]


def ktedge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KTEDGE, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("side, size", [(100, 64), (64, 64), (160, 48), (512, 64), (203, 48)])
def test_face_crop_equals_box_filter_then_pytorch_bilinear(side, size):
    rng = np.random.default_rng(side)
    image = rng.integers(0, 256, (side + 7, side, 3), dtype=np.uint8)  # taller than wide: a centred crop
    x, crop = face_crop(image, size)
    assert (crop.x0, crop.y0, crop.side) == (0, 3, side)
    t = torch.from_numpy(image[3:3 + side].astype(np.float32)).permute(2, 0, 1)[None]
    k = side // size
    if k >= 2:
        n = side // k
        trim = (side - n * k) // 2
        t = F.avg_pool2d(t[..., trim:trim + n * k, trim:trim + n * k], k)
    ref = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).numpy()
    assert x.shape == (1, 3, size, size)
    np.testing.assert_allclose(x, ref, atol=2e-3)


def test_model_input_follows_the_manifest_colour_order_normalisation_layout_and_quantization():
    image = np.random.default_rng(0).uniform(0, 255, (1, 3, 8, 8)).astype(np.float32)
    manifest = {"preprocessing": {"colour_order": "BGR", "mean": [10.0, 20.0, 30.0], "std": [2.0, 4.0, 8.0]},
                "input": {"layout": "NHWC", "dtype": "int8", "quantization": {"scale": 0.5, "zero_point": -3}}}
    q = model_input(image, manifest)
    assert q.dtype == np.int8 and q.shape == (1, 8, 8, 3)
    bgr = image[0, ::-1]  # channel 0 of the input is the image's blue
    expected = (bgr - np.array([10, 20, 30])[:, None, None]) / np.array([2, 4, 8])[:, None, None]
    expected = np.clip(np.round(expected / 0.5) - 3, -128, 127).transpose(1, 2, 0)
    np.testing.assert_array_equal(q[0], expected.astype(np.int8))


def _predict(artifact, photo, tmp_path, *flags) -> tuple[dict, str]:
    out = tmp_path / f"{Path(artifact).name}-{Path(photo).stem}.json"
    r = ktedge("predict", str(artifact), str(photo), "--json", str(out), *flags)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text()), r.stderr


def test_predict_finds_the_astronauts_face_and_the_onet_agrees_with_the_detector(exported, tmp_path):
    """The whole astronaut photo, the real O-Net int8 with int8 input: BlazeFace finds her face,
    the crop is aligned by the rule the manifest states, and the O-Net, another real model, says
    face and puts her eyes within a fifth of their distance of where the detector put them, in the
    photo's pixels; the overlay is drawn on the photo."""
    out, *_ = exported
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    result, console = _predict(out / ONET / "export" / "tflite-int8-int8io", photo, tmp_path,
                               "--overlay", str(tmp_path / "o.png"))
    (face,) = result["faces"]
    answers = face["answers"]
    assert face["score"] > 0.8 and answers["face_prob"]["face"] > 0.9
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = answers["landmarks5"]
    assert lx < nx < rx and max(ly, ry) < ny < min(mly, mry) and mlx < mrx
    detector_eyes, onet_eyes = np.array(face["eyes"]), np.array(answers["landmarks5"][:2])
    distance = np.linalg.norm(detector_eyes[1] - detector_eyes[0])
    assert np.linalg.norm(onet_eyes - detector_eyes, axis=1).max() < 0.2 * distance, (onet_eyes, detector_eyes)
    x0, y0, x1, y1 = face["box"]
    assert x0 < lx and rx < x1 and y0 < min(ly, ry)
    assert Image.open(tmp_path / "o.png").size == (512, 512)
    assert "1 face(s) found" in console and "face_prob" in console and "5 points" in console


def test_predict_finds_every_face_of_a_group_and_none_in_a_landscape(exported, tmp_path):
    """Seven real faces pasted into a 1000 px photo (60 to 280 px wide): each found once and
    answered, its points in the photo's pixels inside its own box; a photo with no face is
    `{"faces": []}`, said so, exit 0."""
    from ktedge.model.blazeface import blazeface
    from tests.test_blazeface import group_photo

    out, *_ = exported
    canvas, expected = group_photo(blazeface())
    Image.fromarray(canvas).save(tmp_path / "group.png")
    result, _ = _predict(out / ONET / "export" / "tflite-fp32", tmp_path / "group.png", tmp_path)
    assert len(result["faces"]) == len(expected)
    for face in result["faces"]:
        x0, y0, x1, y1 = face["box"]
        w = x1 - x0
        assert face["answers"]["face_prob"]["face"] > 0.5
        for x, y in face["answers"]["landmarks5"]:
            assert x0 - 0.1 * w <= x <= x1 + 0.1 * w and y0 - 0.1 * w <= y <= y1 + 0.1 * w
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    result, console = _predict(out / "export" / "tflite-int8", tmp_path / "coffee.png", tmp_path)
    assert result["faces"] == [] and "no face found" in console


def test_predict_agrees_across_formats_on_a_photo(exported, tmp_path):
    """The same photo through the KT model's fp32 artifacts in three runtimes: one face, the same
    68 points, in the photo's pixels (the model itself is trained on synthetic faces: how far its
    points are from a real face's is measured in docs/results.md, not gated here)."""
    out, *_ = exported
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    points = {}
    for name in ("executorch-fp32", "tflite-fp32", "onnx-fp32"):
        result, _ = _predict(out / "export" / name, photo, tmp_path)
        (face,) = result["faces"]
        points[name] = np.array(face["answers"]["landmarks"])
    assert points["tflite-fp32"].shape == (68, 2)
    for name in ("tflite-fp32", "onnx-fp32"):
        np.testing.assert_allclose(points[name], points["executorch-fp32"], atol=0.05)  # pixels of a 512 px photo


def test_no_detect_runs_the_centred_square_as_before(exported, tmp_path):
    """--no-detect: the photo's centred square, one answer whose box is that square."""
    out, *_ = exported
    photo = tmp_path / "head.png"
    Image.fromarray(data.astronaut()[30:190, 160:320]).save(photo)
    result, _ = _predict(out / ONET / "export" / "tflite-int8-int8io", photo, tmp_path, "--no-detect")
    (face,) = result["faces"]
    assert face["box"] == [0.0, 0.0, 160.0, 160.0] and face["score"] is None and result["detector"] is None
    assert face["answers"]["face_prob"]["face"] > 0.9


def _bad_images(tmp_path):
    astronaut = data.astronaut()
    Image.fromarray(astronaut[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([astronaut, astronaut[..., :1]])).save(tmp_path / "rgba.png")
    Image.fromarray(astronaut[:40, :50]).save(tmp_path / "tiny.png")
    (tmp_path / "notes.png").write_text("not an image at all")
    (tmp_path / "cut.png").write_bytes((tmp_path / "grey.png").read_bytes()[:300])
    return {"grey.png": "has 1 channel(s) (mode L); the model takes 3-channel RGB",
            "rgba.png": "has 4 channel(s) (mode RGBA)",
            "tiny.png": "image is 50x40 px; the model needs at least 64x64",
            "notes.png": "not a readable image",
            "cut.png": "not a readable image",
            "missing.png": "no such image"}


def test_every_bad_image_is_one_named_line_and_exit_2(exported, tmp_path):
    out, *_ = exported
    for name, message in _bad_images(tmp_path).items():
        r = ktedge("predict", str(out / "export" / "tflite-int8"), str(tmp_path / name), "--no-detect")
        assert r.returncode == 2, (name, r.stderr)
        assert r.stderr.startswith(f"ktedge: error: {tmp_path / name}: ") and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_predict_on_a_folder_that_is_not_an_artifact_says_so(tmp_path):
    r = ktedge("predict", str(tmp_path), str(tmp_path / "x.png"))
    assert r.returncode == 2 and "not an exported artifact (no manifest.json beside it)" in r.stderr


def test_the_real_face_check_finds_each_photo_and_lands_in_the_report(exported, tmp_path):
    """benchmarks/real_faces.py on the run's landmark artifact: the astronaut and her three
    variants each found once, every point compared, the figures in summary.json and report.md."""
    import shutil

    from ktedge.benchmarks.real_faces import main as real_faces

    out, *_ = exported
    from ktedge.atomic import write_json
    from ktedge.pipeline import build_summary

    run = tmp_path / "run"
    shutil.copytree(out, run)
    write_json(run / "summary.json", build_summary(run))  # a finished run (the fixture has no bench)
    assert real_faces(["--out", str(run), "--artifact", "tflite-int8"]) == 0
    result = json.loads((run / "bench" / "real_faces.json").read_text())["artifacts"]["tflite-int8"]
    assert result["faces"] == 4 and [f["photo"] for f in result["faces_detail"]] == [
        "astronaut", "mirrored", "turned -20 deg", "turned +20 deg"]
    assert all(np.isfinite(list(f["error_pct"].values())).all() for f in result["faces_detail"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["real_faces"]["artifacts"]["tflite-int8"]["mean_error_pct"] == result["mean_pct"]
    assert "## On real faces" in (run / "report.md").read_text()
