import copy
import json

import pytest
import torch

from ktedge.model.checkpoint import load_checkpoint
from ktedge.model.data.faces import generate_faces, split_seed
from ktedge.model.fuse import fold_batchnorm, fold_input_norm, fuse, fuse_stage
from ktedge.model.kt_model import KTModel


@pytest.fixture(scope="module")
def fused(tiny_run):
    out, _ = tiny_run
    return out, fuse_stage(out)


def _faces(cfg, n=16):
    return generate_faces(n, split_seed(cfg.seed, "val"), cfg.data.image_size, cfg.data.n_identities).tensors()["image"]


def test_fuse_writes_a_deploy_graph_that_matches_the_training_graph(fused):
    out, parity = fused
    assert parity["passed"] and parity["max_abs_error"] <= 1e-4 and parity["min_cosine"] > 0.99999
    assert json.loads((out / "fuse" / "parity.json").read_text()) == parity
    model, cfg = load_checkpoint(out / "train" / "checkpoint.pt")
    program = torch.export.load(out / "fuse" / "deploy.pt2")
    x = _faces(cfg)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x[:1]), model(x[:1]), atol=1e-4, rtol=0)
        u8 = torch.export.load(out / "fuse" / "deploy_uint8.pt2").module()(x[:1].to(torch.uint8))
    torch.testing.assert_close(u8, model(x[:1]), atol=1e-4, rtol=0)


def test_deploy_graph_holds_no_prior_encoder_parameter(fused):
    out, parity = fused
    model, _ = load_checkpoint(out / "train" / "checkpoint.pt")
    program = torch.export.load(out / "fuse" / "deploy.pt2")
    names = list(program.state_dict) + list(program.constants)
    assert names and all(n.split(".")[0] in ("backbone", "adapter", "decoder") for n in names)
    assert not any(n.startswith("adapter.priors") for n in names)
    # What is left is at most the canonical encoder + adapter (less its prior-token projections) + d_c.
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    budget = count(model.canonical) + count(model.adapter) - count(model.adapter.priors) + count(model.decoder)
    assert parity["params"]["deploy_graph"] <= budget
    assert parity["params"]["prior_encoders_removed"] == count(model.priors) > 0


def test_batchnorm_and_input_normalisation_are_folded(fused):
    out, _ = fused
    graph = torch.export.load(out / "fuse" / "deploy.pt2").graph
    targets = [str(n.target) for n in graph.nodes if n.op == "call_function" and "sym_size" not in str(n.target)]
    assert not any("batch_norm" in t for t in targets)
    # The first op touches the raw image directly: a pad with the mean, then the folded stem conv.
    assert targets[0].startswith("aten.constant_pad_nd") or targets[0].startswith("aten.pad")
    assert "conv2d" in targets[1]


@pytest.mark.parametrize("backbone, width", [("mobilenet", 16), ("resnet", 16), ("vit", 64)])
@pytest.mark.parametrize("layers", [1, 2])
def test_folded_graph_equals_unfolded(tiny_cfg, backbone, width, layers):
    from dataclasses import replace

    torch.manual_seed(0)
    m = tiny_cfg.model
    cfg = replace(tiny_cfg, model=replace(m, canonical=replace(m.canonical, backbone=backbone, width=width),
                                          adapter=replace(m.adapter, layers=layers)))
    model = KTModel(cfg).eval()
    torch.nn.init.normal_(model.adapter.out.weight, std=0.05)  # W_o is zero at init; make the adapter matter
    for mod in model.canonical.modules():  # non-trivial BatchNorm statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
    x = _faces(cfg, 8)
    with torch.no_grad():
        torch.testing.assert_close(fuse(model)(x), model(x), atol=2e-5, rtol=0)
        # Each fold on its own is exact too.
        enc = model.canonical
        torch.testing.assert_close(fold_input_norm(fold_batchnorm(copy.deepcopy(enc)))(x),
                                   enc(x), atol=2e-5, rtol=0)
