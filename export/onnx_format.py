"""ONNX `.onnx`: fp32 (torch.onnx's dynamo exporter, simplified with onnxsim) and int8 QDQ, the
file the quantize stage made and gated (quantize/onnx_int8.py). Run here in onnxruntime."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ktedge.export.registry import Exporter, Format, Invoke
from ktedge.export.source import ExportSource
from ktedge.quantize.onnx_int8 import to_onnx


def _fp32(src: ExportSource, path: Path) -> dict:
    to_onnx(src.program, src.example, [o["name"] for o in src.outputs], path)
    return {}


def _int8(src: ExportSource, path: Path) -> dict:
    shutil.copyfile(src.quantized_files["onnx"], path)
    return {}


def _open(path: Path, manifest: dict, threads: int) -> Invoke:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def invoke(x: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {name: x})
    return invoke


RUNTIME = "onnxruntime (CPU)"
FORMAT = Format("onnx", [
    Exporter("onnx-fp32", "onnx", "fp32", "float", ".onnx", RUNTIME, None, _fp32, reference=True),
    Exporter("onnx-int8", "onnx", "int8", "qdq", ".onnx", RUNTIME, "onnx", _int8, int8_ratio=True),
], open=_open, runtime_modules=["onnxruntime"])
