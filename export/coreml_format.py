"""Core ML `.mlpackage` (ML program) via coremltools: fp32 (the size baseline), fp16, W8
(weight-only int8 through coremltools.optimize) and W8A8 (the int8 PT2E program's quantize/dequantize
pairs converted)."""
from __future__ import annotations

from pathlib import Path

import collections

from ktedge.export.registry import Exporter, Format, Invoke
from ktedge.deployable import export_program
from ktedge.export.source import ExportSource


def _convert(program, precision):
    import coremltools as ct

    return ct.convert(program.run_decompositions({}), convert_to="mlprogram", compute_precision=precision,
                      minimum_deployment_target=ct.target.iOS17)


def _io(model) -> dict:
    spec = model.get_spec()
    return {"input_name": spec.description.input[0].name, "output_tensors": [o.name for o in spec.description.output]}


def _float(precision: str):
    def export(src: ExportSource, path: Path) -> dict:
        import coremltools as ct

        model = _convert(src.program, getattr(ct.precision, precision))
        model.save(str(path))
        return _io(model)
    return export


def _w8(src: ExportSource, path: Path) -> dict:
    import coremltools as ct
    from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

    config = OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                                                      granularity="per_channel"))
    model = linear_quantize_weights(_convert(src.program, ct.precision.FLOAT16), config)
    model.save(str(path))
    return {**_io(model), "quantization": {"method": "coremltools.optimize linear_quantize_weights",
                                           "weights": "int8 symmetric per-channel", "activations": "fp16",
                                           "float_layers": []}}


def _w8a8(src: ExportSource, path: Path) -> dict:
    import coremltools as ct

    model = _convert(export_program(src.quantized["coreml"], src.example, dynamic_batch=False), ct.precision.FLOAT16)
    model.save(str(path))
    return _io(model)


def _open(path: Path, manifest: dict, threads: int) -> Invoke:
    import coremltools as ct

    model = ct.models.MLModel(str(path))
    name = manifest["input"]["name"]
    return lambda x: [model.predict({name: x})[o["tensor"]] for o in manifest["outputs"]]


def structure(artifact_dir: Path, manifest: dict) -> dict:
    """What can be checked of an .mlpackage without Core ML: the spec loads, its inputs/outputs
    match the manifest, the weight storage is what the precision says, and the op count."""
    import coremltools as ct

    spec = ct.models.MLModel(str(artifact_dir / manifest["file"]), skip_model_load=True).get_spec()
    fn = spec.mlProgram.functions["main"]
    ops = collections.Counter(op.type for op in fn.block_specializations[fn.opset].operations)
    inputs = [i.name for i in spec.description.input]
    outputs = [o.name for o in spec.description.output]
    want_out = [o.get("tensor", o["name"]) for o in manifest["outputs"]]
    int8_weights = ops.get("constexpr_affine_dequantize", 0) + ops.get("constexpr_blockwise_shift_scale", 0)
    expect = {"fp32": int8_weights == 0 and ops.get("cast", 0) == 0, "fp16": int8_weights == 0,
              "w8": int8_weights > 0 and ops.get("quantize", 0) == 0,
              "w8a8": int8_weights > 0 and ops.get("quantize", 0) > 0}[manifest["precision"]]
    checks = {"inputs_match": inputs == [manifest["input"]["name"]], "outputs_match": outputs == want_out,
              "weights_match_precision": expect}
    return {"structure": {**checks, "ops": sum(ops.values()), "int8_weight_tensors": int8_weights,
                          "activation_quantize_ops": ops.get("quantize", 0)},
            "passed": all(checks.values())}


RUNTIME = "Core ML (macOS/iOS; structural check elsewhere)"
FORMAT = Format("coreml", [
    Exporter("coreml-fp32", "coreml", "fp32", "mlprogram", ".mlpackage", RUNTIME, None, _float("FLOAT32"),
             reference=True, apple_only=True),
    Exporter("coreml-fp16", "coreml", "fp16", "mlprogram", ".mlpackage", RUNTIME, None, _float("FLOAT16"),
             apple_only=True),
    Exporter("coreml-w8", "coreml", "w8", "mlprogram", ".mlpackage", RUNTIME, None, _w8, int8_ratio=True,
             apple_only=True),
    Exporter("coreml-w8a8", "coreml", "w8a8", "mlprogram", ".mlpackage", RUNTIME, "coreml", _w8a8, apple_only=True),
], open=_open, structure=structure)
