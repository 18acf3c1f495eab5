"""The real photos ktedge checks real models on, and the labelled sets made from them for the
ported MediaPipe models.

Photos, all offline: scikit-image's astronaut (one face, 512 px) and, extracted at install from
insightface's source archive (ktedge/assets.py), a 6-person group photo (1280 x 886) and a 112-px
portrait: 8 real faces of 8 people; and scikit-image's photos without a face (NO_FACE_PHOTOS).

Two data formats, both labelled by MediaPipe's own file run in LiteRT on each image: another
model's output, not a human label (what a port is held to). The calibration and held-out splits are
different random draws over the same photos.
- `mesh_crops` (`facemesh_faces`): each face found by BlazeFace (model/blazeface.py, MediaPipe's
  weights) and cropped by MediaPipe's FaceMesh rule (model/facemesh.py roi_matrix), then jittered
  as a detector's box varies (turn, scale, shift, mirror), 16 crops a face per split; labels:
  face_landmark.tflite's 468 points.
- `face_frames` (`detector_frames`): 128 x 128 frames the detector sees: each photo letterboxed
  whole, windows around each face (2.2-4.5x its size, shifted, mirrored), and the no-face photos
  whole and in windows; labels: face_detection_short_range.tflite's faces after MediaPipe's
  threshold and weighted NMS (boxes, NaN-padded to MAX_FACES a frame)."""
from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np

from ktedge.errors import KtedgeError

PHOTOS = ("astronaut", "insightface-t1", "insightface-tom_hanks")
# scikit-image photos with no human face (its `camera` has one, and MediaPipe's detector takes the
# cat of `chelsea` for one).
NO_FACE_PHOTOS = ("coffee", "rocket", "coins", "hubble_deep_field", "brick", "clock")
MAX_FACES = 8  # reference boxes a frame holds
WINDOWS_PER_FACE, WINDOWS_PER_EMPTY_PHOTO = 12, 3
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


def run_original(peer: str, images: np.ndarray, scale: float, offset: float = 0.0) -> Iterator[dict[str, np.ndarray]]:
    """MediaPipe's own file `peer` in LiteRT on each (H, W, 3) uint8 image, fed as MediaPipe feeds
    it (pixel / scale - offset): each image's outputs by name, batch axis dropped."""
    from ai_edge_litert.interpreter import Interpreter

    from ktedge.assets import installed

    it = Interpreter(model_path=str(installed(peer)), num_threads=1)
    it.allocate_tensors()
    index = it.get_input_details()[0]["index"]
    outputs = {d["name"]: d["index"] for d in it.get_output_details()}
    for image in images:
        it.set_tensor(index, (image[None] / np.float32(scale) - np.float32(offset)).astype(np.float32))
        it.invoke()
        yield {name: it.get_tensor(i)[0] for name, i in outputs.items()}


def mediapipe_mesh(crops: np.ndarray) -> np.ndarray:
    """(N, 192, 192, 3) uint8 crops -> MediaPipe's own face_landmark.tflite's (N, 468, 3) points in
    crop pixels, run in LiteRT as MediaPipe feeds it (RGB in [0, 1])."""
    from ktedge.model.facemesh import NUM_LANDMARKS, PEER

    out = np.empty((len(crops), NUM_LANDMARKS, 3), np.float32)
    for i, outputs in enumerate(run_original(PEER, crops, 255.0)):
        out[i] = next(iter(outputs.values())).reshape(NUM_LANDMARKS, 3)  # the first output: the points
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


def no_face_photos() -> dict[str, np.ndarray]:
    """scikit-image's photos without a face, as (H, W, 3) uint8 RGB (grey ones repeated)."""
    from skimage import data

    out = {}
    for name in NO_FACE_PHOTOS:
        image = getattr(data, name)()
        out[name] = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    return out


def _face_window(box: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """(x0, y0, side) of a square window 2.2-4.5x the face's size holding the whole face."""
    x0, y0, x1, y1 = box
    face = max(x1 - x0, y1 - y0)
    side = face * rng.uniform(2.2, 4.5)
    slack = (side - face) / 2 * 0.8
    cx, cy = (x0 + x1) / 2 + rng.uniform(-slack, slack), (y0 + y1) / 2 + rng.uniform(-slack, slack)
    return cx - side / 2, cy - side / 2, side


def mediapipe_faces(frames: np.ndarray) -> np.ndarray:
    """(N, 128, 128, 3) uint8 frames -> MediaPipe's own face_detection_short_range.tflite's faces
    in LiteRT, decoded and suppressed MediaPipe's way: (N, MAX_FACES, 4) relative boxes, NaN-padded."""
    import torch

    from ktedge.model import blazeface as bf

    anchors = bf.ssd_anchors()
    out = np.full((len(frames), MAX_FACES, 4), np.nan, np.float32)
    for i, outputs in enumerate(run_original(bf.PEER, frames, 127.5, 1.0)):  # RGB in [-1, 1]
        regressors, logits = (torch.from_numpy(outputs[k]) for k in ("regressors", "classificators"))
        boxes = bf.weighted_nms(*bf.decode(regressors, logits, anchors))[0][:MAX_FACES]
        out[i, :len(boxes)] = boxes.numpy()
    return out


@functools.lru_cache(maxsize=4)
def detector_frames(split: str, size: int) -> "FaceSet":
    """The `face_frames` format's split (train or val): frames at `size` px with `detection`
    labelled by MediaPipe's original ((N, MAX_FACES, 4) relative boxes, NaN-padded)."""
    from ktedge.model.align import warp_affine
    from ktedge.model.blazeface import INPUT_SIZE, letterbox_matrix
    from ktedge.model.data.faces import FaceSet

    if size != INPUT_SIZE:
        raise KtedgeError(f"data.format face_frames makes BlazeFace's {INPUT_SIZE}-px frames; data.image_size is {size}")
    photos, faces = _photos_and_faces()
    empty = no_face_photos()
    every = {**photos, **empty}
    rng = np.random.default_rng([SPLIT_SEEDS[split], len(faces), 128])
    windows = [(name, *p.shape[:2], None) for name, p in every.items()]      # whole photos
    windows += [(name, 0, 0, _face_window(det.box, rng)) for name, det in faces for _ in range(WINDOWS_PER_FACE)]
    for name, p in empty.items():
        for _ in range(WINDOWS_PER_EMPTY_PHOTO):
            side = rng.uniform(0.3, 1.0) * min(p.shape[:2])
            windows.append((name, 0, 0, (rng.uniform(0, p.shape[1] - side), rng.uniform(0, p.shape[0] - side), side)))
    frames = []
    for name, h, w, win in windows:
        m = letterbox_matrix(h, w, size=size) if win is None else letterbox_matrix(win[2], win[2], win[0], win[1], size=size)
        frame = warp_affine(every[name], m, (size, size))
        frames.append(frame[:, ::-1].copy() if win is not None and rng.random() < 0.5 else frame)
    images = np.stack(frames)
    return FaceSet.unlabelled(images, detection=mediapipe_faces(images), labelled=("detection",))


def source(split: str) -> str:
    """The `mesh_crops` split in words, for reports."""
    return (f"real faces ({JITTERS} jittered FaceMesh crops of each of the 8 in scikit-image's astronaut and "
            f"insightface's t1.jpg and portrait, the {'calibration' if split == 'train' else 'held-out'} jitters; "
            f"labels: MediaPipe's face_landmark.tflite in LiteRT, another model's output)")


def frames_source(split: str) -> str:
    """The `face_frames` split in words, for reports."""
    return (f"real photos as the detector sees them (128-px frames: scikit-image's astronaut, insightface's t1.jpg "
            f"and portrait whole and in {WINDOWS_PER_FACE} windows around each face, {len(NO_FACE_PHOTOS)} "
            f"scikit-image photos without a face; the {'calibration' if split == 'train' else 'held-out'} draws; "
            f"labels: MediaPipe's face_detection_short_range.tflite in LiteRT, another model's output)")
