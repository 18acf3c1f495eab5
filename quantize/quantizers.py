"""One PT2E quantizer per backend: per-channel symmetric int8 weights, per-tensor int8
activations, the activation observer chosen by config, and named layers left in float.

- executorch: ExecuTorch's XNNPACKQuantizer.
- tflite: litert-torch's PT2EQuantizer.
- ethosu: ExecuTorch's Arm EthosUQuantizer (for the Ethos-U55's TOSA profile, the stricter of the
  two targets: one program lowers to both), batch 1, the NPU's static shapes.
- coreml: coremltools 9.0's own PT2E CoreMLQuantizer imports `torch.ao.quantization.quantizer`,
  which torch 2.13 no longer has (it moved to torchao), so it cannot run beside this torch. The
  CoreML W8A8 program uses the XNNPACK quantizer's config, the same scheme Core ML's W8A8
  takes (symmetric per-channel int8 weights, per-tensor int8 activations); the manifest says so.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, Quantizer, SharedQuantizationSpec

from ktedge.quantize.sensitivity import ACTIVATIONS

OBSERVERS = {"minmax": MinMaxObserver, "histogram": HistogramObserver}


def _with_observer(config, observer: str):
    """The same quantization config with the activation observer swapped."""
    ctr = OBSERVERS[observer].with_args(eps=2**-12)
    swap = lambda spec: spec if spec is None else dataclasses.replace(spec, observer_or_fake_quant_ctr=ctr)  # noqa: E731
    return dataclasses.replace(config, input_activation=swap(config.input_activation),
                               output_activation=swap(config.output_activation))


def activation_chain(node: Node) -> list[Node]:
    chain = []
    while len(node.users) == 1 and str(next(iter(node.users)).target).startswith(ACTIVATIONS):
        node = next(iter(node.users))
        chain.append(node)
    return chain


WEIGHTED = ("aten.linear", "aten.conv")


def pattern_of(node: Node) -> list[Node]:
    """The nodes before `node` fused with it into one quantization pattern: the op with weights
    whose sole user is the activation chain ending at `node` (empty when `node` is not an activation)."""
    chain = []
    while str(node.target).startswith(ACTIVATIONS) and node.args and isinstance(node.args[0], Node) \
            and len(node.args[0].users) == 1:
        node = node.args[0]
        chain.append(node)
    return chain


def in_modules(node: Node, names: list[str]) -> bool:
    """Whether `node` was traced inside one of the named modules (or their children)."""
    for path, _ in (node.meta.get("nn_module_stack") or {}).values():
        path = path.removeprefix("L['self'].")
        if any(path == n or path.startswith(n + ".") for n in names):
            return True
    return False


def _dangles(spec) -> bool:
    """A spec shared with an edge/node whose own spec is gone."""
    if not isinstance(spec, SharedQuantizationSpec):
        return False
    if isinstance(spec.edge_or_node, tuple):
        arg, user = spec.edge_or_node
        ann = user.meta.get("quantization_annotation")
        return ann is None or arg not in ann.input_qspec_map
    ann = spec.edge_or_node.meta.get("quantization_annotation")
    return ann is None or ann.output_qspec is None


def _drop_dangling(model: GraphModule) -> None:
    """A spec shared with an annotation that is gone would dangle: drop those too, transitively."""
    changed = True
    while changed:
        changed = False
        for node in model.graph.nodes:
            ann = node.meta.get("quantization_annotation")
            if ann is not None and any(_dangles(spec) for spec in [*ann.input_qspec_map.values(), ann.output_qspec]):
                node.meta.pop("quantization_annotation")
                changed = True


def readout_tail(softmax: Node) -> list[Node]:
    """The nodes from `softmax` to the graph's outputs when no Linear/conv lies on the way: a
    decoding read-out (soft-argmax over a heatmap, expected value over age bins), not attention,
    whose probabilities reach a projection. Empty when `softmax` is not a read-out."""
    tail, todo = [], [softmax]
    while todo:
        node = todo.pop()
        if node.op == "output" or node in tail:
            continue
        if str(node.target).startswith(WEIGHTED):
            return []
        tail.append(node)
        todo.extend(node.users)
    return tail


class FloatLayers(Quantizer):
    """A backend quantizer with the named layers left in float (mixed precision). Neither the
    XNNPACK nor litert-torch's quantizer accepts `set_module_name(name, None)`, so the wrapper
    drops their annotations."""

    def __init__(self, inner: Quantizer, names: list[str]):
        super().__init__()
        self.inner, self.names = inner, names

    @property
    def global_config(self):
        """litert-torch's converter reads its quantizer's global config (static or dynamic int8)."""
        return self.inner.global_config

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        return self.inner.transform_for_annotation(model)

    def annotate(self, model: GraphModule) -> GraphModule:
        model = self.inner.annotate(model)
        for node in model.graph.nodes:
            if in_modules(node, self.names):
                # The layer and the activation fused into its pattern (nn.ReLU is a module of its own).
                for n in [node, *activation_chain(node)]:
                    n.meta.pop("quantization_annotation", None)
                # Its input edge too: the producer's output spec would still round it through int8.
                producer = node.args[0] if node.args and isinstance(node.args[0], Node) else None
                if producer is None:
                    continue
                pattern = [producer, *pattern_of(producer)]
                if str(pattern[-1].target).startswith(WEIGHTED):
                    # A Linear/conv producer goes to float whole, weights included: with int8
                    # weights and a float output it lowered to an ExecuTorch program whose answers
                    # were not the simulated ones (0.3 off on a toy MLP; NME 133 against 22).
                    for n in pattern:
                        n.meta.pop("quantization_annotation", None)
                elif (ann := producer.meta.get("quantization_annotation")) is not None:
                    # Any other producer keeps its int8 inputs (an add made float whole, beside
                    # int8 neighbours, gave XNNPACK an add it refused to build: Faceptor).
                    ann.output_qspec = None
        _drop_dangling(model)
        return model

    def validate(self, model: GraphModule) -> None:
        self.inner.validate(model)


HARDTANH = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)


def _clamped(ctr, lo: float, hi: float):
    """An observer constructor like `ctr` whose observer sees its input clamped to [lo, hi]."""
    cls, kwargs = ctr.p.func, ctr.p.keywords

    class ClampedObserver(cls):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            super().forward(x.detach().clamp(lo, hi))
            return x

    return ClampedObserver.with_args(**kwargs)


def annotate_bounded(model: GraphModule) -> None:
    """A bounded activation (hardtanh(lo, hi): ReLU6, a capped ReLU) is quantized over the values
    it lets through. Both backend quantizers make it share its producer's observer, which sees the
    values before the bound; a rare spike there (BlazeFace's, model/blazeface.py) then sets the
    scale for everything. The producer's observer here sees them clamped: the activation's own
    outputs, as a same-scale op after it (a pad) sees them."""
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in HARDTANH or not isinstance(node.args[0], Node):
            continue
        ann = node.args[0].meta.get("quantization_annotation")
        spec = ann.output_qspec if ann is not None else None
        if spec is None or isinstance(spec, SharedQuantizationSpec) or not hasattr(spec, "observer_or_fake_quant_ctr"):
            continue
        defaults = (-1.0, 1.0)  # aten.hardtanh's min_val, max_val
        lo, hi = (float(a) for a in (*node.args[1:], *defaults[len(node.args) - 1:]))
        ann.output_qspec = dataclasses.replace(spec, observer_or_fake_quant_ctr=_clamped(
            spec.observer_or_fake_quant_ctr, lo, hi))


def _xnnpack(observer: str, qat: bool) -> Quantizer:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)

    class BoundedXNNPACKQuantizer(XNNPACKQuantizer):
        def annotate(self, model: GraphModule) -> GraphModule:
            model = super().annotate(model)
            annotate_bounded(model)
            return model

    return BoundedXNNPACKQuantizer().set_global(
        _with_observer(get_symmetric_quantization_config(is_per_channel=True, is_qat=qat), observer))


SOFTMAX = (torch.ops.aten.softmax.int, torch.ops.aten._softmax.default)


def _annotate_softmax(model: GraphModule, config) -> None:
    """TFLite's int8 SOFTMAX requires output scale 1/256, zero point -128. litert-torch's quantizer
    sets that only on `_softmax` whose input is already annotated; the KT attention's softmax takes
    a `stack` of scores (not annotated) and would get an observed scale the interpreter rejects.

    A read-out softmax stays float with everything after it: probabilities in steps of 1/256 moved
    Faceptor's soft-argmax landmarks 12.7 % in LiteRT (NME 6.96 -> 7.84), and XNNPACK's quantizer
    leaves that tail float anyway (2.6 %)."""
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in SOFTMAX:
            continue
        if tail := readout_tail(node):
            for n in tail:
                n.meta.pop("quantization_annotation", None)
        elif "quantization_annotation" not in node.meta:
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={node.args[0]: config.input_activation}, output_qspec=config.fixed_qparams,
                _annotated=True)
    _drop_dangling(model)


def _litert(observer: str, qat: bool) -> Quantizer:
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    class LiteRTQuantizer(PT2EQuantizer):
        def annotate(self, model: GraphModule) -> GraphModule:
            model = super().annotate(model)
            _annotate_softmax(model, self.global_config)
            annotate_bounded(model)
            return model

    return LiteRTQuantizer().set_global(_with_observer(get_symmetric_quantization_config(is_per_channel=True, is_qat=qat), observer))


def _ethosu(observer: str, qat: bool) -> Quantizer:
    from executorch.backends.arm.ethosu import EthosUCompileSpec
    from executorch.backends.arm.quantizer import EthosUQuantizer, get_symmetric_quantization_config

    class BoundedEthosUQuantizer(EthosUQuantizer):
        def annotate(self, model: GraphModule) -> GraphModule:
            model = super().annotate(model)
            annotate_bounded(model)
            return model

    return BoundedEthosUQuantizer(EthosUCompileSpec("ethos-u55-128")).set_global(
        _with_observer(get_symmetric_quantization_config(is_per_channel=True, is_qat=qat), observer))


# backend -> (quantizer factory, what the manifest says made it)
BACKENDS: dict[str, tuple[Callable[[str, bool], Quantizer], str]] = {
    "executorch": (_xnnpack, "executorch XNNPACKQuantizer"),
    "tflite": (_litert, "litert_torch PT2EQuantizer"),
    "ethosu": (_ethosu, "executorch Arm EthosUQuantizer (ethos-u55 TOSA profile)"),
    "coreml": (_xnnpack, "XNNPACKQuantizer config (coremltools' CoreMLQuantizer needs torch.ao.quantization.quantizer, absent in torch 2.13)"),
}


# Quantized by its runtime's own tool rather than PT2E, behind the same gate (quantize/onnx_int8.py).
RUNTIME_BACKENDS = ("onnx",)
# What each backend writes in quantize/<backend>/.
PROGRAM_FILE = {**{backend: "model.pt2" for backend in BACKENDS}, "onnx": "model.onnx"}
# litert-torch lowers float weights wrapped in quantize/dequantize, not pre-folded int8 constants.
FOLD_QUANTIZE = {"executorch": True, "tflite": False, "coreml": True, "ethosu": True}
# An NPU program has static shapes (quantized and gated at batch 1) and is integer only: no layer
# can go back to float, so the gate gets no fallback.
NPU_BACKENDS = ("ethosu",)


def make_quantizer(backend: str, observer: str, float_layers: list[str], qat: bool = False) -> Quantizer:
    factory, _ = BACKENDS[backend]
    quantizer = factory(observer, qat)
    return FloatLayers(quantizer, float_layers) if float_layers else quantizer
