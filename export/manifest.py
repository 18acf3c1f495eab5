"""`manifest.json`, written beside every artifact: how to feed the model, how to decode it, what
made it. One JSON Schema (manifest.schema.json) serves the Python loader and the Android app."""
from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any


from ktedge.atomic import sha256_path, size_bytes
from ktedge.errors import KtedgeError
from ktedge.schema import check, load_schema

SCHEMA_ID = "ktedge.manifest/3"  # 2: each output names its decoding kind; 3: its task, and the deployable it came from
TOOLS = ("torch", "executorch", "litert-torch", "ai-edge-litert", "coremltools", "onnx", "onnxruntime", "ethos-u-vela",
         "tosa-tools", "ktedge")


def schema() -> dict:
    return load_schema("ktedge.export", "manifest.schema.json")


def tool_versions() -> dict[str, str]:
    out = {}
    for name in TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def describe_file(path: Path) -> dict[str, Any]:
    return {"file": path.name, "size_bytes": size_bytes(path), "sha256": sha256_path(path)}


def check_manifest(data: Any, where: str) -> dict:
    """Schema errors become one line naming the manifest and the field."""
    return check(data, schema(), where, "manifest")


def load_manifest(artifact_dir: str | Path, verify_hash: bool = True) -> dict:
    """Read and check `<artifact_dir>/manifest.json`: the schema, then that the artifact it
    describes is there with the recorded size and sha256 (a swapped or torn file is refused)."""
    path = Path(artifact_dir) / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KtedgeError(f"{path}: no manifest (re-run `ktedge export`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KtedgeError(f"{path}: not valid JSON ({e})") from None
    check_manifest(data, str(path))
    artifact = path.parent / data["file"]
    if not artifact.exists():
        raise KtedgeError(f"{path}: the artifact it describes, {artifact.name}, is missing")
    if verify_hash and sha256_path(artifact) != data["sha256"]:
        raise KtedgeError(f"{artifact}: sha256 does not match its manifest (file changed or torn); re-run `ktedge export`")
    return data


def artifact_dir(run: Path, row: dict) -> Path:
    """The folder of an export/index.json row: its path is relative to the run, so a copied or
    moved run directory still points at its own files."""
    return run / Path(row["path"]).parent
