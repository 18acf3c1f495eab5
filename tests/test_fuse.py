import copy
import json
import shutil

import pytest
import torch

from ktedge.atomic import sha256_file
from ktedge.deployable import load_deployable
from ktedge.errors import KtedgeError
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


def test_fuse_writes_a_deployable_that_matches_the_training_graph(fused):
    out, parity = fused
    assert parity["passed"] and parity["max_abs_error"] <= 1e-4 and parity["min_cosine"] > 0.99999
    assert json.loads((out / "fuse" / "parity.json").read_text()) == parity
    model, cfg = load_checkpoint(out / "train" / "checkpoint.pt")
    deployable = load_deployable(out / "fuse")  # schema-checked
    x = _faces(cfg)
    with torch.no_grad():
        torch.testing.assert_close(deployable.program.module()(x[:1]), model(x[:1]), atol=1e-4, rtol=0)
    # The contract every later stage reads: raw RGB at the crop size, one output per task it answers.
    assert deployable.name == "kt-landmarks" and deployable.role == "deploy" and deployable.dynamic_batch
    assert deployable.input["shape"] == [1, 3, 64, 64] and deployable.input["mean"] == [0.0, 0.0, 0.0]
    (out_spec,) = deployable.outputs
    assert (out_spec["name"], out_spec["kind"], out_spec["shape"]) == ("landmarks", "points_xy", [1, 68, 2])
    assert out_spec["task"] == {"name": "landmarks", "metric": "nme", "lower_is_better": True}
    assert deployable.record["provenance"]["source"] == {"kind": "checkpoint", "sha256": parity["checkpoint_sha256"],
                                                         "path": str((out / "train" / "checkpoint.pt").resolve())}
    assert deployable.sha256 == parity["deploy_sha256"] == sha256_file(out / "fuse" / "deploy.pt2")


def test_the_comparison_models_are_deployables_of_their_own(fused):
    out, parity = fused
    model, cfg = load_checkpoint(out / "train" / "checkpoint.pt")
    x = _faces(cfg, 4)
    assert parity["comparisons"] == ["canonical-alone", "ensemble"]
    for folder, mode in (("canonical-alone", "canonical"), ("ensemble", "ensemble")):
        d = load_deployable(out / "fuse" / "comparisons" / folder)
        assert d.role == folder.replace("-", "_") and d.name == f"kt-landmarks-{folder}"
        with torch.no_grad():
            torch.testing.assert_close(d.program.module()(x), model.run(x, mode), atol=1e-4, rtol=0)
    ensemble = load_deployable(out / "fuse" / "comparisons" / "ensemble").program
    assert any(n.startswith("model.priors") for n in ensemble.state_dict)  # every prior runs there


def test_a_changed_deploy_graph_is_refused_by_its_record(fused, tmp_path):
    out, _ = fused
    folder = tmp_path / "fuse"
    shutil.copytree(out / "fuse", folder)
    data = bytearray((folder / "deploy.pt2").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "deploy.pt2").write_bytes(bytes(data))
    with pytest.raises(KtedgeError, match="deploy.pt2: its sha256 is not the one .*deployable.json records"):
        load_deployable(folder).program
    (folder / "deployable.json").write_text("{\"schema\": \"ktedge.deployable/1\"}")
    with pytest.raises(KtedgeError, match="invalid deployable at '\\(top level\\)': 'name' is a required property"):
        load_deployable(folder)


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
