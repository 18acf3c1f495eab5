"""The real photos ktedge checks real models on, and FaceMesh's labelled crops made from them.

Photos, all offline: scikit-image's astronaut (one face, 512 px) and, extracted at install from
insightface's source archive (ktedge/assets.py), a 6-person group photo (1280 x 886) and a 112-px
portrait: 8 real faces of 8 people.

`facemesh_faces` is the `mesh_crops` data format: each face found by BlazeFace (model/blazeface.py,
MediaPipe's weights) and cropped by MediaPipe's FaceMesh rule (model/facemesh.py roi_matrix), then
jittered as a detector's box varies (turn, scale, shift, mirror), 16 crops a face per split; the
calibration and held-out splits are different jitters of the same faces. Each crop's label is
MediaPipe's own `face_landmark.tflite` run in LiteRT on it: another model's output, not a human
label (what a port is held to)."""
from __future__ import annotations

import functools
import math

import numpy as np

from ktedge.errors import KtedgeError

PHOTOS = ("astronaut", "insightface-t1", "insightface-tom_hanks")
JITTERS = 16  # crops per face per split
SPLIT_SEEDS = {"train": 0, "val": 1}
# How far a crop may stray from MediaPipe's: a detector's frame-to-frame wobble, and a mirror.
MAX_TURN_DEG, MAX_SCALE, MAX_SHIFT = 15.0, 0.1, 0.05


def real_photos() -> dict[str, np.ndarray]:
    """name -> (H, W, 3) uint8 RGB; refuses to run without the installed insightface photos."""
    from skimage import data

    from ktedge.assets import installed
    from ktedge.export.preprocess import load_image

    photos = {"astronaut": data.astronaut()}
    for name in PHOTOS[1:]:
        rgb = load_image(installed(name))  # (H, W, 3) float 0..255
        photos[name] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return photos


def found_faces(photos: dict[str, np.ndarray], min_face: int = 48) -> list[tuple[str, "object"]]:
    """(photo name, BlazeFace Detection) for every face the tiled detector finds, in photo order."""
    from ktedge.model.blazeface import blazeface, detect_tiled

    model = blazeface()
    return [(name, det) for name, photo in photos.items() for det in detect_tiled(model, photo, min_face=min_face)]


def jittered(m: np.ndarray, rng: np.random.Generator, size: int) -> tuple[np.ndarray, bool]:
    """The crop -> photo matrix `m` turned, scaled and shifted about the crop's centre by a random
    amount, and whether to mirror the crop."""
    t = math.radians(rng.uniform(-MAX_TURN_DEG, MAX_TURN_DEG))
    s = 1 + rng.uniform(-MAX_SCALE, MAX_SCALE)
    dx, dy = rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2) * size
    c = size / 2
    r = s * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    local = np.vstack([np.hstack([r, (np.array([c + dx, c + dy]) - r @ [c, c])[:, None]]), [0, 0, 1]])
    return np.vstack([m, [0, 0, 1]])[:2] @ local, bool(rng.random() < 0.5)


def mediapipe_mesh(crops: np.ndarray) -> np.ndarray:
    """(N, 192, 192, 3) uint8 crops -> MediaPipe's own face_landmark.tflite's (N, 468, 3) points in
    crop pixels, run in LiteRT as MediaPipe feeds it (RGB in [0, 1])."""
    from ai_edge_litert.interpreter import Interpreter

    from ktedge.assets import installed
    from ktedge.model.facemesh import NUM_LANDMARKS, PEER

    it = Interpreter(model_path=str(installed(PEER)), num_threads=1)
    it.allocate_tensors()
    index = it.get_input_details()[0]["index"]
    points = it.get_output_details()[0]["index"]
    out = np.empty((len(crops), NUM_LANDMARKS, 3), np.float32)
    for i, crop in enumerate(crops):
        it.set_tensor(index, (crop[None] / np.float32(255)).astype(np.float32))
        it.invoke()
        out[i] = it.get_tensor(points).reshape(NUM_LANDMARKS, 3)
    return out


@functools.lru_cache(maxsize=1)
def _photos_and_faces() -> tuple[dict[str, np.ndarray], list]:
    """Every stage of a run reads both splits: the tiled detection runs once per process."""
    photos = real_photos()
    return photos, found_faces(photos)


@functools.lru_cache(maxsize=4)
def facemesh_faces(split: str, size: int) -> "FaceSet":
    """The `mesh_crops` format's split (train or val): JITTERS crops of each real face at `size` px,
    `mesh` labelled by MediaPipe's original as fractions of the crop ((N, 468, 2) x, y)."""
    from ktedge.model.align import warp_affine
    from ktedge.model.data.faces import FaceSet
    from ktedge.model.facemesh import INPUT_SIZE, roi_matrix

    if size != INPUT_SIZE:
        raise KtedgeError(f"data.format mesh_crops makes FaceMesh's {INPUT_SIZE}-px crops; data.image_size is {size}")
    photos, faces = _photos_and_faces()
    if not faces:
        raise KtedgeError("data.format mesh_crops: BlazeFace found no face in the real photos (is face_detection_short_range.tflite the pinned file?)")
    rng = np.random.default_rng([SPLIT_SEEDS[split], len(faces)])
    crops = []
    for name, det in faces:
        for _ in range(JITTERS):
            m, mirror = jittered(roi_matrix(det, size=size), rng, size)
            crop = warp_affine(photos[name], m, (size, size))
            crops.append(crop[:, ::-1].copy() if mirror else crop)
    images = np.stack(crops)
    mesh = mediapipe_mesh(images)[..., :2] / size
    return FaceSet.unlabelled(images, mesh=mesh.astype(np.float32), labelled=("mesh",))


def source(split: str) -> str:
    """The `mesh_crops` split in words, for reports."""
    return (f"real faces ({JITTERS} jittered FaceMesh crops of each of the 8 in scikit-image's astronaut and "
            f"insightface's t1.jpg and portrait, the {'calibration' if split == 'train' else 'held-out'} jitters; "
            f"labels: MediaPipe's face_landmark.tflite in LiteRT, another model's output)")
