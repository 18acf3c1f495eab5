import json
import shutil

import pytest
import torch
from PIL import Image
from skimage import data
from torch import nn

from ktedge.config import load_config
from ktedge.errors import KtedgeError
from ktedge.model.checkpoint import load_checkpoint, save_checkpoint
from ktedge.model.fuse import fuse_stage
from ktedge.quantize.stage import quantize_program, quantize_stage
from tests.conftest import TINY, ktedge

QUICK = {"quantize": {"calibration_faces": 32, "eval_faces": 100, "max_float_layers": 4}}


@pytest.fixture(scope="module")
def quantized(exported):
    """The tiny run as the shared `exported` fixture fused and quantized it: every backend."""
    out, cfg, _, _ = exported
    return out, cfg, {b: json.loads((out / "quantize" / b / "sensitivity.json").read_text()) for b in cfg.quantize.backends}


def test_quantize_writes_each_backend_and_meets_the_landmark_gate(quantized):
    out, cfg, results = quantized
    assert set(results) == {"executorch", "tflite", "coreml", "onnx", "ethosu"}
    deploy = json.loads((out / "fuse" / "deployable.json").read_text())["program"]["sha256"]
    for backend, r in results.items():
        d = out / "quantize" / backend
        calib = json.loads((d / "calibration.json").read_text())
        assert calib["images"]["count"] == 32 and calib["observer"] == "histogram" and calib["wall_s"] > 0
        assert r["deploy_sha256"] == deploy  # made from the run's deployable
        assert r["passed"] and r["drift_rel"] <= 0.05 and r["float_layers"] == []
        assert r["int8"] != r["fp32"]  # int8 really ran: the metric moved
        if backend == "onnx":  # onnxruntime's quantizer: QDQ nodes around int8 weights, gated in onnxruntime
            import onnx

            ops = {n.op_type for n in onnx.load(str(d / "model.onnx")).graph.node}
            assert {"QuantizeLinear", "DequantizeLinear"} <= ops
            continue
        sens = json.loads((d / "sensitivity.json").read_text())
        assert sens["layers"] and all({"layer", "sqnr_db", "sqnr_drop_db", "float"} <= set(row) for row in sens["layers"])
        # The saved program is a real int8 PT2E graph and reproduces the measured outputs' scale.
        program = torch.export.load(d / "model.pt2")
        ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
        assert any("quantize_per_tensor" in o for o in ops) and any("dequantize_per_channel" in o for o in ops)


def test_landmark_head_is_one_range_and_flagged_as_such(quantized):
    _, _, results = quantized
    ranges = results["executorch"]["output_ranges"]["landmarks"]
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
    qcfg = load_config(overrides=[TINY, QUICK, {"quantize": {"backends": ["executorch", "tflite"]}, "published": [],
                                                "export": {"formats": ["executorch", "tflite"],
                                                           "only": ["executorch-int8", "tflite-int8"]}}])
    results = quantize_stage(qcfg, run)
    r = results["executorch"]
    first = r["attempts"][0]
    assert first["float_layers"] == [] and first["drift_rel"] > 0.05  # plain PTQ breaks the head
    assert r["passed"] and r["drift_rel"] <= 0.05
    # The crushed edge feeds decoder.mlp.2: taking that layer (and its input edge) to float fixes it.
    assert "decoder.mlp.2" in r["float_layers"] and len(r["float_layers"]) <= 4
    sens = json.loads((run / "quantize" / "executorch" / "sensitivity.json").read_text())
    assert {row["layer"] for row in sens["layers"] if row["float"]} == set(r["float_layers"])
    # Both backends recover the head by the same fallback, and both programs with float layers
    # export and their runtimes measure what quantize measured: ExecuTorch lowers the q/dq pairs
    # XNNPACK leaves beside a float layer to the quantized kernels (without them, "Missing out
    # variants"), and the float layer's producer is float too (an int8-weight Linear with a float
    # output ran to NME 133 in the .pte); litert-torch re-reads the quantizer (it used to crash).
    tflite = results["tflite"]
    assert tflite["passed"] and "decoder.mlp.2" in tflite["float_layers"]
    from ktedge.export.stage import export_stage
    from ktedge.export.validate import validate_stage

    assert [a["ok"] for a in export_stage(qcfg, run)["artifacts"]] == [True, True]
    rows = validate_stage(qcfg, run)["artifacts"]
    for name, q in (("executorch-int8", r), ("tflite-int8", tflite)):
        row = rows[name]
        assert row["validated"] and row["passed"] == q["passed"] and abs(row["drift_rel"] - q["drift_rel"]) < 0.05, (name, row)
    # A fresh process (no exporter imported) loads and runs that .pte too.
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    res = ktedge("predict", str(run / "export" / "executorch-int8"), str(photo))
    assert res.returncode == 0 and "landmarks" in res.stderr, res.stderr


def test_a_float_layer_after_an_int8_linear_runs_in_executorch_as_simulated():
    """The Linear feeding a float layer goes to float with it. Left with int8 weights and a float
    output, it lowered to a .pte ~0.3 off the simulated program on this MLP."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.runtime import Runtime

    from ktedge.export.executorch_format import _lower
    from ktedge.deployable import export_program

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4), nn.Linear(4, 4)).eval()
    x = torch.randn(32, 16)
    program = torch.export.export(mlp, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    q = quantize_program(program, "executorch", "minmax", ["2"], x)
    one = export_program(q, x[:1], dynamic_batch=False)
    pte = _lower(one, XnnpackPartitioner())  # held: the loaded program reads from these bytes
    method = Runtime.get().load_program(pte).load_method("forward")
    with torch.no_grad():
        for row in x[:8]:
            torch.testing.assert_close(method.execute([row[None]])[0], one.module()(row[None]), atol=1e-5, rtol=1e-5)
        assert (q(x) - mlp(x)).abs().max() < 0.05  # and the simulation is the float MLP, give or take int8


def test_quantize_without_a_deployable_is_a_clear_error(tmp_path):
    with pytest.raises(KtedgeError, match=r"fuse/deployable.json: missing; `ktedge fuse --out RUN` or `ktedge import"):
        quantize_stage(load_config(overrides=[TINY, QUICK]), tmp_path)


def _face_pngs(folder, n: int, seed: int = 7) -> list:
    from PIL import Image

    from ktedge.model.data.faces import generate_faces

    folder.mkdir(parents=True, exist_ok=True)
    images = generate_faces(n, seed).tensors()["image"].permute(0, 2, 3, 1).round().byte().numpy()
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"face{i:03d}.png")
    return sorted(folder.iterdir())


def test_quantize_calibrates_on_a_folder_of_your_own_face_crops(quantized, tmp_path):
    src, *_ = quantized
    out = tmp_path / "run"
    shutil.copytree(src, out)
    files = _face_pngs(tmp_path / "crops", 24)
    cfg = load_config(overrides=[TINY, QUICK, {"quantize": {"calibration_dir": str(tmp_path / "crops"),
                                                            "calibration_faces": 20, "backends": ["executorch"]}}])
    r = quantize_stage(cfg, out)["executorch"]
    calib = json.loads((out / "quantize" / "executorch" / "calibration.json").read_text())["images"]
    assert calib["count"] == 20 and calib["files"] == [p.name for p in files[:20]]
    assert r["passed"] and r["int8"] != r["fp32"]
    # The record covers the images themselves: change one and the stage is no longer current.
    from ktedge.quantize.stage import quantize_is_current

    assert quantize_is_current(cfg, out)
    files[3].write_bytes(files[4].read_bytes())
    assert not quantize_is_current(cfg, out)


@pytest.mark.parametrize("n_files, junk, message", [
    (0, False, "holds no PNG or JPEG images"),
    (5, False, "holds 5 images but quantize.calibration_faces asks for 20; add face crops or lower it"),
    (20, True, "face004.png: has 1 channel(s) (mode L)"),
])
def test_a_calibration_folder_that_cannot_serve_is_named(tmp_path, capsys, n_files, junk, message):
    from PIL import Image

    from ktedge.cli import main

    folder = tmp_path / "crops"
    folder.mkdir()
    if n_files:
        files = _face_pngs(folder, n_files)
        if junk:
            Image.open(files[4]).convert("L").save(files[4])
    rc = main(["quantize", "--out", str(tmp_path / "run"), "--set", f"quantize.calibration_dir={folder}",
               "--set", "quantize.calibration_faces=20"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"ktedge: error: {folder}") and message in err and err.count("\n") == 1
