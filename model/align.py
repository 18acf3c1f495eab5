"""Face alignment: from a detector's eye keypoints to the crop a face model expects.

The rule is data (it goes into the manifest) so that the Android core can implement the same
crop and a test can hold the two equal:

    {"rule": "eyes_level", "size": S, "eye_distance": f, "eye_centre": [cx, cy]}

means: rotate so the eyes are level, scale so the inter-ocular distance is f*S crop pixels, and
put the eyes' midpoint at (cx*S, cy*S). The subject's right eye (image left on a frontal face)
lands at x = (cx - f/2)*S, the left eye at (cx + f/2)*S, both at y = cy*S.

Coordinates, everywhere in this module and in the detector front-end: continuous pixel
coordinates with the origin at the top-left *corner* of the image; pixel (row r, column c)
covers [c, c+1) x [r, r+1) and its centre is (c + 0.5, r + 0.5). A relative coordinate u in
[0, 1] of an image W pixels wide is the point u*W.

Sampling (`warp_affine`), exactly, so it can be re-implemented bit for bit:
  for each crop pixel (r, c), in float64:
    (x, y) = M @ (c + 0.5, r + 0.5, 1)          # photo point, M is crop -> photo (2x3)
    (x, y) = (x - 0.5, y - 0.5)                 # to pixel-centre index space
    x0, y0 = floor(x), floor(y); fx, fy = x - x0, y - y0
    v = (1-fy)*((1-fx)*P[y0,x0] + fx*P[y0,x0+1]) + fy*((1-fx)*P[y0+1,x0] + fx*P[y0+1,x0+1])
    where P[i, j] = 0 for any (i, j) outside the photo (constant zero border, per tap);
    out = clip(floor(v + 0.5), 0, 255) as uint8.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

EYES_LEVEL = "eyes_level"


def eyes_level_rule(size: int, eye_distance: float, eye_centre: Sequence[float]) -> dict:
    """The manifest form of an eyes-level crop (`eye_distance`, `eye_centre` are fractions of
    `size`)."""
    if size <= 0 or not 0 < eye_distance <= 1:
        raise ValueError(f"eyes_level rule needs size > 0 and 0 < eye_distance <= 1, got {size}, {eye_distance}")
    cx, cy = (float(v) for v in eye_centre)
    return {"rule": EYES_LEVEL, "size": int(size), "eye_distance": float(eye_distance), "eye_centre": [cx, cy]}


def crop_to_photo(rule: dict, right_eye: Sequence[float], left_eye: Sequence[float]) -> np.ndarray:
    """The (2, 3) float64 affine matrix taking crop points to photo points for `rule`, given the
    subject's right and left eye in photo pixels. A similarity: rotation by the eye line's angle,
    uniform scale |left - right| / (eye_distance * size)."""
    if rule.get("rule") != EYES_LEVEL:
        raise ValueError(f"unknown alignment rule {rule.get('rule')!r}")
    r, l = np.asarray(right_eye, np.float64), np.asarray(left_eye, np.float64)
    d = l - r
    dist = math.hypot(d[0], d[1])
    if dist == 0:
        raise ValueError("the two eyes coincide: no alignment is defined")
    size = rule["size"]
    scale = dist / (rule["eye_distance"] * size)          # photo pixels per crop pixel
    cos, sin = d[0] / dist * scale, d[1] / dist * scale   # scale * (cos, sin) of the eye angle
    centre = np.array(rule["eye_centre"], np.float64) * size
    mid = (r + l) / 2
    # photo = mid + scale * R(theta) @ (crop - centre)
    linear = np.array([[cos, -sin], [sin, cos]])
    return np.hstack([linear, (mid - linear @ centre)[:, None]])


def invert_affine(m: np.ndarray) -> np.ndarray:
    """The inverse of a (2, 3) affine matrix (photo -> crop from crop -> photo, and back)."""
    linear = np.linalg.inv(m[:, :2])
    return np.hstack([linear, (-linear @ m[:, 2])[:, None]])


def map_points(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (..., 2) points."""
    points = np.asarray(points, np.float64)
    return points @ m[:, :2].T + m[:, 2]


def warp_affine(photo: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample a (H, W, C) uint8 photo into a (h, w, C) uint8 image, crop pixel -> photo point by
    the (2, 3) matrix `m`, `size` = (h, w); bilinear with a zero border (see the module doc)."""
    if photo.dtype != np.uint8 or photo.ndim != 3:
        raise ValueError(f"expected an (H, W, C) uint8 photo, got {photo.dtype} {photo.shape}")
    h, w = size
    H, W, C = photo.shape
    cols, rows = np.meshgrid(np.arange(w, dtype=np.float64) + 0.5, np.arange(h, dtype=np.float64) + 0.5)
    x = m[0, 0] * cols + m[0, 1] * rows + m[0, 2] - 0.5   # (h, w) sample points, pixel-centre index space
    y = m[1, 0] * cols + m[1, 1] * rows + m[1, 2] - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    padded = np.zeros((H + 2, W + 2, C), np.uint8)       # one ring of zeros: taps outside read 0
    padded[1:-1, 1:-1] = photo
    # Taps further outside than the ring all read the ring's zeros.
    xi0, xi1 = np.clip(x0 + 1, 0, W + 1), np.clip(x0 + 2, 0, W + 1)
    yi0, yi1 = np.clip(y0 + 1, 0, H + 1), np.clip(y0 + 2, 0, H + 1)
    tap = lambda yi, xi: padded[yi, xi].astype(np.float64)  # noqa: E731
    top = (1 - fx) * tap(yi0, xi0) + fx * tap(yi0, xi1)
    bottom = (1 - fx) * tap(yi1, xi0) + fx * tap(yi1, xi1)
    v = (1 - fy) * top + fy * bottom
    return np.clip(np.floor(v + 0.5), 0, 255).astype(np.uint8)


def align(photo: np.ndarray, rule: dict, right_eye: Sequence[float],
          left_eye: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The (S, S, C) uint8 aligned crop of `photo` by `rule`, and its (2, 3) crop -> photo matrix
    (map crop points, e.g. a face model's landmarks, back with `map_points`)."""
    m = crop_to_photo(rule, right_eye, left_eye)
    return warp_affine(photo, m, (rule["size"], rule["size"])), m


POINT_KINDS = ("points_xy", "points_x_then_y", "points_xyz")


def points_of(kind: str, values: np.ndarray) -> np.ndarray:
    """A points output of N faces, as fractions of the crop -> (N, K, 2) (x, y): `points_xy`
    (x, y) pairs, `points_x_then_y` every x then every y, `points_xyz` (x, y, z) triples."""
    v = np.asarray(values, np.float64).reshape(len(values), -1)
    if kind == "points_xy":
        return v.reshape(len(v), -1, 2)
    if kind == "points_xyz":
        return v.reshape(len(v), -1, 3)[..., :2]
    return v.reshape(len(v), 2, -1).transpose(0, 2, 1)


def measured_alignment(outputs: list[dict], predictions: list[np.ndarray], size: int, measured_on: str) -> dict | None:
    """The eyes-level rule that puts a detector's eyes where this model puts the eyes on its own
    faces: the mean eye centres of its first points output that names `eye_centres`, over
    `predictions` (its outputs on those faces, in order). None where no output names eye centres."""
    for spec, values in zip(outputs, predictions):
        if spec.get("eye_centres"):
            pts = points_of(spec["kind"], values)
            right, left = (pts[:, list(e)].mean(axis=1) for e in spec["eye_centres"])  # (N, 2) each
            centre = ((right + left) / 2).mean(axis=0)
            distance = float(np.linalg.norm(left - right, axis=1).mean())
            return {**eyes_level_rule(size, distance, centre.tolist()), "measured_on": measured_on}
    return None
