"""Run an exported artifact in its own runtime, with I/O handled from its manifest only:
colour order, normalisation, layout, input dtype and int8 quantization, output dequantization
(export/preprocess.py). Validation, predict and the latency harness all go through here; the
format's registry entry (export/registry.py) says how to load it and whether this machine can."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ktedge.errors import KtedgeError
from ktedge.export.manifest import load_manifest
from ktedge.export.preprocess import dequantize_output, model_input
from ktedge.export.registry import Invoke, exporter_of, formats, runs_here


class NotRunnableHere(KtedgeError):
    """The artifact's runtime is not here: not on this OS (Core ML off Apple), or not installed.
    Validation records the artifact as not run and goes on with the others."""

    def __init__(self, message: str, short: str):
        super().__init__(message)
        self.short = short  # a few words for a table cell


class Runner:
    """`runner(image)` with image (1, 3, S, S) float32 RGB 0..255 -> the outputs in manifest order."""

    def __init__(self, artifact_dir: Path, manifest: dict, invoke: Invoke):
        self.artifact_dir, self.manifest, self._invoke = artifact_dir, manifest, invoke

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        raw = self._invoke(model_input(image, self.manifest))
        return [dequantize_output(y, t).reshape(t["shape"]) for y, t in zip(raw, self.manifest["outputs"])]


def cannot_run(manifest: dict) -> str | None:
    """None where this machine runs the artifact, else why not, in a few words."""
    return None if runs_here(exporter_of(manifest)) else "Apple only"


def open_runner(artifact_dir: str | Path, threads: int = 1) -> Runner:
    """Load an artifact (manifest checked, hash verified) into its runtime."""
    artifact_dir = Path(artifact_dir)
    manifest = load_manifest(artifact_dir)
    fmt = formats()[manifest["format"]]
    why = cannot_run(manifest)
    if why is not None:
        raise NotRunnableHere(f"{artifact_dir}: {manifest['runtime']} does not run on this machine ({why})", why)
    try:
        invoke = fmt.open(artifact_dir / manifest["file"], manifest, threads)
    except (ImportError, ModuleNotFoundError) as e:
        raise NotRunnableHere(f"{artifact_dir}: the {manifest['format']} runtime is not installed ({e.name}); "
                              f"`pip install -e .` installs it", f"{e.name} not installed") from None
    return Runner(artifact_dir, manifest, invoke)
