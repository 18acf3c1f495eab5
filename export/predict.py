"""`ktedge predict`: one exported artifact on a whole photo, in its own runtime: every face found
(by the run's own deployed BlazeFace artifact where the run has one, else the PyTorch port of
MediaPipe's, model/blazeface.py), aligned by the rule the artifact's manifest states, run, and its
answers mapped back to the photo's pixels. `--no-detect` runs the centred square
instead (the crop the manifest's preprocessing describes). A detector artifact (BlazeFace deployed)
takes the whole photo, letterboxed, and its faces are the answer. The check a developer makes before
putting the file in an app."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ktedge.atomic import write_bytes
from ktedge.errors import KtedgeError
from ktedge.export.preprocess import decode, face_crop, load_image
from ktedge.export.runtimes import open_runner
from ktedge.model.align import POINT_KINDS, crop_to_photo, warp_affine
from ktedge.progress import converter_log

if TYPE_CHECKING:
    from ktedge.model.blazeface import FrameDetector

MIN_FACE = 48  # px: the smallest face the tiled detector looks for


def artifact_dir(path: str | Path) -> Path:
    """An artifact folder, or the model file inside one."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not (folder / "manifest.json").is_file():
        raise KtedgeError(f"{path}: not an exported artifact (no manifest.json beside it); "
                          f"give a folder under <run>/export/, e.g. runs/default/export/tflite-int8")
    return folder


def warp_to_input(photo: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The `size` x `size` input whose pixels `m` (2, 3) maps to photo pixels, as (1, 3, S, S)
    float32 RGB 0..255. Shrinking by k >= 2 box-averages the photo by k first (bilinear alone
    aliases), as the centred crop does."""
    k = int(np.hypot(m[0, 0], m[1, 0]))  # photo pixels per input pixel, whole
    src, mk = photo, m
    if k >= 2:
        # Only the k x k blocks the samples read, with a ring of two for the bilinear taps: the
        # same values as averaging the whole photo, for a fraction of the work on a face.
        corners = m @ np.array([[0, size, size, 0], [0, 0, size, size], [1, 1, 1, 1]], np.float64)  # (2, 4)
        blocks = np.array([photo.shape[1] // k, photo.shape[0] // k])
        lo = np.clip(np.floor(corners.min(axis=1) / k) - 2, 0, blocks).astype(int)
        hi = np.clip(np.ceil(corners.max(axis=1) / k) + 2, lo, blocks).astype(int)
        (bx0, by0), (bx1, by1) = lo, hi
        region = photo[by0 * k:by1 * k, bx0 * k:bx1 * k]
        region = region.reshape(by1 - by0, k, bx1 - bx0, k, 3).mean(axis=(1, 3))
        src = np.zeros((*blocks[::-1], 3), np.uint8)  # blocks no sample reads stay 0
        src[by0:by1, bx0:bx1] = np.clip(np.floor(region + 0.5), 0, 255)
        mk = m / k  # corner-origin coordinates scale exactly
    crop = warp_affine(src, mk, (size, size)).astype(np.float32)
    return crop.transpose(2, 0, 1)[None].copy()


def aligned_input(photo: np.ndarray, rule: dict, right_eye: np.ndarray, left_eye: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A face of `photo` -> (1, 3, S, S) float32 RGB 0..255 by the eyes-level `rule`, and the
    (2, 3) matrix from input pixels to photo pixels."""
    m = crop_to_photo(rule, right_eye, left_eye)
    return warp_to_input(photo, m, rule["size"]), m


def is_detector(manifest: dict) -> bool:
    return any(o["kind"] == "anchor_detections" for o in manifest["outputs"])


def detector_faces(runner, photo: np.ndarray) -> list[dict]:
    """A detector artifact on the whole photo, letterboxed to its input as its manifest's crop
    says: its faces (after its threshold and NMS) in photo pixels."""
    from ktedge.model.blazeface import letterbox_matrix

    size = runner.manifest["preprocessing"]["crop_size"]
    m = letterbox_matrix(*photo.shape[:2], size=size)
    x = warp_to_input(photo, m, size)
    start = time.perf_counter()
    outputs = runner(x)
    ms = 1e3 * (time.perf_counter() - start)
    (name, found), = decode(outputs, runner.manifest, m).items()
    return [{"box": f["box"], "score": f["score"], "eyes": f["keypoints"][:2], "input_to_photo": m.tolist(),
             "answers": {name: [f]}, "latency_ms": ms} for f in found]


def pipeline_frame(detector, runner, photo: np.ndarray) -> list[dict]:
    """One frame as an app runs it on a camera frame: the detector artifact once on the whole
    frame (letterboxed, no tiles), then the model on each face it found, aligned by the model's
    rule. -> per face {box, score, answers} in photo pixels. What the bench times as a pipeline."""
    rule = runner.manifest["preprocessing"]["alignment"]
    faces = []
    for face in detector_faces(detector, photo):
        x, m = aligned_input(photo, rule, *map(np.asarray, face["eyes"]))
        faces.append({"box": face["box"], "score": face["score"], "answers": decode(runner(x), runner.manifest, m)})
    return faces


DETECTOR = "blazeface"  # the published detector a run deploys beside its model


def run_detector(folder: Path) -> Path | None:
    """The detector artifact deployed beside `folder`'s run (<run>/published/blazeface/export/):
    the one of the same name (tflite-int8 for tflite-int8), else one of the same format that runs
    here, of the same precision if there is one; None where the run has none."""
    from ktedge.export.manifest import load_manifest
    from ktedge.export.runtimes import cannot_run

    run = folder.parent.parent
    if run.parent.name == "published":  # a published model's own run sits inside the main run
        run = run.parent.parent
    export = run / "published" / DETECTOR / "export"
    if (export / folder.name / "manifest.json").is_file():
        return export / folder.name
    model = load_manifest(folder)
    candidates = [(m["precision"] != model["precision"], d.parent.name, d.parent)
                  for d in export.glob("*/manifest.json") for m in [load_manifest(d.parent)]
                  if m["format"] == model["format"] and cannot_run(m) is None]
    return min(candidates)[2] if candidates else None


def artifact_detector(runner) -> FrameDetector:
    """A detector artifact's runner as the tiled front-end's FrameDetector: one frame per call."""
    from ktedge.model.blazeface import NUM_ANCHORS

    def frames(crops: np.ndarray) -> np.ndarray:
        x = crops.transpose(0, 3, 1, 2).astype(np.float32)             # (B, 3, 128, 128) 0..255
        return np.stack([runner(f[None])[0].reshape(NUM_ANCHORS, -1) for f in x])
    return frames


def find_faces(photo: np.ndarray, min_face: int, detector: FrameDetector | None = None) -> list:
    """BlazeFace over the photo and its tiles: faces from a selfie down to `min_face` pixels wide.
    `detector`: a deployed artifact's (`artifact_detector`); default the PyTorch port."""
    from ktedge.model.blazeface import blazeface, detect_tiled

    return detect_tiled(detector or blazeface(), photo, min_face=min_face)


def predict(artifact: str | Path, image_path: str | Path, threads: int = 1, detect: bool = True,
            min_face: int | None = None, detector: str | Path | None = None) -> dict[str, Any]:
    """-> {artifact, model, image, detector, faces: [{box, score, eyes, answers, latency_ms}]},
    boxes, eyes and answers in the photo's pixels; `faces` is empty where no face was found.
    `detector`: a detector artifact to find the faces with (default: the run's own, `run_detector`)."""
    folder = artifact_dir(artifact)
    detector_folder = artifact_dir(detector) if detector else None
    image = load_image(image_path)
    min_face = min_face or MIN_FACE
    with converter_log(Path(os.devnull)):  # the runtimes' INFO lines; --debug shows them
        runner = open_runner(folder, threads)
        manifest = runner.manifest
        pre = manifest["preprocessing"]
        faces: list[dict] = []
        if is_detector(manifest):  # it is the detector: the whole photo is its input
            faces, jobs, detect = detector_faces(runner, image), [], False
        elif detect:
            rule = pre.get("alignment")
            if rule is None:
                raise KtedgeError(f"{folder}: its manifest states no alignment (the model has no points output "
                                  f"naming eye centres); give --no-detect and a photo cropped around the face")
            detector_folder = detector_folder or run_detector(folder)
            frames = None
            if detector_folder is not None:
                detector_runner = open_runner(detector_folder, threads)
                if not is_detector(detector_runner.manifest):
                    raise KtedgeError(f"--detector {detector_folder}: not a detector artifact (no "
                                      f"anchor_detections output)")
                frames = artifact_detector(detector_runner)
            found = find_faces(image, min_face, frames)
            jobs = [(d, *aligned_input(image, rule, d.keypoint("right_eye"), d.keypoint("left_eye")))
                    for d in found]
        else:
            try:
                x, crop = face_crop(image, pre["crop_size"])
            except KtedgeError as e:
                raise KtedgeError(f"{image_path}: {e}") from None
            jobs = [(None, x, crop.to_photo(pre["crop_size"]))]
        for det, x, m in jobs:
            start = time.perf_counter()
            outputs = runner(x)
            ms = 1e3 * (time.perf_counter() - start)
            size = pre["crop_size"]
            corners = [m @ [c, r, 1.0] for c, r in ((0, 0), (size, 0), (size, size), (0, size))]
            faces.append({
                "box": det.box.tolist() if det else [*np.min(corners, 0).tolist(), *np.max(corners, 0).tolist()],
                "score": det.score if det else None,
                "eyes": [det.keypoint("right_eye").tolist(), det.keypoint("left_eye").tolist()] if det else None,
                "input_to_photo": m.tolist(), "answers": decode(outputs, manifest, m), "latency_ms": ms})
    return {"artifact": str(folder), "model": manifest["model"], "format": manifest["format"],
            "precision": manifest["precision"], "image": str(image_path), "image_size": list(image.shape[1::-1]),
            "detector": ({"model": "blazeface (MediaPipe face_detection_short_range weights)",
                          "artifact": str(detector_folder) if detector_folder else None,
                          "runs_in": "its artifact's runtime" if detector_folder else "PyTorch (ktedge's port)",
                          "min_face_px": min_face, "alignment": pre["alignment"]} if detect else None),
            "faces": faces}


def draw_overlay(image_path: str | Path, result: dict, manifest: dict, dest: str | Path) -> None:
    """The photo with every face's crop, points and boxes drawn on it, as PNG (written atomically)."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(load_image(image_path))
    draw = ImageDraw.Draw(image)
    size = manifest["preprocessing"]["crop_size"]
    for face in result["faces"]:
        m = np.asarray(face["input_to_photo"])
        corners = [tuple(m @ [c, r, 1.0]) for c, r in ((0, 0), (size, 0), (size, size), (0, size))]
        draw.polygon(corners, outline=(255, 255, 0))  # the model's input, as it lay in the photo
        r = max(1, round(np.hypot(m[0, 0], m[1, 0]) * size / 100))
        for spec in manifest["outputs"]:
            answer = face["answers"][spec["name"]]
            if spec["kind"] in POINT_KINDS:
                for x, y in answer:
                    draw.ellipse([x - r, y - r, x + r, y + r], fill=(0, 255, 0))
            elif spec["kind"] == "box_offsets":
                draw.rectangle(list(np.asarray(answer, float)), outline=(255, 0, 0), width=r)
            elif spec["kind"] == "anchor_detections":
                for found in answer:
                    draw.rectangle(found["box"], outline=(255, 0, 0), width=r)
                    for x, y in found["keypoints"]:
                        draw.ellipse([x - r, y - r, x + r, y + r], fill=(0, 255, 0))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    write_bytes(dest, buf.getvalue())
