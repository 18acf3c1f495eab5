"""The other systems of the model family (model/systems), trained by `ktedge train` and deployed
through the same fuse -> quantize -> export -> validate chain as the KT model."""
import json

import numpy as np
import pytest
import torch

from ktedge.config import load_config
from ktedge.errors import KtedgeError
from ktedge.model.systems.mzts import BLOCKS_PER_ZONE, MZTS, ZONES, deploy_mzts, mzts_loss
from tests.conftest import TINY

MZTS_CFG = {**TINY, "model": {"system": "mzts", "canonical": {"task": "attributes", "backbone": "vit", "width": 32}},
            "train": {**TINY["train"], "canonical_epochs": 6},
            "quantize": {"backends": ["executorch", "tflite"], "calibration_faces": 32, "eval_faces": 100,
                         "max_float_layers": 2},
            "export": {"formats": ["executorch", "tflite"], "only": ["executorch-int8", "tflite-fp32", "tflite-int8"],
                       "onet": False}}


def test_mzts_zones_exchange_class_tokens_and_distil_from_the_last_zone():
    torch.manual_seed(0)
    model = MZTS(width=32, image_size=64, n_out=9)
    images = torch.rand(5, 3, 64, 64) * 255
    zones = model.zone_logits(images)
    assert len(zones) == ZONES and all(z.shape == (5, 9) for z in zones)
    assert len(model.encoder.backbone.zones) == ZONES and all(len(z) == BLOCKS_PER_ZONE for z in model.encoder.backbone.zones)
    torch.testing.assert_close(model(images), zones[-1])  # inference reads the last zone only
    # The distillation target is detached: the last head learns from its labels only.
    labels = (torch.rand(5, 9) > 0.5).float()
    mzts_loss(zones, labels).backward()
    last_head = model.encoder.backbone.heads[-1][1].weight.grad.clone()
    model.zero_grad()
    torch.nn.functional.binary_cross_entropy_with_logits(model.zone_logits(images)[-1], labels).backward()
    torch.testing.assert_close(model.encoder.backbone.heads[-1][1].weight.grad, last_head)
    # A later zone's class token sees the earlier ones: changing zone 0's token changes zone 1.
    with torch.no_grad():
        before = model.zone_logits(images)[1]
        model.encoder.backbone.cls[0].add_(1.0)
        assert not torch.allclose(model.zone_logits(images)[1], before)


def test_mzts_deploy_folds_the_input_norm_and_drops_the_earlier_heads():
    torch.manual_seed(0)
    model = MZTS(width=32, image_size=64, n_out=9).eval()
    deploy = deploy_mzts(model)
    images = torch.rand(3, 3, 64, 64) * 255
    with torch.no_grad():
        torch.testing.assert_close(deploy(images), model(images), atol=1e-4, rtol=1e-4)
    heads = [sum(p.numel() for p in h.parameters()) for h in deploy.backbone.heads]
    assert heads[:-1] == [0] * (ZONES - 1) and heads[-1] > 0


def test_a_system_with_the_wrong_task_is_a_config_error():
    with pytest.raises(KtedgeError, match="model.system mzts needs model.canonical.task attributes and backbone vit"):
        load_config(overrides=[{"model": {"system": "mzts"}}])


@pytest.fixture(scope="module")
def mzts_run(tmp_path_factory):
    from ktedge.model.train import train

    out = tmp_path_factory.mktemp("mzts")
    cfg = load_config(overrides=[MZTS_CFG])
    return out, cfg, train(cfg, out)


def test_mzts_trains_its_loss_falls_and_it_beats_chance(mzts_run):
    from ktedge.model.data.faces import generate_faces, split_seed

    out, cfg, metrics = mzts_run
    rec = metrics["heads"]["mzts:attributes"]
    assert rec["held_out_loss_after"] < rec["held_out_loss_before"]
    labels = generate_faces(cfg.data.n_val, split_seed(cfg.seed, "val")).tensors()["attributes"].numpy()
    chance = float(np.maximum(labels.mean(0), 1 - labels.mean(0)).mean())  # the majority answer per attribute
    assert metrics["system_model"]["mean_accuracy"] > chance + 0.02, (metrics["system_model"], chance)
    assert metrics["baseline"]["mean_accuracy"] > 0 and len(metrics["per_zone"]) == ZONES
    assert 0 < metrics["params"]["trainable"] <= metrics["params"]["total"]


def test_mzts_passes_fuse_quantize_export_and_validates_in_executorch_and_litert(mzts_run):
    from ktedge.export.stage import export_stage
    from ktedge.export.validate import validate_stage
    from ktedge.model.fuse import fuse_stage
    from ktedge.quantize.stage import quantize_stage

    out, cfg, _ = mzts_run
    parity = fuse_stage(out)
    assert parity["passed"] and parity["params"]["deploy_graph"] < parity["params"]["trained_model"]  # heads dropped
    quantized = quantize_stage(cfg, out)
    assert all(r["passed"] for r in quantized.values())
    index = export_stage(cfg, out)
    assert {a["name"] for a in index["artifacts"] if a["ok"]} == {"executorch-int8", "tflite-fp32", "tflite-int8"}
    manifest = json.loads((out / "export" / "tflite-int8" / "manifest.json").read_text())
    assert manifest["model"] == "mzts-attributes" and manifest["outputs"][0]["kind"] == "multilabel_logits"
    rows = validate_stage(cfg, out)["kt"]["artifacts"]
    for name in ("executorch-int8", "tflite-fp32", "tflite-int8"):
        assert rows[name]["validated"] and rows[name]["passed"], (name, rows[name])
    assert rows["tflite-fp32"]["drift_rel"] < 1e-3


def test_auformer_experts_are_grouped_per_action_unit_and_start_as_the_frozen_vit():
    from ktedge.model.systems.auformer import EXPERT_DIM, AUFormer, ExpertGroup, deploy_auformer

    torch.manual_seed(0)
    model = AUFormer(width=32, image_size=64, experts=8).eval()
    backbone = model.encoder.backbone
    images = torch.rand(3, 3, 64, 64) * 255
    assert model(images).shape == (3, 8)
    assert len(backbone.groups) == 2 * len(backbone.vit.blocks)  # beside the attention and the MLP
    # Zero-initialised up-projections: at the start the experts add nothing to the frozen ViT.
    v = backbone.vit
    x = v.patch(model.encoder.norm(images)).flatten(2).transpose(1, 2) + v.pos
    for blk in v.blocks:
        x = blk(x)
    torch.testing.assert_close(model(images), backbone.head(v.norm(x).mean(1)))
    # One expert per AU: expert 3's output depends only on expert 3's weights (grouped convolutions),
    # and its hidden map is handed to expert 3 of the next group.
    group = ExpertGroup(32, 8)
    torch.nn.init.normal_(group.up.weight)
    tokens = torch.randn(2, 64, 32)
    _, hidden = group(tokens, 8, None)
    assert hidden.shape == (2, 8 * EXPERT_DIM, 8, 8)
    with torch.no_grad():
        group.local.weight[3 * EXPERT_DIM:4 * EXPERT_DIM].add_(1.0)  # change expert 3 only
    _, changed = group(tokens, 8, None)
    diff = (changed - hidden).abs().reshape(2, 8, EXPERT_DIM, 8, 8).amax((0, 2, 3, 4))
    assert diff[3] > 0 and torch.all(diff[torch.arange(8) != 3] == 0)
    handed = torch.zeros_like(hidden)
    handed[:, 3 * EXPERT_DIM:4 * EXPERT_DIM] = 1.0  # what the previous group's expert 3 passes on
    _, received = group(tokens, 8, handed)
    diff = (received - changed).abs().reshape(2, 8, EXPERT_DIM, 8, 8).amax((0, 2, 3, 4))
    assert diff[3] > 0 and torch.all(diff[torch.arange(8) != 3] == 0)
    deploy = deploy_auformer(model)
    with torch.no_grad():
        torch.testing.assert_close(deploy(images), model(images), atol=1e-4, rtol=1e-4)
