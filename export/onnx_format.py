"""ONNX `.onnx` (torch.onnx dynamo exporter, simplified with onnxsim): fp32, and int8 QDQ made by
onnxruntime's static quantizer calibrated on the same held-out faces as the PT2E programs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ktedge.export.registry import Exporter
from ktedge.export.source import ExportSource

OPSET = 18


def _fp32(src: ExportSource, path: Path) -> dict:
    import onnx
    import onnxsim
    import torch

    names = [o["name"] for o in src.outputs]
    raw = path.with_name("raw" + path.suffix)
    with torch.no_grad():
        torch.onnx.export(src.program.module(), (src.example,), str(raw), dynamo=True, opset_version=OPSET,
                          input_names=["image"], output_names=names, verbose=False)
    model, ok = onnxsim.simplify(onnx.load(str(raw)))
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified model")
    onnx.save(model, str(path))
    raw.unlink()
    for extra in path.parent.glob("raw*"):  # external-data side files of the raw export
        extra.unlink()
    return {}


class _Faces:
    """onnxruntime's CalibrationDataReader protocol over the calibration faces."""

    def __init__(self, images: np.ndarray):
        self._it = iter(images[i:i + 1] for i in range(len(images)))

    def get_next(self) -> dict | None:
        batch = next(self._it, None)
        return None if batch is None else {"image": batch}


def _int8(src: ExportSource, path: Path) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    fp32 = path.with_name("fp32" + path.suffix)
    _fp32(src, fp32)
    method = CalibrationMethod.MinMax if src.observer == "minmax" else CalibrationMethod.Percentile
    # Per-tensor weights: onnxruntime 1.32's per-channel mode scales Gemm (transB=1) weights along
    # the wrong axis, which cost 6.8 % NME on the default run against 0.5 % per-tensor.
    quantize_static(str(fp32), str(path), _Faces(src.calibration), quant_format=QuantFormat.QDQ, per_channel=False,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=method)
    fp32.unlink()
    return {"quantization": {"method": f"onnxruntime quantize_static, QDQ, {method.name} calibration",
                             "weights": "int8 symmetric per-tensor", "activations": "int8 per-tensor",
                             "float_layers": []}}


RUNTIME = "onnxruntime (CPU)"
EXPORTERS = [
    Exporter("onnx-fp32", "onnx", "fp32", "float", ".onnx", RUNTIME, None, _fp32),
    Exporter("onnx-int8", "onnx", "int8", "qdq", ".onnx", RUNTIME, None, _int8),
]
