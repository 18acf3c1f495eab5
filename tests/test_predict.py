"""`ktedge predict` and the manifest-driven image pipeline (export/preprocess.py): resampling
equal to PyTorch's, a real photo through real int8 artifacts, and every bad image named."""
import json
import subprocess
import sys

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


def test_predict_finds_the_astronauts_face_and_landmarks_in_an_int8_artifact(exported, tmp_path):
    """The real O-Net, int8 with int8 input, on the real astronaut photo: a face, and its five
    points where a face has them (eyes above the nose above the mouth, left eye left)."""
    out, *_ = exported
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()[30:190, 160:320]).save(photo)
    r = ktedge("predict", str(out / ONET / "export" / "tflite-int8-int8io"), str(photo),
               "--json", str(tmp_path / "r.json"), "--overlay", str(tmp_path / "o.png"))
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    answers = result["answers"]
    assert answers["face_prob"]["face"] > 0.9
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = answers["landmarks5"]
    assert lx < nx < rx and max(ly, ry) < ny < min(mly, mry) and mlx < mrx
    assert all(0 <= v <= 160 for p in answers["landmarks5"] for v in p)
    x0, y0, x1, y1 = answers["box"]
    assert x0 < lx and rx < x1 and y0 < ly and max(mly, mry) < y1
    assert Image.open(tmp_path / "o.png").size == (160, 160)
    assert "face_prob" in r.stderr and "5 points" in r.stderr  # the console writes to stderr


def test_predict_agrees_across_formats_on_a_photo(exported, tmp_path):
    """The same photo through the KT model's fp32 artifacts in three runtimes: the same points."""
    out, *_ = exported
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    points = {}
    for name in ("executorch-fp32", "tflite-fp32", "onnx-fp32"):
        r = ktedge("predict", str(out / "export" / name), str(photo), "--json", str(tmp_path / f"{name}.json"))
        assert r.returncode == 0, r.stderr
        points[name] = np.array(json.loads((tmp_path / f"{name}.json").read_text())["answers"]["landmarks"])
    assert points["tflite-fp32"].shape == (68, 2)
    for name in ("tflite-fp32", "onnx-fp32"):
        np.testing.assert_allclose(points[name], points["executorch-fp32"], atol=0.05)  # pixels of a 512 px photo


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
        r = ktedge("predict", str(out / "export" / "tflite-int8"), str(tmp_path / name))
        assert r.returncode == 2, (name, r.stderr)
        assert r.stderr.startswith(f"ktedge: error: {tmp_path / name}: ") and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_predict_on_a_folder_that_is_not_an_artifact_says_so(tmp_path):
    r = ktedge("predict", str(tmp_path), str(tmp_path / "x.png"))
    assert r.returncode == 2 and "not an exported artifact (no manifest.json beside it)" in r.stderr
