"""TFLite `.tflite` via litert-torch: fp32, fp16 weights, int8 with float I/O and int8 with
integer I/O. Inputs are NHWC (what a camera bitmap is), made so by litert-torch's
to_channel_last_io; the manifest records what the converted file really has."""
from __future__ import annotations

from pathlib import Path

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


def _int8_file(src: ExportSource, path: Path, float_input: bool) -> None:
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    from ktedge.quantize.quantizers import make_quantizer

    module, args = _nhwc(src.quantized["tflite"], src)
    quantizer = make_quantizer("tflite", src.observer, src.quantization["tflite"]["float_layers"])
    module = FloatInput(module) if float_input else module
    litert_torch.convert(module, args, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))


def _int8(src: ExportSource, path: Path) -> dict:
    _int8_file(src, path, float_input=True)
    return {**_manifest_io(path), "notes": ["float input, quantized in the file (RELU, QUANTIZE)"]}


def _int8_io(src: ExportSource, path: Path) -> dict:
    from ai_edge_litert import _pywrap_modify_model_interface

    float_io = path.with_name("float_io" + path.suffix)
    _int8_file(src, float_io, float_input=False)  # its input is int8 already
    # The LiteRT tool that strips the boundary QUANTIZE/DEQUANTIZE ops; a tensor with no such op
    # beside it (e.g. an output computed in float) keeps its float type, and the manifest says so.
    _pywrap_modify_model_interface.modify_model_interface(str(float_io), str(path), TFLITE_INT8, TFLITE_INT8)
    float_io.unlink()
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
