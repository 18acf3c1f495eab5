"""Image file -> model input -> decoded answer, driven by the artifact's manifest alone.

The android_demo app's core module (android_demo/core) implements the same steps in Kotlin;
tests/test_android_core.py runs both on the same image and manifest and holds them equal. So the
steps are spelled out here rather than left to an image library whose resampling differs:
centre square crop, an integer box filter when shrinking by 2x or more, then bilinear resampling
with half-pixel centres (PyTorch's `interpolate(mode="bilinear", align_corners=False)`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ktedge.errors import KtedgeError
from ktedge.model.align import POINT_KINDS, map_points, points_of

# How each output kind turns a tensor into an answer (manifest outputs[].kind).
OUTPUT_KINDS = (*POINT_KINDS, "box_offsets", "probabilities", "value", "multilabel_logits", "class_logits", "embedding",
                "anchor_detections")


@dataclass(frozen=True)
class Crop:
    """Where the model's square crop came from in the original image (pixels)."""
    x0: int
    y0: int
    side: int

    def to_photo(self, size: int) -> np.ndarray:
        """The (2, 3) matrix taking points of the size x size model input to photo pixels."""
        s = self.side / size
        return np.array([[s, 0.0, self.x0], [0.0, s, self.y0]])


def load_image(path: str | Path) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB. Refuses, naming the file: not an image, a channel
    count other than RGB (grey, RGBA, CMYK are converted by the caller on purpose, not silently)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode, size = im.mode, im.size
            pixels = np.asarray(im)
    except FileNotFoundError:
        raise KtedgeError(f"{path}: no such image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise KtedgeError(f"{path}: not a readable image ({type(e).__name__}: {e}); give a PNG or JPEG") from None
    if mode != "RGB":
        bands = {"L": 1, "1": 1, "P": 1, "I": 1, "F": 1, "LA": 2, "RGBA": 4, "CMYK": 4}.get(mode, "?")
        raise KtedgeError(f"{path}: has {bands} channel(s) (mode {mode}); the model takes 3-channel RGB: "
                          f"convert it first (e.g. PIL `Image.open(p).convert('RGB').save(...)`)")
    if pixels.dtype != np.uint8 or pixels.shape != (size[1], size[0], 3):
        raise KtedgeError(f"{path}: unsupported pixel format {pixels.dtype} {pixels.shape}; give 8-bit RGB")
    return pixels


def centre_crop(image: np.ndarray) -> tuple[np.ndarray, Crop]:
    """The largest centred square: (H, W, 3) -> (S, S, 3), where it lies in the image."""
    h, w = image.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return image[y0:y0 + side, x0:x0 + side], Crop(x0, y0, side)


def resize_square(square: np.ndarray, size: int) -> np.ndarray:
    """(S, S, 3) uint8 -> (size, size, 3) float32 0..255. A k x k box average first when shrinking
    by k >= 2 (bilinear alone aliases), the centred k-multiple of the square; then bilinear."""
    side = square.shape[0]
    k = side // size
    x = square.astype(np.float32)
    if k >= 2:
        trim = (side - (side // k) * k) // 2
        n = side // k
        x = x[trim:trim + n * k, trim:trim + n * k].reshape(n, k, n, k, 3).mean(axis=(1, 3), dtype=np.float64)
        x = x.astype(np.float32)
    return bilinear(x, size)


def bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """(N, N, C) -> (size, size, C), half-pixel centres, source index clamped at 0 and N - 1."""
    n = x.shape[0]
    src = np.maximum((np.arange(size, dtype=np.float64) + 0.5) * (n / size) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    f = (src - i0).astype(np.float32)
    rows = x[i0] * (1 - f)[:, None, None] + x[i1] * f[:, None, None]  # (size, N, C)
    return rows[:, i0] * (1 - f)[None, :, None] + rows[:, i1] * f[None, :, None]


def face_crop(image: np.ndarray, size: int) -> tuple[np.ndarray, Crop]:
    """(H, W, 3) uint8 RGB -> (1, 3, size, size) float32 RGB 0..255 and where the crop lay.
    Refuses an image smaller than the crop: upsampling a thumbnail gives the model nothing to see."""
    h, w = image.shape[:2]
    if min(h, w) < size:
        raise KtedgeError(f"image is {w}x{h} px; the model needs at least {size}x{size} around the face")
    square, crop = centre_crop(image)
    return resize_square(square, size).transpose(2, 0, 1)[None].copy(), crop


def quantize_input(x: np.ndarray, tensor: dict) -> np.ndarray:
    """Float input -> the manifest's dtype: q = round(x / scale) + zero_point, clipped."""
    dtype = np.dtype(tensor["dtype"])
    q = tensor["quantization"]
    if q is None:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / q["scale"]) + q["zero_point"], info.min, info.max).astype(dtype)


def dequantize_output(y: np.ndarray, tensor: dict) -> np.ndarray:
    q = tensor["quantization"]
    return y.astype(np.float32) if q is None else (y.astype(np.float32) - q["zero_point"]) * q["scale"]


def model_input(image_nchw: np.ndarray, manifest: dict) -> np.ndarray:
    """(1, 3, S, S) float32 RGB 0..255 -> the tensor the artifact takes: colour order,
    (pixel - mean) / std per channel, layout, dtype and int8 quantization, all from the manifest."""
    pre, inp = manifest["preprocessing"], manifest["input"]
    x = image_nchw[:, ::-1] if pre["colour_order"] == "BGR" else image_nchw
    mean = np.asarray(pre["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(pre["std"], np.float32).reshape(1, 3, 1, 1)
    x = (x - mean) / std
    if inp["layout"] == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    return quantize_input(np.ascontiguousarray(x, dtype=np.float32), inp)


def decode(outputs: list[np.ndarray], manifest: dict, to_photo: np.ndarray) -> dict[str, Any]:
    """Dequantized outputs (manifest order) -> {output name: answer}, points and boxes in the
    photo's pixels: `to_photo` (2, 3) takes model-input pixels to photo pixels (`Crop.to_photo`
    for a centred crop, the alignment's similarity for a detected face)."""
    size = manifest["preprocessing"]["crop_size"]
    answers: dict[str, Any] = {}
    for y, spec in zip(outputs, manifest["outputs"]):
        v = np.asarray(y, np.float64).reshape(-1)
        kind = spec["kind"]
        if kind in POINT_KINDS:
            answers[spec["name"]] = map_points(to_photo, points_of(kind, v[None])[0] * size).tolist()
        elif kind == "box_offsets":  # MTCNN: offsets of the crop's own box, in units of its side
            x0, y0, x1, y1 = v[:4] + [0.0, 0.0, 1.0, 1.0]
            corners = map_points(to_photo, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) * size)
            answers[spec["name"]] = [*corners.min(axis=0).tolist(), *corners.max(axis=0).tolist()]
        elif kind == "probabilities":
            answers[spec["name"]] = dict(zip(spec.get("labels") or map(str, range(len(v))), v.tolist()))
        elif kind == "value":
            answers[spec["name"]] = float(v[0])
        elif kind == "multilabel_logits":
            labels = spec.get("labels") or [str(i) for i in range(len(v))]
            answers[spec["name"]] = [name for name, logit in zip(labels, v) if logit > 0]
        elif kind == "class_logits":
            labels = spec.get("labels") or [str(i) for i in range(len(v))]
            answers[spec["name"]] = labels[int(np.argmax(v))]
        elif kind == "embedding":
            answers[spec["name"]] = (v / max(np.linalg.norm(v), 1e-12)).tolist()
        elif kind == "anchor_detections":  # a detector: its faces, thresholded and suppressed
            from ktedge.model.blazeface import faces_in

            boxes, keypoints, scores = (t.numpy().astype(np.float64) for t in faces_in(v))
            answers[spec["name"]] = [
                {"box": [*map_points(to_photo, b.reshape(2, 2) * size).reshape(-1).tolist()], "score": float(s),
                 "keypoints": map_points(to_photo, k * size).tolist()} for b, k, s in zip(boxes, keypoints, scores)]
        else:
            raise KtedgeError(f"manifest output {spec['name']}: unknown kind {kind!r}")
    return answers
