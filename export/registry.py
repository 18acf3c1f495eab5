"""One registry of formats. A format is one module (`<format>_format.py`) whose `FORMAT` owns
everything about it: the artifacts it builds, the runtime that runs them, whether this machine
can, and what can be checked of an artifact where it cannot run. Adding a format is adding that
module here; no other module spells a format's or an artifact's name."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import platform

import numpy as np

if TYPE_CHECKING:
    from ktedge.export.source import ExportSource

Invoke = Callable[[np.ndarray], list[np.ndarray]]  # the model input as the manifest says -> raw outputs


@dataclass(frozen=True)
class Exporter:
    """One artifact: `build` writes the model file (or .mlpackage folder) at the given path and
    returns what the manifest must say beyond the defaults (input/outputs dtype and layout,
    quantization parameters, notes)."""
    name: str  # the artifact folder: <format>-<precision>[-<variant>]
    format: str
    precision: str
    variant: str
    suffix: str
    runtime: str
    backend: str | None  # the quantize stage's int8 program it converts, or None for the float program
    build: Callable[["ExportSource", Path], dict]
    reference: bool = False  # the format's fp32 artifact: ratios' denominator, the comparison models' format
    int8_ratio: bool = False  # the int8 artifact the int8 / fp32 ratios of its format take
    apple_only: bool = False  # runs on macOS / iOS only (Core ML): checked structurally elsewhere


@dataclass(frozen=True)
class Format:
    name: str
    exporters: list[Exporter]
    # (model file, manifest, threads) -> invoke; raises ImportError where the runtime is not installed
    open: Callable[[Path, dict, int], Invoke]
    runtime_modules: list[str] = field(default_factory=list)  # what `open` imports: not timed as load
    # What can be checked of an artifact where it cannot run: -> {"structure": {...}, "passed": bool}
    structure: Callable[[Path, dict], dict] | None = None
    # Where the file's ops run, read from the file (manifest `placement`, summary rows, the report):
    # model file -> {"runtime", "delegate", "partitions", "outside": {op: n}, "float_ops": {op: n}, ...}
    placement: Callable[[Path], dict] | None = None
    # Where `open` runs a reference of the target's numerics, not the target (the Ethos-U's TOSA
    # graph): its artifacts are validated here but never timed; manifest -> the target's own speed
    # estimate {"target", "by", "inference_ms", ...}, what the bench and summary quote instead
    estimate: Callable[[dict], dict] | None = None


def formats() -> dict[str, Format]:
    from ktedge.export import coreml_format, ethosu_format, executorch_format, onnx_format, tflite_format

    return {f.name: f for f in (executorch_format.FORMAT, tflite_format.FORMAT, coreml_format.FORMAT,
                                onnx_format.FORMAT, ethosu_format.FORMAT)}


def exporters() -> dict[str, list[Exporter]]:
    return {name: f.exporters for name, f in formats().items()}


def by_name() -> dict[str, Exporter]:
    return {e.name: e for f in formats().values() for e in f.exporters}


def exporter_of(manifest: dict) -> Exporter:
    """The registry entry that made an artifact, from its manifest."""
    from ktedge.errors import KtedgeError

    key = (manifest["format"], manifest["precision"], manifest["variant"])
    found = next((e for e in formats()[manifest["format"]].exporters if (e.format, e.precision, e.variant) == key), None)
    if found is None:
        raise KtedgeError(f"a {' '.join(key)} artifact: this ktedge makes no such artifact (an older export?); "
                          f"re-export it with `ktedge export`")
    return found


def runs_here(exp: Exporter) -> bool:
    return not exp.apple_only or platform.system() == "Darwin"


def reference_exporters() -> list[Exporter]:
    """Each format's fp32 artifact whose runtime runs here: what the comparison models export to."""
    return [e for f in formats().values() for e in f.exporters if e.reference and runs_here(e)]


FORMATS = ("executorch", "tflite", "coreml", "onnx", "ethosu")
