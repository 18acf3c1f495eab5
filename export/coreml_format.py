"""Core ML `.mlpackage` (ML program) via coremltools: fp32 (the size baseline), fp16, W8
(weight-only int8 through coremltools.optimize) and W8A8 (the int8 PT2E program's quantize/dequantize
pairs converted)."""
from __future__ import annotations

from pathlib import Path

from ktedge.export.registry import Exporter
from ktedge.export.source import ExportSource, batch_one


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

    model = _convert(batch_one(src.quantized["coreml"], src.example), ct.precision.FLOAT16)
    model.save(str(path))
    return _io(model)


RUNTIME = "Core ML (macOS/iOS; structural check elsewhere)"
EXPORTERS = [
    Exporter("coreml-fp32", "coreml", "fp32", "mlprogram", ".mlpackage", RUNTIME, None, _float("FLOAT32")),
    Exporter("coreml-fp16", "coreml", "fp16", "mlprogram", ".mlpackage", RUNTIME, None, _float("FLOAT16")),
    Exporter("coreml-w8", "coreml", "w8", "mlprogram", ".mlpackage", RUNTIME, None, _w8),
    Exporter("coreml-w8a8", "coreml", "w8a8", "mlprogram", ".mlpackage", RUNTIME, "coreml", _w8a8),
]
