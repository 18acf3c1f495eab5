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


def _placement(path: Path) -> dict:
    """The graph onnxruntime runs: its own optimisation written out (QDQ groups fused into integer
    kernels where it can), every node on the CPU provider; float ops are those fed by a
    DequantizeLinear (they compute on dequantized values) or, in a float graph, every op."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # its note that the written graph is for this CPU: it is only read here
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath).graph
    nodes = list(graph.node)
    dequantized = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.op_type.startswith("QLinear")
                    for n in nodes)
    float_nodes = [n for n in nodes if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                   and (not quantized or any(i in dequantized for i in n.input))]
    count = lambda rows: {t: sum(n.op_type == t for n in rows) for t in sorted({n.op_type for n in rows})}
    return {"runtime": "onnxruntime", "delegate": "CPUExecutionProvider", "partitions": 1, "ops": len(nodes),
            "kernels": count(nodes), "outside": {}, "float_ops": count(float_nodes),
            "how": "onnxruntime's optimised graph (ORT_ENABLE_ALL), CPU provider only"}


RUNTIME = "onnxruntime (CPU)"
FORMAT = Format("onnx", [
    Exporter("onnx-fp32", "onnx", "fp32", "float", ".onnx", RUNTIME, None, _fp32, reference=True),
    Exporter("onnx-int8", "onnx", "int8", "qdq", ".onnx", RUNTIME, "onnx", _int8, int8_ratio=True),
], open=_open, runtime_modules=["onnxruntime"], placement=_placement)
