"""Parsers for real face-dataset formats; a malformed file is a KtedgeError naming file and line."""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ktedge.errors import KtedgeError


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise KtedgeError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise KtedgeError(f"{path}: not a UTF-8 text file (byte {e.start})") from None


def read_pts(path: str | Path) -> np.ndarray:
    """A 300W/iBUG `.pts` file -> (n_points, 2) float32 pixel coordinates.

    version: 1
    n_points: 68
    {
    x y          (one line per point)
    }
    """
    path = Path(path)
    lines = [ln.strip() for ln in _read_lines(path)]
    i = 0

    def next_line(expected: str) -> tuple[int, str]:
        nonlocal i
        while i < len(lines) and not lines[i]:
            i += 1
        if i >= len(lines):
            raise KtedgeError(f"{path}:{i + 1}: unexpected end of file, expected {expected}")
        i += 1
        return i, lines[i - 1]

    ln, text = next_line("'version: 1'")
    if not re.fullmatch(r"version:\s*\d+(\.\d+)?", text):
        raise KtedgeError(f"{path}:{ln}: expected 'version: 1', got {text[:40]!r}")
    ln, text = next_line("'n_points: N'")
    m = re.fullmatch(r"n_points:\s*(\d+)", text)
    if not m:
        raise KtedgeError(f"{path}:{ln}: expected 'n_points: N', got {text[:40]!r}")
    n = int(m.group(1))
    if n == 0:
        raise KtedgeError(f"{path}:{ln}: n_points is 0")
    ln, text = next_line("'{'")
    if text != "{":
        raise KtedgeError(f"{path}:{ln}: expected '{{', got {text[:40]!r}")
    pts = np.empty((n, 2), np.float32)
    for k in range(n):
        ln, text = next_line(f"point {k + 1} of {n}")
        parts = text.split()
        try:
            if len(parts) != 2:
                raise ValueError
            pts[k] = [float(parts[0]), float(parts[1])]
            if not np.isfinite(pts[k]).all():
                raise ValueError
        except ValueError:
            raise KtedgeError(f"{path}:{ln}: point {k + 1} of {n} must be two numbers 'x y', got {text[:40]!r}") from None
    ln, text = next_line("'}'")
    if text != "}":
        raise KtedgeError(f"{path}:{ln}: expected '}}' after {n} points, got {text[:40]!r}")
    return pts


@dataclass(frozen=True)
class UTKFaceLabel:
    age: int
    gender: int  # 0 male, 1 female
    race: int  # 0..4
    date: str


_UTK = re.compile(r"(\d{1,3})_([01])_([0-4])_(\d{17})\.jpg(\.chip\.jpg)?")


def parse_utkface_name(name: str) -> UTKFaceLabel:
    """UTKFace file names: `[age]_[gender]_[race]_[date&time].jpg`, e.g. `26_1_0_20170116174525125.jpg`."""
    base = Path(name).name
    m = _UTK.fullmatch(base)
    if not m:
        raise KtedgeError(f"{name}: not a UTKFace name 'age_gender_race_yyyymmddHHMMSSfff.jpg'")
    age = int(m.group(1))
    if not 0 <= age <= 116:
        raise KtedgeError(f"{name}: age {age} is outside UTKFace's 0..116")
    return UTKFaceLabel(age, int(m.group(2)), int(m.group(3)), m.group(4))


@dataclass(frozen=True)
class CelebAAttributes:
    names: list[str]
    files: list[str]
    values: np.ndarray  # (N, A) int8 in {0, 1}


def read_celeba_attributes(path: str | Path) -> CelebAAttributes:
    """CelebA `list_attr_celeba.txt`: a count line, a line of attribute names, then `file v1 .. vA` with v in {-1, 1}."""
    path = Path(path)
    lines = _read_lines(path)
    if len(lines) < 2:
        raise KtedgeError(f"{path}:{len(lines) + 1}: expected a count line and a header line")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise KtedgeError(f"{path}:1: expected the number of images, got {lines[0][:40]!r}") from None
    names = lines[1].split()
    if not names:
        raise KtedgeError(f"{path}:2: expected attribute names")
    files, rows = [], []
    for ln, text in enumerate(lines[2:], start=3):
        if not text.strip():
            continue
        parts = text.split()
        if len(parts) != len(names) + 1:
            raise KtedgeError(f"{path}:{ln}: expected a file name and {len(names)} values, got {len(parts)} fields")
        if any(v not in ("1", "-1") for v in parts[1:]):
            raise KtedgeError(f"{path}:{ln}: attribute values must be 1 or -1")
        files.append(parts[0])
        rows.append([v == "1" for v in parts[1:]])
    if len(files) != count:
        raise KtedgeError(f"{path}:1: header says {count} images, the file lists {len(files)}")
    return CelebAAttributes(names, files, np.array(rows, np.int8).reshape(len(files), len(names)))


@dataclass(frozen=True)
class LabelTable:
    columns: list[str]  # label columns, in file order
    paths: list[Path]  # image paths, resolved against the CSV's folder
    labels: np.ndarray  # (N, len(columns)) float32


def read_label_csv(path: str | Path, path_column: str = "path") -> LabelTable:
    """A CSV of image path + numeric labels, e.g. `path,age,smiling`; paths relative to the CSV."""
    path = Path(path)
    lines = _read_lines(path)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise KtedgeError(f"{path}:1: empty CSV, expected a header with a '{path_column}' column") from None
    except csv.Error as e:
        raise KtedgeError(f"{path}:1: {e}") from None
    header = [h.strip() for h in header]
    if path_column not in header:
        raise KtedgeError(f"{path}:1: no '{path_column}' column in the header {header}")
    if len(set(header)) != len(header):
        raise KtedgeError(f"{path}:1: duplicate column names in the header {header}")
    pi = header.index(path_column)
    columns = [h for h in header if h != path_column]
    paths, rows = [], []
    try:
        for row in reader:
            ln = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise KtedgeError(f"{path}:{ln}: expected {len(header)} fields, got {len(row)}")
            if not row[pi].strip():
                raise KtedgeError(f"{path}:{ln}: empty image path")
            values = []
            for name, cell in zip(header, row):
                if name == path_column:
                    continue
                try:
                    v = float(cell)
                except ValueError:
                    raise KtedgeError(f"{path}:{ln}: column '{name}' must be a number, got {cell[:40]!r}") from None
                if not np.isfinite(v):
                    raise KtedgeError(f"{path}:{ln}: column '{name}' is not finite")
                values.append(v)
            paths.append(path.parent / row[pi].strip())
            rows.append(values)
    except csv.Error as e:
        raise KtedgeError(f"{path}:{reader.line_num}: {e}") from None
    return LabelTable(columns, paths, np.array(rows, np.float32).reshape(len(rows), len(columns)))
