"""ExecuTorch `.pte`: XNNPACK delegate (fp32; int8 from the XNNPACKQuantizer program) and the
Core ML delegate (fp16, for Apple phones; it runs only there). Run here in `executorch.runtime`."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ktedge.export.registry import Exporter, Format, Invoke
from ktedge.deployable import export_program
from ktedge.export.source import ExportSource

if TYPE_CHECKING:
    import torch


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

        program = (src.program if backend is None
                   else export_program(src.quantized[backend], src.example, dynamic_batch=False))
        path.write_bytes(_lower(program, XnnpackPartitioner()))
        return {} if src.held_out is None else {"bundled_program": write_bundle(path, src.held_out)}
    return build


def write_bundle(pte: Path, faces: torch.Tensor) -> dict:
    """ExecuTorch's BundledProgram beside `pte` (model.bpte): the same program with one test case
    per held-out face, its expected outputs this program's own in this runtime, so a device can
    verify its ExecuTorch build against the exporter's (BundledModule's verify, or the runtime's
    bundled-program check). -> the manifest's `bundled_program` entry."""
    import torch
    from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
    from executorch.devtools.bundled_program.core import BundledProgram
    from executorch.devtools.bundled_program.serialize import serialize_from_bundled_program_to_flatbuffer

    from ktedge.export.manifest import describe_file

    run = _open(pte, {}, threads=1)
    cases = [MethodTestCase(inputs=[face[None]], expected_outputs=[torch.from_numpy(y) for y in run(face[None].numpy())])
             for face in faces.float()]
    bundle = BundledProgram(None, [MethodTestSuite(method_name="forward", test_cases=cases)],
                            pte_file_path=str(pte))
    path = pte.with_suffix(".bpte")
    path.write_bytes(serialize_from_bundled_program_to_flatbuffer(bundle))
    return {**describe_file(path), "method": "forward", "cases": len(cases),
            "inputs": f"{len(cases)} of the run's held-out faces, each (1, 3, S, S) float32 RGB 0..255",
            "expected": "this program's outputs in ExecuTorch (XNNPACK) on the exporting host; XNNPACK's kernels "
                        "differ per CPU, so a device compares within a tolerance"}


def _coreml_fp16(src: ExportSource, path: Path) -> dict:
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    specs = CoreMLBackend.generate_compile_specs(compute_precision=ct.precision.FLOAT16,
                                                 minimum_deployment_target=ct.target.iOS17)
    path.write_bytes(_lower(src.program, CoreMLPartitioner(compile_specs=specs)))
    return {"notes": ["Core ML delegate: runs on iOS/macOS only; validated structurally here"]}


def _open(path: Path, manifest: dict, threads: int) -> Invoke:
    # The quantized kernels, for q/dq ops an int8 program with float layers may leave outside
    # XNNPACK (seen: "Missing operator: quantized_decomposed::dequantize_per_channel.out").
    import executorch.kernels.quantized  # noqa: F401
    import torch
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    if _threadpool_get_thread_count() != threads:  # XNNPACK's pool; the binding's only thread control
        _unsafe_reset_threadpool(threads)
    method = Runtime.get().load_program(path).load_method("forward")

    def invoke(x: np.ndarray) -> list[np.ndarray]:
        return [t.numpy() for t in method.execute([torch.from_numpy(x)])]
    return invoke


def pte_placement(path: Path) -> dict:
    """The .pte's own plan: its delegate calls (each a partition the backend compiled) and the
    kernels the portable runtime runs between them, by operator and the dtypes they take."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    loaded = deserialize_pte_binary(path.read_bytes())
    plan = getattr(loaded, "program", loaded).execution_plan[0]
    backends = sorted({d.id for d in plan.delegates})
    outside: dict[str, int] = {}
    float_ops: dict[str, int] = {}
    for chain in plan.chains:
        for ins in chain.instructions:
            if type(ins.instr_args).__name__ != "KernelCall":
                continue
            op = plan.operators[ins.instr_args.op_index].name
            outside[op] = outside.get(op, 0) + 1
            dtypes = {plan.values[a].val.scalar_type.name for a in ins.instr_args.args
                      if type(plan.values[a].val).__name__ == "Tensor"}
            if dtypes & {"FLOAT", "HALF"}:
                float_ops[op] = float_ops.get(op, 0) + 1
    calls = sum(type(i.instr_args).__name__ == "DelegateCall" for c in plan.chains for i in c.instructions)
    return {"runtime": "executorch", "delegate": ", ".join(backends) or None, "partitions": calls,
            "outside": outside, "float_ops": float_ops,
            "how": "the .pte's execution plan: delegate calls and the portable kernels between them"}


RUNTIME = "executorch.runtime (XNNPACK)"
FORMAT = Format("executorch", [
    Exporter("executorch-fp32", "executorch", "fp32", "xnnpack", ".pte", RUNTIME, None, _xnnpack(None), reference=True),
    Exporter("executorch-int8", "executorch", "int8", "xnnpack", ".pte", RUNTIME, "executorch", _xnnpack("executorch"),
             int8_ratio=True),
    Exporter("executorch-fp16-coreml", "executorch", "fp16", "coreml", ".pte", "executorch (Core ML delegate, Apple)",
             None, _coreml_fp16, apple_only=True),
], open=_open, runtime_modules=["torch", "executorch.runtime"], placement=pte_placement)
