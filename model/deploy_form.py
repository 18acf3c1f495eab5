"""Rewrites that keep a model's values and give every exporter ops it lowers. DESIGN: if an op
does not lower to every format, replace the op, not the format."""
from __future__ import annotations

import copy

import torch
from torch import fx, nn


class PReLUAsMax(nn.Module):
    """PReLU as r + a * (x - r) with r = max(x, 0), exactly. Core ML rejects a per-channel PReLU on
    rank-3 input and XNNPACK's channels-last pass fails on it after a Linear; max/sub/mul lower
    everywhere. Not max(x, 0) + a * min(x, 0): LiteRT's int8 converter gives min(x, 0)'s
    input the min's own [.., 0] range, and where x is a residual ADD (FaceMesh's blocks) the
    ADD's positive half then saturates (FaceMesh's int8 file: 191 % NME against the original)."""

    def __init__(self, prelu: nn.PReLU):
        super().__init__()
        self.register_buffer("alpha", prelu.weight.detach().clone())  # (C,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha.view(1, -1, *([1] * (x.dim() - 2)))  # broadcast over the channel axis
        r = torch.clamp(x, min=0)
        return r + a * (x - r)


def replace_prelu(module: nn.Module) -> nn.Module:
    """A copy of `module` with every nn.PReLU computed as PReLUAsMax (same values)."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.PReLU):
                setattr(parent, name, PReLUAsMax(child))
    return module


# Graph rewrites on a user's program (`ktedge import`), on the GraphModule `ExportedProgram.module()`
# gives: its weights are get_attr nodes, its ops ATen calls.
aten = torch.ops.aten


def _user_input(gm: fx.GraphModule) -> fx.Node:
    return next(n for n in gm.graph.nodes if n.op == "placeholder")


def _attr(gm: fx.GraphModule, node: fx.Node | None) -> torch.Tensor | None:
    return None if node is None else gm.get_parameter(node.target) if _is_param(gm, node) else gm.get_buffer(node.target)


def _is_param(gm: fx.GraphModule, node: fx.Node) -> bool:
    try:
        gm.get_parameter(node.target)
        return True
    except AttributeError:
        return False


def _new_attr(gm: fx.GraphModule, before: fx.Node, name: str, value: torch.Tensor) -> fx.Node:
    """Register `value` as a parameter of `gm` and return a get_attr node for it."""
    target = name
    while hasattr(gm, target):
        target += "_"
    gm.register_parameter(target, nn.Parameter(value.detach().clone(), requires_grad=False))
    with gm.graph.inserting_before(before):
        return gm.graph.get_attr(target)


def drop_guards(gm: fx.GraphModule) -> fx.GraphModule:
    """Drop the input-shape guard torch.export puts in `module()`, so the graph can be re-exported
    for another batch size (whether it then gives the same answers is checked, see importer)."""
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            gm.graph.erase_node(node)
    gm.recompile()
    return gm


@torch.no_grad()
def fold_batchnorm_nodes(gm: fx.GraphModule) -> int:
    """conv2d -> batch_norm (eval) pairs folded into the conv's weight and bias. -> how many."""
    folded = 0
    for bn in [n for n in gm.graph.nodes if n.op == "call_function" and n.target == aten.batch_norm.default]:
        conv, gamma, beta, mean, var, training, _, eps = bn.args[:8]
        if training or conv.op != "call_function" or conv.target != aten.conv2d.default or len(conv.users) != 1:
            continue
        w, b = _attr(gm, conv.args[1]), _attr(gm, conv.args[2] if len(conv.args) > 2 else None)
        g = _attr(gm, gamma) if gamma is not None else torch.ones_like(_attr(gm, var))
        scale = g / torch.sqrt(_attr(gm, var) + eps)  # (C_out,)
        shift = (_attr(gm, beta) if beta is not None else torch.zeros_like(scale)) - _attr(gm, mean) * scale
        bias = shift + (b * scale if b is not None else 0)
        args = list(conv.args) + [None] * (3 - len(conv.args))
        args[1] = _new_attr(gm, conv, f"{conv.name}_bn_weight", w * scale[:, None, None, None])
        args[2] = _new_attr(gm, conv, f"{conv.name}_bn_bias", bias)
        conv.args = tuple(args)
        bn.replace_all_uses_with(conv)
        gm.graph.erase_node(bn)
        folded += 1
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return folded


@torch.no_grad()
def fold_input_normalisation(gm: fx.GraphModule, mean: list[float], std: list[float], bgr: bool = False) -> str:
    """The graph took (pixel - mean) / std (mean, std in its own channel order; `bgr`: it took BGR);
    afterwards it takes raw RGB pixels. Folded into the first convolution's weights where it alone
    reads the input (zero padding of the normalised image is the mean's padding of the raw one, so
    that pad is made explicit and the fold is exact; BGR reverses the weights' input channels),
    else written at the input as a channel flip, a subtraction and a multiplication.
    -> what was done, in words."""
    x = _user_input(gm)
    users = [u for u in x.users if not (u.op == "call_module" and u.target == "_guards_fn")]
    m = torch.tensor(mean, dtype=torch.float32)
    s = torch.tensor(std, dtype=torch.float32)
    conv = users[0] if len(users) == 1 else None
    if (conv is not None and conv.op == "call_function" and conv.target == aten.conv2d.default and conv.args[0] is x
            and _attr(gm, conv.args[1]) is not None and _attr(gm, conv.args[1]).shape[1] == 3
            and (len(conv.args) < 7 or conv.args[6] == 1)):
        padding = list(conv.args[4]) if len(conv.args) > 4 else [0, 0]
        if any(padding) and not torch.all(m == m[0]):
            return _normalise_at_input(gm, x, m, s, bgr)
        w, b = _attr(gm, conv.args[1]), _attr(gm, conv.args[2] if len(conv.args) > 2 else None)
        if bgr:  # input channel k of the RGB image is the model's channel 2 - k
            w, m, s = w.flip(1), m.flip(0), s.flip(0)
        args = list(conv.args) + [None] * (3 - len(conv.args))  # (input, weight, bias, stride, padding, ...)
        args[1] = _new_attr(gm, conv, "input_norm_weight", w / s[None, :, None, None])
        bias = (b if b is not None else torch.zeros(w.shape[0])) - (w * (m / s)[None, :, None, None]).sum((1, 2, 3))
        args[2] = _new_attr(gm, conv, "input_norm_bias", bias)
        if any(padding):
            ph, pw = padding
            with gm.graph.inserting_before(conv):
                args[0] = gm.graph.call_function(aten.constant_pad_nd.default, (x, [pw, pw, ph, ph], float(m[0])))
            args[4] = [0, 0]
        conv.args = tuple(args)
        gm.recompile()
        return "input normalisation" + (" and BGR order" if bgr else "") + " folded into the first convolution"
    return _normalise_at_input(gm, x, m, s, bgr)


def _normalise_at_input(gm: fx.GraphModule, x: fx.Node, mean: torch.Tensor, std: torch.Tensor, bgr: bool) -> str:
    first = next(n for n in gm.graph.nodes if n.op not in ("placeholder", "get_attr"))
    m = _new_attr(gm, first, "input_mean", mean.reshape(1, 3, 1, 1))
    r = _new_attr(gm, first, "input_inv_std", (1.0 / std).reshape(1, 3, 1, 1))
    with gm.graph.inserting_before(first):
        ordered = gm.graph.call_function(aten.flip.default, (x, [1])) if bgr else x
        centred = gm.graph.call_function(aten.sub.Tensor, (ordered, m))
        scaled = gm.graph.call_function(aten.mul.Tensor, (centred, r))
    for user in list(x.users):
        if user not in (centred, ordered) and not (user.op == "call_module" and user.target == "_guards_fn"):
            user.replace_input_with(x, scaled)
    gm.recompile()
    return "input normalisation" + (" and BGR order" if bgr else "") + " written at the input"


@torch.no_grad()
def prelu_as_max(gm: fx.GraphModule) -> int:
    """Every aten.prelu as r + a * (x - r), r = max(x, 0) (see PReLUAsMax). -> how many."""
    count = 0
    for node in [n for n in gm.graph.nodes if n.op == "call_function" and n.target == aten.prelu.default]:
        x, weight = node.args
        rank = len(x.meta["val"].shape) if "val" in x.meta else 4
        alpha = _attr(gm, weight).reshape(1, -1, *([1] * (rank - 2)))
        a = _new_attr(gm, node, f"{node.name}_alpha", alpha)
        with gm.graph.inserting_before(node):
            pos = gm.graph.call_function(aten.clamp.default, (x, 0.0, None))
            neg = gm.graph.call_function(aten.sub.Tensor, (x, pos))
            out = gm.graph.call_function(aten.add.Tensor, (pos, gm.graph.call_function(aten.mul.Tensor, (a, neg))))
        node.replace_all_uses_with(out)
        gm.graph.erase_node(node)
        count += 1
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return count
