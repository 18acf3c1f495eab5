"""Atomic writes and content hashes: an interrupted stage never leaves a half file."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from ktedge.errors import KtedgeError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path with the same file name, in a hidden folder beside `path` (tools
    that read the name, e.g. torch.export's .pt2 archive, see the real one); rename it into
    place only if the block succeeds. A file or a folder (.mlpackage) may be written there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp_path = tmp_dir / path.name
    try:
        yield tmp_path
        if tmp_path.is_file():
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp_path, path)
    except OSError as e:  # disk full, quota: name the file the user knows, not the temp one
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def remove_stale_temps(root: str | os.PathLike) -> list[Path]:
    """Delete what writes killed mid-way left behind (atomic_path's hidden temp folders); nothing
    trusts them, they only take space. Call only when no other stage writes under `root`."""
    stale = [p for p in Path(root).rglob(".*.tmp") if p.is_dir()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_serialized(path: str | os.PathLike, save: Callable[[BinaryIO], None]) -> None:
    """`save(buffer)` in memory, then an atomic write: on a full disk torch's own file writers abort
    the process (torch.export.save) or raise a bare RuntimeError (torch.save); Python's write
    raises an OSError that names the file. Models here are a few MB."""
    buffer = io.BytesIO()
    save(buffer)
    write_bytes(path, buffer.getvalue())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_path(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder (an .mlpackage) as its relative paths and contents in order."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def size_bytes(path: str | os.PathLike) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


def matches_record(path: str | os.PathLike, record: str | os.PathLike, key: str) -> bool:
    """Whether `path` is still the file the stage that wrote it recorded under `key` in `record`."""
    rec = read_json(record)
    return rec is not None and Path(path).is_file() and rec.get(key) == sha256_file(path)


def verify_record(path: str | os.PathLike, record: str | os.PathLike, key: str, fix: str) -> None:
    """Refuse an input whose sha256 differs from its writer's record, naming both files."""
    rec = read_json(record)
    if rec is not None and rec.get(key) is not None and Path(path).is_file() and rec[key] != sha256_file(path):
        raise KtedgeError(f"{path}: its sha256 is not the one {record} recorded when it was written "
                          f"(changed or damaged since); {fix}")


def read_json(path: str | os.PathLike) -> Any | None:
    """A JSON file's content, or None where it is missing or torn (a stage then reruns)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
