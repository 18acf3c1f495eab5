"""Per-layer SQNR of int8 against fp32 activations, read off the PT2E graphs by module name."""
from __future__ import annotations

import math

import torch
from torch import fx

LAYER_OPS = ("aten.conv2d", "aten.linear")
ACTIVATIONS = ("aten.relu", "aten.hardtanh", "aten.clamp")
QUANTIZE, DEQUANTIZE = "quantized_decomposed.quantize_per_tensor", "quantized_decomposed.dequantize_per_tensor"
SQNR_CEILING_DB = 60.0  # what an exact (float) layer reports instead of an infinite SQNR


def _is(node: fx.Node, prefixes) -> bool:
    return node.op == "call_function" and str(node.target).startswith(prefixes)


def layer_name(node: fx.Node) -> str | None:
    """The module path of a conv/linear node (e.g. 'backbone.features.3.block.0.0'), else None."""
    if node.op != "call_function" or not str(node.target).startswith(LAYER_OPS):
        return None
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return path.removeprefix("L['self'].").removeprefix("L__self__.")


def consumed_output(node: fx.Node) -> fx.Node:
    """The node whose value the layer's consumers read: past its activation and its int8 round trip
    (where a per-tensor scale crushes small values, the error shows here, not at the conv/linear)."""
    while True:
        users = list(node.users)
        if _is(node, QUANTIZE):  # int8 values: read them through (any one of) their dequantize copies
            deq = [u for u in users if _is(u, DEQUANTIZE)]
            if not deq:
                return node
            node = deq[0]
        elif len(users) == 1 and _is(users[0], (*ACTIVATIONS, QUANTIZE, DEQUANTIZE)):
            node = users[0]
        else:
            return node


def _layer_outputs(gm: fx.GraphModule, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run `gm` with a recording node after every conv/linear, then take the nodes out again.
    (In place: GraphModule's deepcopy drops the constants convert_pt2e registers.)"""
    outputs: dict[str, torch.Tensor] = {}

    def record(name: str, t: torch.Tensor) -> torch.Tensor:
        outputs.setdefault(name, t.detach())
        return t

    inserted = []
    for node in list(gm.graph.nodes):
        name = layer_name(node)
        if name is None:
            continue
        tail = consumed_output(node)
        with gm.graph.inserting_after(tail):
            rec = gm.graph.call_function(record, (name, tail))
        tail.replace_all_uses_with(rec, delete_user_cb=lambda user, rec=rec: user is not rec)
        inserted.append((tail, rec))
    gm.recompile()
    try:
        with torch.no_grad():
            gm(x)
    finally:
        for node, rec in inserted:
            rec.replace_all_uses_with(node)
            gm.graph.erase_node(rec)
        gm.recompile()
    return outputs


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Median over channels of each channel's SQNR (dB). Per channel, because one channel with a
    huge range can own the whole tensor's signal while a per-tensor scale zeroes all the others."""
    dim = 1 if ref.dim() == 4 else -1
    r = ref.movedim(dim, 0).reshape(ref.shape[dim], -1).double()
    t = test.movedim(dim, 0).reshape(ref.shape[dim], -1).double()
    signal, noise = r.pow(2).sum(1), (r - t).pow(2).sum(1)
    per_channel = 10 * torch.log10(signal.clamp_min(1e-30) / noise.clamp_min(1e-30))
    per_channel[noise == 0] = math.inf
    return float(per_channel.median())


def layer_sensitivity(float_gm: fx.GraphModule, quant_gm: fx.GraphModule, x: torch.Tensor) -> list[dict]:
    """Per layer in execution order: SQNR (dB) of its output as its consumers read it, int8 against
    fp32, and the SQNR it loses against the layer before it (reading the graph as a chain)."""
    ref, got = _layer_outputs(float_gm, x), _layer_outputs(quant_gm, x)
    cap = lambda v: min(v, SQNR_CEILING_DB)  # noqa: E731  (an exact float layer has infinite SQNR)
    rows, prev = [], math.inf
    for name, r in ref.items():
        if name not in got:
            continue
        s = sqnr_db(r, got[name])
        rows.append({"layer": name, "sqnr_db": round(s, 2) if math.isfinite(s) else None,
                     "sqnr_drop_db": round(cap(prev) - cap(s), 2)})
        prev = s
    return rows
