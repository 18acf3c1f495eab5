"""ExecuTorch `.pte` for Arm's Ethos-U NPU (microcontroller-class NPUs: U55 in Corstone-300, U85 in
Corstone-320): the quantize stage's `ethosu` int8 program (Arm's EthosUQuantizer), lowered by
ExecuTorch's Arm backend to TOSA and compiled by Vela into the NPU's command stream.

The command stream runs only on an Ethos-U (a device or Arm's Corstone FVP), neither of which is
here. What runs here is the TOSA graph Vela takes as its input (`model.tosa`, beside the .pte), in
the TOSA reference model that tosa-tools ships: the integer numerics the TOSA spec defines for that
graph, on the same faces every artifact is validated on. Vela's own lowering of it to the command
stream is not run here (that needs the FVP). Its speed is Vela's estimate for the target (the
manifest's `ethosu.vela`), never a time measured here."""
from __future__ import annotations

import csv
import ctypes
import hashlib
import operator
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ktedge.deployable import export_program
from ktedge.errors import KtedgeError
from ktedge.export.executorch_format import pte_placement
from ktedge.export.manifest import describe_file
from ktedge.export.registry import Exporter, Format, Invoke
from ktedge.export.source import ExportSource

TARGETS = {"u55": "ethos-u55-128", "u85": "ethos-u85-256"}  # variant -> Vela's accelerator config


def _delegates(program) -> list:
    return [n for n in program.graph_module.graph.nodes
            if n.op == "call_function" and "executorch_call_delegate" in str(n.target)]


def _io_quantization(program) -> dict:
    """The int8 quantization of the NPU's input and of each program output, in the program's
    output order, from the quantize / dequantize ops left around the delegate; each output names
    the delegate output it reads (`npu_output`: the TOSA graph's outputs come in the order the
    graph computes them, not the order the program returns them)."""
    graph = program.graph_module.graph
    users = set(program.graph_signature.user_inputs)
    q = [n for n in graph.nodes if n.op == "call_function" and "quantize_per_tensor" in str(n.target)
         and "dequantize" not in str(n.target) and n.args[0].op == "placeholder" and n.args[0].name in users]
    outputs = next(n for n in graph.nodes if n.op == "output").args[0]
    dq = [o for o in outputs if "dequantize_per_tensor" in str(getattr(o, "target", ""))]
    if len(q) != 1 or len(dq) != len(outputs):
        raise KtedgeError(f"the Ethos-U program does not take one int8 input and return int8 outputs "
                          f"({len(q)} input quantize, {len(dq)} of {len(outputs)} outputs dequantized): "
                          f"a layer kept in float cannot run on the NPU")

    def entry(n) -> dict:  # quantize_per_tensor(x, scale, zero_point, quant_min, quant_max, dtype)
        if n.args[5] != torch.int8:
            raise KtedgeError(f"the Ethos-U program's {n.name} is {n.args[5]}, not int8")
        return {"scale": float(n.args[1]), "zero_point": int(n.args[2]), "dtype": "int8"}

    def delegate_output(n) -> int:
        src = n.args[0]
        return int(src.args[1]) if src.target is operator.getitem else 0
    return {"input": entry(q[0]), "outputs": [{**entry(n), "npu_output": delegate_output(n)} for n in dq]}


def _vela_summary(csv_path: Path) -> dict:
    """Vela's performance estimate for one inference (its summary CSV; its stdout is the export log)."""
    with open(csv_path, newline="") as f:
        row = next(csv.DictReader(f))
    number = lambda k: float(row[k])  # noqa: E731
    return {"accelerator": row["accelerator_configuration"], "system_config": row["system_config"],
            "memory_mode": row["memory_mode"], "clock_mhz": round(number("core_clock") / 1e6, 1),
            "inference_ms": round(1000 * number("inference_time"), 4),
            "cycles_npu": int(number("cycles_npu")), "cycles_total": int(number("cycles_total")),
            "macs": int(number("nn_macs")), "sram_kib": round(number("sram_memory_used"), 2),
            "off_chip_flash_kib": round(number("off_chip_flash_memory_used"), 2),
            "dram_kib": round(number("dram_memory_used"), 2),
            "weights_bytes": int(number("total_npu_encoded_weights")),
            "how": "Vela's static estimate at the system config's clock and memory (not measured)"}


def tosa_ops(tosa: bytes) -> Counter:
    """The TOSA graph's operators by name (constants left out)."""
    import tosa.Op as Op
    import tosa.TosaGraph as TosaGraph

    names = {v: k for k, v in vars(Op.Op).items() if not k.startswith("_")}
    block = TosaGraph.TosaGraph.GetRootAs(tosa, 0).Regions(0).Blocks(0)
    ops = Counter(names[block.Operators(i).Op()] for i in range(block.OperatorsLength()))
    return Counter({k: v for k, v in ops.items() if k not in ("CONST", "CONST_SHAPE")})


def _build(variant: str):
    def build(src: ExportSource, path: Path) -> dict:
        import executorch.kernels.quantized  # noqa: F401  (the I/O quantize ops outside the delegate)
        from executorch.backends.arm.ethosu import EthosUCompileSpec, EthosUPartitioner
        from executorch.exir import to_edge_transform_and_lower

        target = TARGETS[variant]
        spec = EthosUCompileSpec(target)
        program = export_program(src.quantized["ethosu"], src.example, dynamic_batch=False)
        with tempfile.TemporaryDirectory() as tmp:
            spec.dump_intermediate_artifacts_to(tmp)  # the TOSA graph and Vela's summary land here
            edge = to_edge_transform_and_lower(program, partitioner=[EthosUPartitioner(spec)])
            if (n := len(_delegates(edge.exported_program()))) != 1:
                raise KtedgeError(f"the Ethos-U lowering made {n} NPU partitions: the NPU does not take the model "
                                  f"whole (the ops it left out are in the export log)")
            io = _io_quantization(edge.exported_program())
            path.write_bytes(edge.to_executorch().buffer)
            graphs = sorted(Path(tmp).glob("output_tag*.tosa"))
            summaries = sorted(Path(tmp).glob("output/out_summary_*.csv"))
            if len(graphs) != 1 or len(summaries) != 1:
                raise KtedgeError(f"the Arm backend left {len(graphs)} TOSA graphs and {len(summaries)} Vela summaries "
                                  f"(expected one each: has executorch's Arm backend changed its dump layout?)")
            tosa = path.with_suffix(".tosa")
            tosa.write_bytes(graphs[0].read_bytes())
            vela = _vela_summary(summaries[0])
        return {"ethosu": {"target": target, "tosa": describe_file(tosa), "npu_io": io, "vela": vela},
                "notes": [f"Ethos-U command stream (Vela, {target}): runs on an Ethos-U device or Arm's Corstone "
                          f"FVP only; validated here by running its TOSA graph ({tosa.name}) in the TOSA reference "
                          f"model; its speed is Vela's estimate"]}
    return build


def _open(path: Path, manifest: dict, threads: int) -> Invoke:
    """The NPU program's TOSA graph in the TOSA reference model, with the program's own float I/O:
    the input quantized and the outputs dequantized as the .pte's CPU kernels around the NPU do."""
    import tosa_reference_model as reference

    npu = manifest["ethosu"]
    tosa = path.parent / npu["tosa"]["file"]
    if not tosa.is_file():
        raise KtedgeError(f"{tosa}: missing (the Ethos-U artifact's TOSA graph; re-run `ktedge export`)")
    graph = tosa.read_bytes()
    if hashlib.sha256(graph).hexdigest() != npu["tosa"]["sha256"]:
        raise KtedgeError(f"{tosa}: sha256 does not match its manifest (file changed or torn); re-run `ktedge export`")
    q_in, q_out = npu["npu_io"]["input"], npu["npu_io"]["outputs"]
    inv_scale = np.float32(1.0) / np.float32(q_in["scale"])  # as quantize_per_tensor computes it

    def invoke(x: np.ndarray) -> list[np.ndarray]:
        xq = np.clip(np.rint(x.astype(np.float32) * inv_scale) + q_in["zero_point"], -128, 127).astype(np.int8)
        try:
            outputs, status = _quietly(lambda: reference.run(graph, [xq]))
        except ValueError as e:  # the reason goes to the C stderr; the shape is what a caller can get wrong
            raise KtedgeError(f"{tosa}: the TOSA reference model refused an input of shape {list(x.shape)} "
                              f"(it takes {manifest['input']['shape']}): {e}") from None
        if status != reference.GraphStatus.TOSA_VALID:
            raise KtedgeError(f"{tosa}: the TOSA reference model rejected the graph ({status.name})")
        if len(outputs) != len(q_out) or any(y.dtype != np.int8 for y in outputs):
            raise KtedgeError(f"{tosa}: the graph returned {[str(y.dtype) for y in outputs]}, not the "
                              f"{len(q_out)} int8 outputs its manifest names")
        return [((outputs[q["npu_output"]].astype(np.float32) - q["zero_point"]) * q["scale"]).astype(np.float32)
                for q in q_out]
    return invoke


def _quietly(call):
    """The reference model prints a version notice to the C stdout on every run: kept off the console."""
    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    saved = os.dup(1)
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 1)
            return call()
        finally:
            libc.fflush(None)  # what C buffered goes to /dev/null, not to the restored stdout
            os.dup2(saved, 1)
            os.close(null)
    finally:
        os.close(saved)


def _estimate(manifest: dict) -> dict:
    """Vela's estimate, as the bench and summary rows quote it."""
    vela = manifest["ethosu"]["vela"]
    return {"target": manifest["ethosu"]["target"], "by": "Vela",
            **{k: vela[k] for k in ("system_config", "clock_mhz", "inference_ms", "macs", "sram_kib",
                                    "off_chip_flash_kib")}}


def _placement(path: Path) -> dict:
    """The .pte's plan (its Ethos-U partitions and the CPU kernels around them), and the operators
    inside the NPU partition, read from the TOSA graph Vela compiled."""
    placed = pte_placement(path)
    tosa = path.with_suffix(".tosa")
    if tosa.is_file():
        ops = tosa_ops(tosa.read_bytes())
        placed |= {"ops_in_delegate": sum(ops.values()), "kernels": dict(sorted(ops.items())),
                   "how": placed["how"] + "; the NPU partition's TOSA operators from model.tosa"}
    return placed


RUNTIME = "TOSA reference model (tosa-tools): the graph Vela compiled; the NPU program runs on an Ethos-U only"
FORMAT = Format("ethosu", [
    Exporter(f"ethosu-int8-{variant}", "ethosu", "int8", variant, ".pte", RUNTIME, "ethosu", _build(variant))
    for variant in TARGETS
], open=_open, runtime_modules=["tosa_reference_model"], placement=_placement, estimate=_estimate)
