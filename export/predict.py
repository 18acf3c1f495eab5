"""`ktedge predict`: one exported artifact on one photo, in its own runtime, with the manifest's
pre- and post-processing: the check a developer makes before putting the file in an app."""
from __future__ import annotations

import io
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ktedge.atomic import write_bytes
from ktedge.errors import KtedgeError
from ktedge.export.preprocess import Crop, decode, face_crop, load_image
from ktedge.export.runtimes import open_runner
from ktedge.progress import converter_log


def artifact_dir(path: str | Path) -> Path:
    """An artifact folder, or the model file inside one."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not (folder / "manifest.json").is_file():
        raise KtedgeError(f"{path}: not an exported artifact (no manifest.json beside it); "
                          f"give a folder under <run>/export/, e.g. runs/default/export/tflite-int8")
    return folder


def predict(artifact: str | Path, image_path: str | Path, threads: int = 1) -> dict[str, Any]:
    """-> {artifact, image, crop, answers, latency_ms}: answers in the original image's pixels."""
    folder = artifact_dir(artifact)
    image = load_image(image_path)
    with converter_log(Path(os.devnull)):  # the runtimes' INFO lines; --debug shows them
        runner = open_runner(folder, threads)
        manifest = runner.manifest
        try:
            x, crop = face_crop(image, manifest["preprocessing"]["crop_size"])
        except KtedgeError as e:
            raise KtedgeError(f"{image_path}: {e}") from None
        start = time.perf_counter()
        outputs = runner(x)
        latency_ms = 1e3 * (time.perf_counter() - start)
    return {"artifact": str(folder), "model": manifest["model"], "format": manifest["format"],
            "precision": manifest["precision"], "image": str(image_path), "image_size": list(image.shape[1::-1]),
            "crop": asdict(crop), "answers": decode(outputs, manifest, crop), "latency_ms": latency_ms}


def draw_overlay(image_path: str | Path, result: dict, manifest: dict, dest: str | Path) -> None:
    """The photo with the crop, points and boxes drawn on it, as PNG (written atomically)."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(load_image(image_path))
    draw = ImageDraw.Draw(image)
    crop = Crop(**result["crop"])
    draw.rectangle([crop.x0, crop.y0, crop.x0 + crop.side - 1, crop.y0 + crop.side - 1], outline=(255, 255, 0))
    r = max(1, crop.side // 100)
    for spec in manifest["outputs"]:
        answer = result["answers"][spec["name"]]
        if spec["kind"] in ("points_xy", "points_x_then_y"):
            for x, y in answer:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=(0, 255, 0))
        elif spec["kind"] == "box_offsets":
            draw.rectangle(list(np.asarray(answer, float)), outline=(255, 0, 0), width=r)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    write_bytes(dest, buf.getvalue())
