import json
import shutil

import pytest
import torch

from ktedge.config import load_config
from ktedge.errors import KtedgeError
from ktedge.model.checkpoint import load_checkpoint, save_checkpoint
from ktedge.model.fuse import fuse_stage
from ktedge.quantize.stage import quantize_stage
from tests.conftest import TINY

QUICK = {"quantize": {"calibration_faces": 32, "eval_faces": 100, "max_float_layers": 4}}


@pytest.fixture(scope="module")
def quantized(tiny_run):
    out, _ = tiny_run
    if not (out / "fuse" / "deploy.pt2").is_file():
        fuse_stage(out)
    cfg = load_config(overrides=[TINY, QUICK])
    return out, cfg, quantize_stage(cfg, out)


def test_quantize_writes_each_backend_and_meets_the_landmark_gate(quantized):
    out, cfg, results = quantized
    assert set(results) == {"executorch", "tflite", "coreml"}
    for backend, r in results.items():
        d = out / "quantize" / backend
        calib = json.loads((d / "calibration.json").read_text())
        assert calib["images"]["count"] == 32 and calib["observer"] == "histogram" and calib["wall_s"] > 0
        sens = json.loads((d / "sensitivity.json").read_text())
        assert sens["layers"] and all({"layer", "sqnr_db", "sqnr_drop_db", "float"} <= set(row) for row in sens["layers"])
        assert r["passed"] and r["drift_rel"] <= 0.05 and r["float_layers"] == []
        assert r["int8"] != r["fp32"]  # int8 really ran: the metric moved
        # The saved program is a real int8 PT2E graph and reproduces the measured outputs' scale.
        program = torch.export.load(d / "model.pt2")
        ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
        assert any("quantize_per_tensor" in o for o in ops) and any("dequantize_per_channel" in o for o in ops)


def test_landmark_head_is_one_range_and_flagged_as_such(quantized):
    _, _, results = quantized
    ranges = results["executorch"]["output_ranges"]
    assert not ranges["mixed_ranges"] and 0.0 <= ranges["min"] < ranges["max"] <= 1.5


def test_mixed_precision_fallback_fires_on_a_layer_made_sensitive(quantized, tmp_path):
    """One decoder unit carries a huge activation that the float output ignores: a per-tensor int8
    scale then crushes every other unit. PTQ must miss the gate, fall back, and then meet it."""
    out, _, _ = quantized
    run = tmp_path / "sabotaged"
    shutil.copytree(out / "train", run / "train")
    model, cfg = load_checkpoint(run / "train" / "checkpoint.pt")
    with torch.no_grad():
        model.decoder.mlp[0].bias[0] = 5000.0
        model.decoder.mlp[2].weight[:, 0] = 0.0
    save_checkpoint(run / "train" / "checkpoint.pt", model, cfg)
    with pytest.raises(KtedgeError, match=r"checkpoint.pt: its sha256 is not the one .*metrics.json recorded"):
        fuse_stage(run)  # a checkpoint changed behind its training record is refused
    (run / "train" / "metrics.json").unlink()  # one brought in by hand, with no record, is taken as it is
    fuse_stage(run)
    qcfg = load_config(overrides=[TINY, QUICK, {"quantize": {"backends": ["executorch"]}}])
    r = quantize_stage(qcfg, run)["executorch"]
    first = r["attempts"][0]
    assert first["float_layers"] == [] and first["drift_rel"] > 0.05  # plain PTQ breaks the head
    assert r["passed"] and r["drift_rel"] <= 0.05
    # The crushed edge feeds decoder.mlp.2: taking that layer (and its input edge) to float fixes it.
    assert "decoder.mlp.2" in r["float_layers"] and len(r["float_layers"]) <= 4
    sens = json.loads((run / "quantize" / "executorch" / "sensitivity.json").read_text())
    assert {row["layer"] for row in sens["layers"] if row["float"]} == set(r["float_layers"])


def test_quantize_without_a_deploy_graph_is_a_clear_error(tmp_path):
    with pytest.raises(KtedgeError, match=r"fuse/deploy.pt2: no deploy graph \(run `ktedge fuse"):
        quantize_stage(load_config(overrides=[TINY, QUICK]), tmp_path)
