"""The images int8 calibration sees: the synthetic held-out calibration split, or a folder of the
user's own face crops (`quantize.calibration_dir`), cropped and resized exactly as `ktedge predict`
and the Android app prepare a photo."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ktedge.atomic import sha256_file, sha256_json
from ktedge.config import Config
from ktedge.errors import KtedgeError
from ktedge.export.preprocess import face_crop, load_image
from ktedge.model.data.datasets import dataset_digest, split_faces
from ktedge.model.data.faces import split_seed

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _image_files(cfg: Config) -> list[Path]:
    """The first `calibration_faces` images of the folder, in name order; refuses too few."""
    q = cfg.quantize
    folder = Path(q.calibration_dir)
    if not folder.is_dir():
        raise KtedgeError(f"{folder}: quantize.calibration_dir is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise KtedgeError(f"{folder}: quantize.calibration_dir holds no PNG or JPEG images; put face crops there, "
                          f"or set it to \"\" to calibrate on synthetic faces")
    if len(files) < q.calibration_faces:
        raise KtedgeError(f"{folder}: quantize.calibration_dir holds {len(files)} images but "
                          f"quantize.calibration_faces asks for {q.calibration_faces}; add face crops or lower it")
    return files[:q.calibration_faces]


def calibration_digest(cfg: Config) -> str | None:
    """What the folder's images are (their hashes), so `ktedge run` re-quantizes when they change."""
    if not cfg.quantize.calibration_dir:
        return None
    return sha256_json([[p.name, sha256_file(p)] for p in _image_files(cfg)])


def calibration_set(cfg: Config) -> tuple[np.ndarray, dict]:
    """-> (N, 3, S, S) float32 RGB 0..255, and what they are (for calibration.json)."""
    q, d = cfg.quantize, cfg.data
    if not q.calibration_dir:
        images = split_faces(cfg, "calibration", n=q.calibration_faces).tensors()["image"].numpy()
        if d.format == "synthetic":
            return images, {"source": "synthetic faces, held-out calibration split",
                            "seed": split_seed(cfg.seed, "calibration"), "indices": [0, len(images) - 1],
                            "count": len(images)}
        return images, {"source": f"the first {len(images)} training faces of {Path(d.train_dir).resolve()} "
                                  f"(data.format {d.format})", "count": len(images), "sha256": dataset_digest(cfg)}
    files = _image_files(cfg)
    crops = []
    for path in files:
        try:
            crops.append(face_crop(load_image(path), d.image_size)[0])
        except KtedgeError as e:
            msg = str(e)
            raise KtedgeError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    return np.concatenate(crops), {"source": str(Path(q.calibration_dir).resolve()), "count": len(files),
                                   "files": [p.name for p in files], "sha256": calibration_digest(cfg)}
