"""One registry of exporters. A format is one module listing its `EXPORTERS`; adding a format is
adding that module here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ktedge.export.source import ExportSource


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
    backend: str | None  # the int8 PT2E program it lowers, or None for the float program
    build: Callable[[ExportSource, Path], dict]


def exporters() -> dict[str, list[Exporter]]:
    from ktedge.export import coreml_format, executorch_format, onnx_format, tflite_format

    return {"executorch": executorch_format.EXPORTERS, "tflite": tflite_format.EXPORTERS,
            "coreml": coreml_format.EXPORTERS, "onnx": onnx_format.EXPORTERS}


FORMATS = ("executorch", "tflite", "coreml", "onnx")
