"""ExecuTorch `.pte`: XNNPACK delegate (fp32; int8 from the XNNPACKQuantizer program) and the
Core ML delegate (fp16, for Apple phones; it runs only there)."""
from __future__ import annotations

import copy
from pathlib import Path

from ktedge.export.registry import Exporter
from ktedge.export.source import ExportSource, batch_one


def _lower(program, partitioner) -> bytes:
    # The quantized kernels' out variants: a q/dq pair XNNPACK leaves outside its partitions (beside
    # a layer kept in float) runs on them; without them to_executorch fails ("Missing out variants").
    import executorch.kernels.quantized  # noqa: F401
    from executorch.exir import to_edge_transform_and_lower

    # A copy: lowering takes the program's constants (AUFormer's non-persistent mean weights) out
    # of the one it is given, and every later exporter of the same program then failed (KeyError).
    program = copy.deepcopy(program)
    return to_edge_transform_and_lower(program, partitioner=[partitioner]).to_executorch().buffer


def _xnnpack(backend: str | None):
    def build(src: ExportSource, path: Path) -> dict:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        program = src.program if backend is None else batch_one(src.quantized[backend], src.example)
        path.write_bytes(_lower(program, XnnpackPartitioner()))
        return {}
    return build


def _coreml_fp16(src: ExportSource, path: Path) -> dict:
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    specs = CoreMLBackend.generate_compile_specs(compute_precision=ct.precision.FLOAT16,
                                                 minimum_deployment_target=ct.target.iOS17)
    path.write_bytes(_lower(src.program, CoreMLPartitioner(compile_specs=specs)))
    return {"notes": ["Core ML delegate: runs on iOS/macOS only; validated structurally here"]}


EXPORTERS = [
    Exporter("executorch-fp32", "executorch", "fp32", "xnnpack", ".pte", "executorch.runtime (XNNPACK)", None, _xnnpack(None)),
    Exporter("executorch-int8", "executorch", "int8", "xnnpack", ".pte", "executorch.runtime (XNNPACK)", "executorch",
             _xnnpack("executorch")),
    Exporter("executorch-fp16-coreml", "executorch", "fp16", "coreml", ".pte", "executorch (Core ML delegate, Apple)", None,
             _coreml_fp16),
]
