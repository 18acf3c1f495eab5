"""The faces of a run's splits: synthetic (the default), or read from a dataset folder in a real
format (`data.format`). A folder's images are face-cropped and resized exactly as `ktedge predict`
and the Android app prepare a photo, so a model trains on what it will see deployed.

Formats (each a folder, `data.train_dir`; `data.val_dir` the same layout, or "" to hold out one
face in six of the training folder, picked by the run's seed):
  pts      300W / iBUG: every image with a same-named `.pts` of 68 points beside it -> landmarks
  utkface  UTKFace: `age_gender_race_datetime.jpg[.chip.jpg]` file names -> age
  celeba   CelebA: `list_attr_celeba.txt`, images beside it or in `img_align_celeba/` -> attributes
  csv      `labels.csv`: a `path` column and any of: x0..x67 + y0..y67 (landmark pixels), age,
           the attribute names, the action-unit names (0/1 each), expression (class index),
           identity (index < data.n_identities)
  lfw      no folder: scikit-image's `lfw_subset`, 100 real LFW face crops and 100 non-face crops
           (25 x 25 grey, upsampled) -> face / not face; every fifth calibrates, the rest are held out
  mesh_crops   no folder: FaceMesh's crops of the 8 real faces of model/data/photos.py -> mesh
           (MediaPipe's own FaceMesh points on each crop); calibration and held-out crops are different jitters
  face_frames  no folder: BlazeFace's 128-px frames of the real photos and of photos without a face
           -> detection (MediaPipe's own detector's boxes on each frame)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ktedge.atomic import sha256_file, sha256_json
from ktedge.errors import KtedgeError
from ktedge.model.data.faces import FaceSet, generate_faces, split_seed
from ktedge.model.data.parsers import parse_utkface_name, read_celeba_attributes, read_label_csv, read_pts
from ktedge.model.data.synth import ACTION_UNITS, ATTRIBUTES, EXPRESSIONS, NUM_LANDMARKS

if TYPE_CHECKING:
    from ktedge.config import Config  # config imports this module to check data.format

FORMATS = ("synthetic", "pts", "utkface", "celeba", "csv", "lfw", "mesh_crops", "face_frames")
BUILT_IN = ("synthetic", "lfw", "mesh_crops", "face_frames")  # the formats that read no folder
# The real-photo formats (model/data/photos.py): the one task each labels, and its set.
PHOTO_FORMATS = {"mesh_crops": ("mesh", "facemesh_faces", "source"),
                 "face_frames": ("detection", "detector_frames", "frames_source")}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VAL_EVERY = 6  # with no val_dir, one face in six of the training folder is held out
# Our attribute names -> CelebA's columns; `beard` is CelebA's No_Beard inverted.
CELEBA_COLUMNS = {"smiling": "Smiling", "mouth_open": "Mouth_Slightly_Open", "eyeglasses": "Eyeglasses",
                  "beard": "No_Beard", "mustache": "Mustache", "bangs": "Bangs", "bushy_eyebrows": "Bushy_Eyebrows",
                  "rosy_cheeks": "Rosy_Cheeks", "wearing_hat": "Wearing_Hat"}
CELEBA_INVERTED = ("beard",)
LANDMARK_COLUMNS = [f"x{i}" for i in range(NUM_LANDMARKS)] + [f"y{i}" for i in range(NUM_LANDMARKS)]


@dataclass(frozen=True)
class Item:
    """One labelled image of a dataset folder; landmarks in the image's pixels, (0, 0) its top-left corner."""
    path: Path
    labels: dict[str, np.ndarray]


def split_faces(cfg: Config, split: str, tasks: tuple[str, ...] | list[str] = (), n: int | None = None,
                on_progress: Callable[[int], None] | None = None) -> FaceSet:
    """The faces of `split` (train, val, calibration, test), the first `n` of them, refusing a set
    without labels for `tasks`. A dataset folder has no third split: `test` is its held-out set,
    `calibration` its training set."""
    d = cfg.data
    if d.format == "synthetic":
        count = n if n is not None else {"train": d.n_train, "val": d.n_val}[split]
        return generate_faces(count, split_seed(cfg.seed, split), d.image_size, d.n_identities, on_progress)
    if d.format == "lfw":
        missing = [t for t in tasks if t != "face"]
        if missing:
            raise KtedgeError(f"data.format lfw labels only face / not face (missing: {', '.join(missing)})")
        return lfw_faces("train" if split in ("train", "calibration") else "val", d.image_size).subset(slice(0, n))
    if d.format in PHOTO_FORMATS:
        from ktedge.model.data import photos

        task, make, _ = PHOTO_FORMATS[d.format]
        missing = [t for t in tasks if t != task]
        if missing:
            raise KtedgeError(f"data.format {d.format} labels only {task} (missing: {', '.join(missing)})")
        faces = getattr(photos, make)("train" if split in ("train", "calibration") else "val", d.image_size)
        return faces.subset(slice(0, n))
    items = dataset_items(cfg, "train" if split in ("train", "calibration") else "val")
    labelled = _labelled(items)
    missing = [t for t in tasks if t not in labelled]
    if missing:  # before any image is read
        raise KtedgeError(f"{_folder(cfg, split)}: this run trains or checks {', '.join(tasks)}, but a "
                          f"data.format {d.format} set labels only {', '.join(labelled) or 'nothing'} "
                          f"(missing: {', '.join(missing)}); README \"Your own data\" lists what each format carries")
    fs = load_items(items[:n], d.image_size, on_progress)
    if (split == "train" and len(fs) < 16) or (split == "val" and len(fs) < 4):
        raise KtedgeError(f"{_folder(cfg, split)}: only {len(fs)} {split} faces; a run needs 16 to train, 4 held out")
    if "identity" in fs.labelled and fs.identity.max() >= d.n_identities:
        raise KtedgeError(f"{_folder(cfg, split)}: identity {fs.identity.max()} is not below data.n_identities "
                          f"({d.n_identities}); raise it to the number of people in the set")
    return fs


def held_out_source(cfg: Config, split: str = "test") -> str:
    """Where a held-out split's faces come from, in words for reports (val: training's; test: int8's gate)."""
    d = cfg.data
    if d.format == "synthetic":
        return f"synthetic held-out {split} split (exact labels)"
    if d.format == "lfw":
        return "real LFW crops of scikit-image's lfw_subset (80 faces, 80 non-faces; the other 40 calibrate)"
    if d.format in PHOTO_FORMATS:
        from ktedge.model.data import photos

        return getattr(photos, PHOTO_FORMATS[d.format][2])("val")
    folder = Path(d.val_dir or d.train_dir).resolve()
    return f"{d.format} faces of {folder}" if d.val_dir else f"{d.format} faces held out from {folder} (1 in {VAL_EVERY})"


def dataset_digest(cfg: Config) -> str | None:
    """What the dataset folders hold (every file's hash), so `ktedge run` retrains when they change."""
    if cfg.data.format in BUILT_IN:
        return None
    folders = [Path(p) for p in (cfg.data.train_dir, cfg.data.val_dir) if p]
    return sha256_json([[str(f.relative_to(root)), sha256_file(f)] for root in folders
                        for f in sorted(root.rglob("*")) if f.is_file()])


def dataset_items(cfg: Config, split: str) -> list[Item]:
    """The labelled images of the train or val split, in a fixed order."""
    d = cfg.data
    if split == "val" and d.val_dir:
        return READERS[d.format](_existing(d.val_dir, "data.val_dir"))
    items = READERS[d.format](_existing(d.train_dir, "data.train_dir"))
    if d.val_dir:
        return items
    held_out = set(np.random.default_rng([cfg.seed, len(items)]).permutation(len(items))[:len(items) // VAL_EVERY])
    return [it for i, it in enumerate(items) if (i in held_out) == (split == "val")]


def load_items(items: list[Item], size: int, on_progress: Callable[[int], None] | None = None) -> FaceSet:
    """Images -> the model's crop (uint8, rounded: a CelebA-sized set stays in memory), labels ->
    the FaceSet's arrays, landmarks normalised to the crop; labels a format lacks are NaN or -1."""
    from ktedge.export.preprocess import face_crop, load_image

    n = len(items)
    fs = FaceSet(np.empty((n, size, size, 3), np.uint8), np.full((n, NUM_LANDMARKS, 2), np.nan, np.float32),
                 np.full(n, np.nan, np.float32), np.full((n, len(ATTRIBUTES)), np.nan, np.float32),
                 np.full((n, len(ACTION_UNITS)), np.nan, np.float32), np.full(n, -1, np.int64),
                 np.full(n, -1, np.int64), np.full((n, 2), np.nan, np.float32), labelled=_labelled(items))
    for i, item in enumerate(items):
        try:
            crop, box = face_crop(load_image(item.path), size)
        except KtedgeError as e:
            msg = str(e)
            raise KtedgeError(msg if msg.startswith(str(item.path)) else f"{item.path}: {msg}") from None
        fs.images[i] = np.clip(np.rint(crop[0].transpose(1, 2, 0)), 0, 255)
        for task, value in item.labels.items():
            if task == "landmarks":
                value = (value - [box.x0, box.y0]) / box.side
            getattr(fs, task)[i] = value
        if on_progress is not None and (i + 1) % 100 == 0:
            on_progress(100)
    return fs


def lfw_faces(split: str, size: int) -> FaceSet:
    """scikit-image's lfw_subset as a face set: 100 real LFW face crops, then 100 non-face crops,
    25 x 25 grey, upsampled (bilinear) to `size` with the grey repeated in R, G and B. Every fifth
    crop (20 faces, 20 non-faces) is the train / calibration split; the other 160 are held out,
    faces and non-faces taking turns."""
    import torch
    from skimage import data

    grey = torch.from_numpy(data.lfw_subset().astype(np.float32) * 255.0)[:, None]  # (200, 1, 25, 25)
    rgb = torch.nn.functional.interpolate(grey, size=(size, size), mode="bilinear", align_corners=False)
    images = rgb.repeat(1, 3, 1, 1).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    face = np.r_[np.ones(100), np.zeros(100)].astype(np.int64)
    # Faces and non-faces alternate, so the first n of a split (quantize.eval_faces) hold both alike.
    order = np.stack([np.arange(100), np.arange(100, 200)], 1).reshape(-1)
    keep = order[(order % 5 == 0) == (split == "train")]
    return FaceSet.unlabelled(images[keep], face=face[keep], labelled=("face",))


def _labelled(items: list[Item]) -> tuple[str, ...]:
    return tuple(items[0].labels) if items else ()


def _existing(folder: str, key: str) -> Path:
    path = Path(folder)
    if not folder:
        raise KtedgeError(f"{key} is empty; a data.format other than synthetic reads its faces from a folder")
    if not path.is_dir():
        raise KtedgeError(f"{path}: {key} is not a folder")
    return path


def _folder(cfg: Config, split: str) -> str:
    return cfg.data.val_dir if split in ("val", "test") and cfg.data.val_dir else cfg.data.train_dir


def _images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise KtedgeError(f"{folder}: holds no PNG or JPEG images")
    return files


def read_pts_folder(folder: Path) -> list[Item]:
    """300W: image + `.pts` pairs. 300W points are 1-based pixel centres (Matlab's convention):
    pixel k's centre is k + 1 there and k + 0.5 in ours, hence the 0.5 taken off."""
    items = []
    for image in _images(folder):
        pts_path = image.with_suffix(".pts")
        if not pts_path.is_file():
            raise KtedgeError(f"{image}: no {pts_path.name} beside it (data.format pts pairs every image with its points)")
        pts = read_pts(pts_path)
        if len(pts) != NUM_LANDMARKS:
            raise KtedgeError(f"{pts_path}: {len(pts)} points; the landmark head predicts the 68-point iBUG layout")
        items.append(Item(image, {"landmarks": pts - 0.5}))
    return items


def read_utkface_folder(folder: Path) -> list[Item]:
    return [Item(image, {"age": np.float32(parse_utkface_name(image.name).age)}) for image in _images(folder)]


def read_celeba_folder(folder: Path) -> list[Item]:
    table = read_celeba_attributes(folder / "list_attr_celeba.txt")
    missing = [c for c in CELEBA_COLUMNS.values() if c not in table.names]
    if missing:
        raise KtedgeError(f"{folder / 'list_attr_celeba.txt'}: no column {missing[0]} (needed for the attributes "
                          f"{', '.join(ATTRIBUTES)})")
    columns = [table.names.index(CELEBA_COLUMNS[a]) for a in ATTRIBUTES]
    values = table.values[:, columns].astype(np.float32)
    inverted = [ATTRIBUTES.index(a) for a in CELEBA_INVERTED]
    values[:, inverted] = 1 - values[:, inverted]
    images = folder / "img_align_celeba" if (folder / "img_align_celeba").is_dir() else folder
    items = []
    for name, row in zip(table.files, values):
        if not (images / name).is_file():
            raise KtedgeError(f"{folder / 'list_attr_celeba.txt'}: lists {name}, which is not in {images}")
        items.append(Item(images / name, {"attributes": row}))
    return items


def read_csv_folder(folder: Path) -> list[Item]:
    path = folder / "labels.csv"
    table = read_label_csv(path)
    col = {name: i for i, name in enumerate(table.columns)}
    groups = {"landmarks": LANDMARK_COLUMNS, "age": ["age"], "attributes": list(ATTRIBUTES),
              "action_units": list(ACTION_UNITS), "expression": ["expression"], "identity": ["identity"]}
    tasks = []
    for task, names in groups.items():
        present = [c for c in names if c in col]
        if present and len(present) < len(names):
            missing = [c for c in names if c not in col]
            raise KtedgeError(f"{path}:1: has {present[0]} but not {missing[0]}: {task} needs all of its "
                              f"{len(names)} columns ({names[0]} .. {names[-1]})")
        if present:
            tasks.append(task)
    if not tasks:
        raise KtedgeError(f"{path}:1: no label columns; expected any of x0..x67 + y0..y67, age, "
                          f"{', '.join(ATTRIBUTES)}, {', '.join(ACTION_UNITS)}, expression, identity")
    labels = {t: table.labels[:, [col[c] for c in groups[t]]] for t in tasks}
    for t in ("attributes", "action_units"):
        if t in labels and not np.isin(labels[t], (0, 1)).all():
            raise KtedgeError(f"{path}: data row {_first(~np.isin(labels[t], (0, 1)).any(1))}: {t} columns must be 0 or 1")
    if "expression" in labels:
        e = labels["expression"][:, 0]
        bad = (e != np.round(e)) | (e < 0) | (e >= len(EXPRESSIONS))
        if bad.any():
            raise KtedgeError(f"{path}: data row {_first(bad)}: expression must be a class index 0..{len(EXPRESSIONS) - 1} "
                              f"({', '.join(EXPRESSIONS)})")
    if "identity" in labels:
        ident = labels["identity"][:, 0]
        bad = (ident != np.round(ident)) | (ident < 0)
        if bad.any():
            raise KtedgeError(f"{path}: data row {_first(bad)}: identity must be a person index 0, 1, 2, ..")
    items = []
    for i, image in enumerate(table.paths):
        row = {}
        for t, v in labels.items():
            if t == "landmarks":
                row[t] = v[i].reshape(2, NUM_LANDMARKS).T  # x0..x67, y0..y67 -> (68, 2)
            elif t in ("age", "expression", "identity"):
                row[t] = v[i, 0]
            else:
                row[t] = v[i]
        items.append(Item(image, row))
    return items


def _first(bad: np.ndarray) -> int:
    return int(np.argmax(bad)) + 1


READERS: dict[str, Callable[[Path], list[Item]]] = {
    "pts": read_pts_folder, "utkface": read_utkface_folder, "celeba": read_celeba_folder, "csv": read_csv_folder}
