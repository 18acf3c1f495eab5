"""Synthetic faces written out as the real dataset formats' folders (PNG/JPEG images, label files
in each format's own layout), for the tests that read them back through `data.format`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ktedge.model.data.datasets import CELEBA_COLUMNS, LANDMARK_COLUMNS
from ktedge.model.data.faces import FaceSet
from ktedge.model.data.synth import ACTION_UNITS, ATTRIBUTES

# Columns CelebA has that ktedge does not read, so a test sees them skipped.
CELEBA_EXTRA = ("Male", "Young")


def _png(fs: FaceSet, i: int, path: Path) -> Path:
    Image.fromarray(fs.images[i]).save(path)
    return path


def write_pts_folder(fs: FaceSet, folder: Path) -> Path:
    """300W: face0000.png + face0000.pts, points as 1-based pixel centres."""
    folder.mkdir(parents=True, exist_ok=True)
    size = fs.images.shape[1]
    for i in range(len(fs)):
        _png(fs, i, folder / f"face{i:04d}.png")
        body = "\n".join(f"{x:.4f} {y:.4f}" for x, y in fs.landmarks[i] * size + 0.5)
        (folder / f"face{i:04d}.pts").write_text(f"version: 1\nn_points: 68\n{{\n{body}\n}}\n")
    return folder


def utkface_name(fs: FaceSet, i: int) -> str:
    """age_gender_race_datetime.jpg.chip.jpg; the date field carries the face's index."""
    return f"{int(round(float(fs.age[i])))}_{i % 2}_{i % 5}_{20170116000000000 + i}.jpg.chip.jpg"


def write_utkface_folder(fs: FaceSet, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(len(fs)):
        Image.fromarray(fs.images[i]).save(folder / utkface_name(fs, i), quality=95)
    return folder


def write_celeba_folder(fs: FaceSet, folder: Path) -> Path:
    """CelebA: list_attr_celeba.txt (count, names, `file v..` in {-1, 1}) and img_align_celeba/."""
    (folder / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    names = [*CELEBA_EXTRA[:1], *(CELEBA_COLUMNS[a] for a in ATTRIBUTES), *CELEBA_EXTRA[1:]]
    lines = [str(len(fs)), " ".join(names)]
    for i in range(len(fs)):
        _png(fs, i, folder / "img_align_celeba" / f"{i + 1:06d}.png")
        values = dict(zip(ATTRIBUTES, fs.attributes[i]))
        values["beard"] = 1 - values["beard"]  # CelebA's column is No_Beard
        row = [i % 2, *values.values(), (i // 2) % 2]
        lines.append(f"{i + 1:06d}.png " + " ".join("1" if v else "-1" for v in row))
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_csv_folder(fs: FaceSet, folder: Path, tasks: tuple[str, ...]) -> Path:
    """labels.csv with a `path` column (images under img/) and the columns of `tasks`."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    size = fs.images.shape[1]
    columns = {"landmarks": LANDMARK_COLUMNS, "age": ["age"], "attributes": list(ATTRIBUTES),
               "action_units": list(ACTION_UNITS), "expression": ["expression"], "identity": ["identity"]}
    header = ["path", *(c for t in tasks for c in columns[t])]
    rows = [",".join(header)]
    for i in range(len(fs)):
        _png(fs, i, folder / "img" / f"{i:04d}.png")
        cells = [f"img/{i:04d}.png"]
        for t in tasks:
            if t == "landmarks":
                cells += [f"{v:.4f}" for v in (fs.landmarks[i] * size).T.reshape(-1)]  # x0..x67, y0..y67
            else:
                cells += [f"{v:g}" for v in np.atleast_1d(getattr(fs, t)[i])]
        rows.append(",".join(cells))
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder
