"""ONNX as a quantize backend: the float program -> an ONNX graph (torch.onnx's dynamo exporter,
simplified with onnxsim) -> int8 QDQ by onnxruntime's static quantizer, calibrated on the same
faces as the PT2E backends and gated by the same task gate in onnxruntime itself. The export
stage's onnx-fp32 artifact is the same float conversion; onnx-int8 is this stage's file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

OPSET = 18


def to_onnx(program: torch.export.ExportedProgram, example: torch.Tensor, output_names: list[str], path: Path) -> None:
    """A batch-1 program -> a simplified ONNX file at `path` (input `image`, outputs by name)."""
    import onnx
    import onnxsim

    raw = path.with_name("raw" + path.suffix)
    with torch.no_grad():
        torch.onnx.export(program, (example,), str(raw), dynamo=True, opset_version=OPSET,
                          input_names=["image"], output_names=output_names, verbose=False)
    model, ok = onnxsim.simplify(onnx.load(str(raw)))
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified model")
    onnx.save(model, str(path))
    for extra in path.parent.glob("raw*"):  # the raw export and its external-data side files
        extra.unlink()


class _Faces:
    """onnxruntime's CalibrationDataReader protocol over the calibration faces."""

    def __init__(self, images: np.ndarray):
        self._it = iter(images[i:i + 1] for i in range(len(images)))

    def get_next(self) -> dict | None:
        batch = next(self._it, None)
        return None if batch is None else {"image": batch}


def quantize_onnx(fp32: Path, calibration: np.ndarray, path: Path, observer: str) -> str:
    """fp32 ONNX -> int8 QDQ at `path`. -> the method, for the manifest."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = CalibrationMethod.MinMax if observer == "minmax" else CalibrationMethod.Percentile
    # Per-channel weights for convolutions only (their output channels, axis 0): per-tensor, one
    # depthwise filter's scale serves all of them (BlazeFace int8 lost 3 faces of 122). Linear
    # layers stay per-tensor: onnxruntime 1.32's per-channel mode scaled Gemm (transB=1) weights
    # along the wrong axis, which cost 6.8 % NME on the default run against 0.5 % per-tensor.
    # Activations uint8, weights int8 (U8S8): onnxruntime's x86 CPU kernels fuse U8S8 QDQ groups into
    # QLinearConv / QLinearAdd / QLinearMul; with int8 activations (S8S8) it left half the convolutions
    # and every add and mul in float between Q/DQ pairs, and int8 ran 1.7-4.8x slower than fp32.
    quantize_static(str(fp32), str(path), _Faces(calibration), quant_format=QuantFormat.QDQ, per_channel=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                    extra_options={"TensorQuantOverrides": {w: [{"axis": 0}] for w in conv_weights(fp32)}})
    return f"onnxruntime quantize_static, QDQ U8S8, {method.name} calibration, conv weights per channel"


def conv_weights(path: Path) -> list[str]:
    """The names of the ONNX file's Conv weight initializers."""
    import onnx

    model = onnx.load(str(path))
    initializers = {i.name for i in model.graph.initializer}
    return [n.input[1] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in initializers]


def run_onnx(path: Path, images: np.ndarray) -> list[np.ndarray]:
    """Every image through the ONNX file one at a time (as a phone runs it) -> stacked outputs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = [session.run(None, {"image": images[i:i + 1]}) for i in range(len(images))]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]
