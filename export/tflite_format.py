"""TFLite `.tflite` via litert-torch: fp32, fp16 weights, int8 with float I/O and int8 with
integer I/O. Inputs are NHWC (what a camera bitmap is), made so by litert-torch's
to_channel_last_io; the manifest records what the converted file really has."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ktedge.export.registry import Exporter, Format, Invoke
from ktedge.export.source import ExportSource

TFLITE_INT8 = 9  # TensorType.INT8 in the TFLite schema


def _nhwc(module: torch.nn.Module, src: ExportSource) -> tuple[torch.nn.Module, tuple]:
    import litert_torch

    wrapped = litert_torch.to_channel_last_io(module, args=[0])
    # An exported graph already is its eval form (its train()/eval() raise); say so on the wrapper,
    # whose flag is all litert_torch reads, so it does not warn of "training mode".
    wrapped.training = False
    return wrapped, (src.example.permute(0, 2, 3, 1).contiguous(),)


def signature_io(path: Path) -> tuple[dict, list[dict]]:
    """The file's own input/output dtypes and quantization, in signature order."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()

    def describe(key: str, d: dict) -> dict:
        scale, zero = d["quantization"]
        quant = {"scale": float(scale), "zero_point": int(zero)} if scale > 0 else None
        return {"tensor": key, "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                "quantization": quant}

    inputs = [describe(k, d) for k, d in runner.get_input_details().items()]
    outputs = [describe(k, d) for k, d in runner.get_output_details().items()]
    return inputs[0], outputs


def _manifest_io(path: Path) -> dict:
    inp, outs = signature_io(path)
    inp = {"tensor": inp["tensor"], "shape": inp["shape"], "dtype": inp["dtype"], "layout": "NHWC",
           "quantization": inp["quantization"]}
    return {"input": inp, "outputs": outs}


def _fp32(src: ExportSource, path: Path) -> dict:
    import litert_torch

    module, args = _nhwc(src.program.module(), src)
    litert_torch.convert(module, args).export(str(path))
    return _manifest_io(path)


def _fp16(src: ExportSource, path: Path) -> dict:
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer.algorithms.nonlinear_quantize import float_casting

    fp32 = path.with_name("fp32" + path.suffix)
    _fp32(src, fp32)
    q = quantizer.Quantizer(str(fp32))
    q.load_quantization_recipe([{
        "regex": ".*", "operation": "*", "algorithm_key": float_casting.ALGORITHM_KEY,
        "op_config": {"weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"}, "compute_precision": "FLOAT",
                      "explicit_dequantize": True}}])
    q.quantize(enable_progress_report=False).export_model(str(path), overwrite=True)
    fp32.unlink()
    return {**_manifest_io(path), "notes": ["fp16 weights, dequantized to fp32 at load (GPU delegates compute in fp16)"]}


class FloatInput(torch.nn.Module):
    """The int8 graph behind a float input. litert-torch folds the input's quantize into the input
    tensor itself, so a float-I/O file took int8; one float op before it (a ReLU: exact on pixels,
    which are >= 0) leaves a float input and a QUANTIZE, as a float-I/O int8 file has."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module
        self.training = False  # an exported graph is its eval form (see _nhwc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(torch.relu(x))


class EachOutput(torch.nn.Module):
    """The int8 graph with `ops[k]` applied to its k-th output (None: left as it is)."""

    def __init__(self, module: torch.nn.Module, ops: list[Callable[[torch.Tensor], torch.Tensor] | None]):
        super().__init__()
        self.module, self.ops = module, ops
        self.training = False  # an exported graph is its eval form (see _nhwc)

    def forward(self, x: torch.Tensor):
        ys = self.module(x)
        single = isinstance(ys, torch.Tensor)
        out = tuple(y if op is None else op(y) for y, op in zip((ys,) if single else ys, self.ops))
        return out[0] if single else out


def requantized(scale: float, zero_point: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """An output quantized and dequantized again. On that pair litert-torch lowers the op before it
    in int8 (the landmark head's last ADD, a read-out softmax) and the interface tool strips the
    DEQUANTIZE: the int8-I/O file returns that output int8 with this scale."""
    q = torch.ops.quantized_decomposed
    return lambda y: q.dequantize_per_tensor(q.quantize_per_tensor(y, scale, zero_point, -128, 127, torch.int8),
                                             scale, zero_point, -128, 127, torch.int8)


def float_tail(y: torch.Tensor) -> torch.Tensor:
    """relu(y) - relu(-y), which is y, in float. litert-torch folds an output's last DEQUANTIZE into
    the output tensor, as it folds the input's QUANTIZE, so a float-I/O file returned int8 where the
    graph ends on an int8 op (the O-Net's box and points); these float ops at the end (inside
    XNNPACK's partition) keep it float. (relu(y) + min(y, 0) did too, but its MINIMUM went int8 and
    outside XNNPACK.)"""
    return torch.relu(y) - torch.relu(-y)


# The int8 output scale and zero point TFLite's kernels require of these ops.
FIXED_OUTPUT = {"softmax": (1 / 256, -128), "sigmoid": (1 / 256, -128), "tanh": (1 / 128, 0)}


DEQUANTIZE = "quantized_decomposed.dequantize"  # the prefix of a converted graph's dequantize ops


def output_producers(module: torch.fx.GraphModule) -> list[str]:
    """The op computing each output of a converted int8 graph, e.g.
    'quantized_decomposed.dequantize_per_tensor.default'."""
    (node,) = [n for n in module.graph.nodes if n.op == "output"]
    return [str(n.target) for n in (node.args[0] if isinstance(node.args[0], (tuple, list)) else (node.args[0],))]


def ends_int8(module: torch.fx.GraphModule) -> list[bool]:
    """Per output: whether the int8 graph computes it in int8 (it ends on a dequantize)."""
    return [target.startswith(DEQUANTIZE) for target in output_producers(module)]


def output_qparams(module: torch.fx.GraphModule, faces: torch.Tensor) -> list[tuple[float, int] | None]:
    """Per output of the converted int8 graph: None where it already ends on a dequantize (it is
    int8 in the file); TFLite's fixed parameters for a softmax, sigmoid or tanh; else asymmetric
    int8 over what the calibration `faces` (N, 3, S, S) give, 0 included."""
    producers = output_producers(module)
    with torch.no_grad():
        runs = [module(faces[i:i + 1]) for i in range(len(faces))]
    runs = [(r,) if isinstance(r, torch.Tensor) else tuple(r) for r in runs]
    qparams: list[tuple[float, int] | None] = []
    for k, target in enumerate(producers):
        if target.startswith(DEQUANTIZE):
            qparams.append(None)
        elif fixed := next((q for op, q in FIXED_OUTPUT.items() if op in target), None):
            qparams.append(fixed)
        else:
            values = torch.cat([r[k].reshape(-1) for r in runs])
            lo, hi = min(0.0, float(values.min())), max(0.0, float(values.max()))
            scale = (hi - lo) / 255 if hi > lo else 1.0
            qparams.append((scale, int(np.clip(round(-128 - lo / scale), -128, 127))))
    return qparams


def _int8_file(src: ExportSource, path: Path, int8_io: bool) -> None:
    """The int8 graph as a .tflite: float in and out (FloatInput, float_tail), or with every output
    quantized (requantized) for the int8-I/O file, whose input litert-torch makes int8."""
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    from ktedge.quantize.quantizers import make_quantizer

    module = src.quantized["tflite"]
    if int8_io:
        ops = [None if p is None else requantized(*p) for p in output_qparams(module, src.calibration)]
    else:
        ops = [float_tail if int8 else None for int8 in ends_int8(module)]
    module, args = _nhwc(EachOutput(module, ops) if any(ops) else module, src)
    quantizer = make_quantizer("tflite", src.observer, src.quantization["tflite"]["float_layers"])
    module = module if int8_io else FloatInput(module)
    litert_torch.convert(module, args, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))


def _int8(src: ExportSource, path: Path) -> dict:
    _int8_file(src, path, int8_io=False)
    return {**_manifest_io(path), "notes": ["float input, quantized in the file (RELU, QUANTIZE); float outputs"]}


def _int8_io(src: ExportSource, path: Path) -> dict:
    from ai_edge_litert import _pywrap_modify_model_interface

    unstripped = path.with_name("unstripped" + path.suffix)
    _int8_file(src, unstripped, int8_io=True)
    # The LiteRT tool that strips the boundary QUANTIZE/DEQUANTIZE ops; a tensor with no such op
    # beside it (an output the converter still computes in float) keeps its float type, and the
    # manifest says so.
    _pywrap_modify_model_interface.modify_model_interface(str(unstripped), str(path), TFLITE_INT8, TFLITE_INT8)
    unstripped.unlink()
    io = _manifest_io(path)
    notes = [f"{o['tensor']} stays float32: the converter computes it in float" for o in io["outputs"]
             if o["dtype"] == "float32"]
    return {**io, "notes": ["input is int8: q = round(pixel / scale) + zero_point, from the manifest", *notes]}


def _open(path: Path, manifest: dict, threads: int) -> Invoke:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=threads).get_signature_runner()
    key = next(iter(runner.get_input_details()))

    def invoke(x: np.ndarray) -> list[np.ndarray]:
        result = runner(**{key: x})
        return [result[o["tensor"]] for o in manifest["outputs"]]
    return invoke


def _placement(path: Path) -> dict:
    """LiteRT's interpreter with its default XNNPACK delegate, after delegation: each DELEGATE node
    is a partition; the ops it runs outside them are the ones whose outputs the delegates, the
    graph outputs or other outside ops consume; float ops are the ops that compute in float."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    ops = it._get_ops_details()  # the public API has no op list; this is what its analyzer reads
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    original = [o for o in ops if o["op_name"] != "DELEGATE"]
    produced_by = {int(t): o for o in original for t in o["outputs"]}
    from_delegate = {int(t) for d in delegates for t in d["outputs"]}
    graph_inputs = {int(d["index"]) for d in it.get_input_details()}
    need = [int(t) for d in delegates for t in d["inputs"]] + [int(d["index"]) for d in it.get_output_details()]
    outside, seen = [], set()
    while need:  # walk back from what must be materialised to the ops that materialise it
        t = need.pop()
        o = produced_by.get(t)
        if t in from_delegate or t in graph_inputs or o is None or o["index"] in seen:
            continue
        seen.add(o["index"])
        outside.append(o)
        need += [int(x) for x in o["inputs"] if x >= 0]
    count = lambda rows: {n: sum(r["op_name"] == n for r in rows) for n in sorted({r["op_name"] for r in rows})}
    float_ops = [o for o in original if any(t is np.float32 or t is np.float16 for t in o["result_types"])]
    return {"runtime": "ai_edge_litert", "delegate": "XNNPACK" if delegates else None, "partitions": len(delegates),
            "ops": len(original), "ops_in_delegate": len(original) - len(outside), "outside": count(outside),
            "float_ops": count(float_ops),
            "how": "the interpreter's nodes after XNNPACK delegation (ops whose results are float, whoever runs them)"}


RUNTIME = "ai_edge_litert interpreter (XNNPACK)"
FORMAT = Format("tflite", [
    Exporter("tflite-fp32", "tflite", "fp32", "float-io", ".tflite", RUNTIME, None, _fp32, reference=True),
    Exporter("tflite-fp16", "tflite", "fp16", "float-io", ".tflite", RUNTIME, None, _fp16),
    Exporter("tflite-int8", "tflite", "int8", "float-io", ".tflite", RUNTIME, "tflite", _int8, int8_ratio=True),
    Exporter("tflite-int8-int8io", "tflite", "int8", "int8-io", ".tflite", RUNTIME, "tflite", _int8_io),
], open=_open, runtime_modules=["ai_edge_litert.interpreter"], placement=_placement)
