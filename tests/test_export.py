"""Export + validate on a tiny trained run: every format's artifact in its own runtime on real
(synthetic, labelled) faces, manifests checked, the int8-I/O path, named lowering errors, and the
real MTCNN O-Net, imported beside it from its shipped spec, on real LFW crops."""
import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from ktedge.config import load_config
from ktedge.deployable import crop_rule, load_deployable, raw_rgb_input, write_deployable
from ktedge.errors import KtedgeError
from ktedge.export.manifest import load_manifest
from ktedge.export.preprocess import quantize_input
from ktedge.export.registry import exporters
from ktedge.export.runtimes import NotRunnableHere, open_runner
from ktedge.export.source import export_source
from ktedge.export.stage import export_artifacts, export_stage
from ktedge.model.data.datasets import lfw_faces, split_faces
from ktedge.model.data.faces import generate_faces, split_seed
from ktedge.model.fuse import fuse_stage
from ktedge.model.onet import load_pretrained_onet
from ktedge.model.train import predict_outputs
from ktedge.progress import progress
from ktedge.quantize.stage import batch_size
from ktedge.specs import shipped_spec
from tests.conftest import ONET, QUICK, TINY, ktedge

ALL_ARTIFACTS = {e.name for exps in exporters().values() for e in exps}


def _faces(cfg, n=8) -> np.ndarray:
    return generate_faces(n, split_seed(cfg.seed, "test"), cfg.data.image_size).tensors()["image"].numpy()


def test_every_format_and_precision_is_exported_with_a_valid_manifest(exported):
    out, _, index, _ = exported
    assert {a["name"] for a in index["artifacts"] if a["ok"]} == ALL_ARTIFACTS
    deployable = load_deployable(out / "fuse")
    for a in index["artifacts"]:
        m = load_manifest(out / "export" / a["name"])  # schema + sha256 + size
        assert m["size_bytes"] == a["size_bytes"] > 10_000
        # What it came from: the deployable, and the checkpoint the deployable was fused from.
        assert m["source"]["deployable_sha256"] == deployable.sha256 and m["source"]["made_by"] == "ktedge fuse"
        assert m["source"]["origin_sha256"] == json.loads((out / "fuse" / "parity.json").read_text())["checkpoint_sha256"]
        assert m["preprocessing"]["crop_size"] == 64 and m["outputs"][0]["name"] == "landmarks"
        assert m["outputs"][0]["task"] == "landmarks" and m["model"] == "kt-landmarks"
        assert (m["quantization"] is not None) == (m["precision"] in ("int8", "w8", "w8a8"))
        if m["precision"] == "int8":  # made and gated by the quantize stage (one backend per format), converted here
            sens = json.loads((out / "quantize" / m["format"] / "sensitivity.json").read_text())
            assert m["source"]["program_sha256"] == sens["model_sha256"] and sens["passed"]
    # The onnx int8 file is the quantize stage's, byte for byte: export quantizes nothing.
    onnx_int8 = next(a["sha256"] for a in index["artifacts"] if a["name"] == "onnx-int8")
    assert onnx_int8 == json.loads((out / "quantize" / "onnx" / "sensitivity.json").read_text())["model_sha256"]


def test_int8_artifacts_are_at_most_a_third_of_fp32(exported):
    _, _, index, _ = exported
    size = {a["name"]: a["size_bytes"] for a in index["artifacts"]}
    for fmt in ("executorch", "tflite", "onnx"):
        assert size[f"{fmt}-int8"] / size[f"{fmt}-fp32"] < 0.34


@pytest.mark.parametrize("name,tol", [("executorch-fp32", 1e-4), ("tflite-fp32", 1e-4), ("onnx-fp32", 1e-4),
                                      ("tflite-fp16", 2e-3)])
def test_float_artifacts_match_the_torch_program_on_faces(exported, name, tol):
    out, cfg, _, _ = exported
    images = _faces(cfg)
    with torch.no_grad():
        ref = load_deployable(out / "fuse").program.module()(torch.from_numpy(images)).numpy()
    runner = open_runner(out / "export" / name)
    pred = np.concatenate([runner(images[i:i + 1])[0] for i in range(len(images))])
    assert np.abs(pred - ref).max() < tol


def test_validation_runs_every_non_apple_artifact_and_int8_meets_the_gate(exported):
    _, cfg, _, validation = exported
    rows = validation["artifacts"]
    for name, r in rows.items():
        if name.startswith("coreml") or name.endswith("-coreml"):
            assert r["validated"] is False and "not run" in r["accuracy"]
            continue
        assert r["validated"], name
        assert r["cosine_min"] > 0.99, name
        assert set(r["nme_by_region"]) == {"jaw", "brows", "nose", "eyes", "mouth"}
        assert r["drift_rel"] <= cfg.quantize.max_drift_rel and r["passed"], name
        if r["precision"] == "fp32":
            assert r["drift_rel"] < 1e-4


def test_coreml_structural_check_matches_the_precision(exported):
    _, _, _, validation = exported
    rows = validation["artifacts"]
    assert rows["coreml-fp16"]["structure"]["int8_weight_tensors"] == 0
    assert rows["coreml-w8"]["structure"]["int8_weight_tensors"] > 0
    assert rows["coreml-w8a8"]["structure"]["activation_quantize_ops"] > 0
    for name in ("coreml-fp16", "coreml-w8", "coreml-w8a8"):
        assert rows[name]["passed"] and rows[name]["structure"]["outputs_match"]


def test_int8_io_tflite_takes_quantization_parameters_from_its_manifest(exported):
    from ai_edge_litert.interpreter import Interpreter

    out, cfg, _, _ = exported
    d = out / "export" / "tflite-int8-int8io"
    m = load_manifest(d)
    inp = m["input"]
    assert inp["dtype"] == "int8" and inp["layout"] == "NHWC"
    file_scale, file_zero = Interpreter(model_path=str(d / m["file"])).get_input_details()[0]["quantization"]
    assert (inp["quantization"]["scale"], inp["quantization"]["zero_point"]) == (pytest.approx(file_scale), file_zero)
    images = _faces(cfg, 4)
    q = quantize_input(images.transpose(0, 2, 3, 1), inp)
    assert q.dtype == np.int8 and q.min() >= -128
    # Same int8 graph with float I/O: the manifest's parameters must reproduce its results.
    int_io, float_io = open_runner(d), open_runner(out / "export" / "tflite-int8")
    for i in range(len(images)):
        assert np.abs(int_io(images[i:i + 1])[0] - float_io(images[i:i + 1])[0]).max() < 0.02


@pytest.mark.parametrize("where", ["export", f"{ONET}/export"])
def test_each_int8_tflite_file_has_the_io_types_its_name_and_manifest_say(exported, where):
    """tflite-int8 is float I/O: it takes and returns float32 (quantizing inside); tflite-int8-int8io
    takes and returns int8, every output (the KT model's landmarks after a last add, the O-Net's
    box, points and softmax probabilities) with the scale and zero point the manifest states. Read
    from each file itself."""
    from ai_edge_litert.interpreter import Interpreter

    out, *_ = exported
    for name, want in (("tflite-int8", np.float32), ("tflite-int8-int8io", np.int8)):
        d = out / where / name
        m = load_manifest(d)
        it = Interpreter(model_path=str(d / m["file"]))
        assert it.get_input_details()[0]["dtype"] == want and m["input"]["dtype"] == np.dtype(want).name, name
        runner = it.get_signature_runner()
        outputs = runner.get_output_details()
        for o in m["outputs"]:
            detail = outputs[o["tensor"]]
            assert detail["dtype"] == want and o["dtype"] == np.dtype(want).name, (name, o["name"])
            scale, zero = detail["quantization"]
            assert (o["quantization"] is None) == (want == np.float32), (name, o)
            if o["quantization"] is not None:
                assert (o["quantization"]["scale"], o["quantization"]["zero_point"]) == (pytest.approx(scale), zero)
        assert "notes" not in m or not any("stays float32" in n for n in m["notes"]), m.get("notes")


def test_every_artifact_says_where_its_ops_run(exported):
    """The placement read from each file: XNNPACK partitions in the .pte and the .tflite, the
    integer kernels onnxruntime fused from the QDQ graph, float ops named in every int8 graph's
    report only where they are float; summary.json's rows carry the same."""
    from ktedge.pipeline import build_summary

    out, *_ = exported
    summary = build_summary(out)
    rows = {a["name"]: a for a in summary["artifacts"] if a["model"] == summary["model"]}
    for name in ("executorch-fp32", "executorch-int8", "tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"):
        placement = load_manifest(out / "export" / name)["placement"]
        assert rows[name]["placement"] == placement
        assert placement["partitions"] >= 1, name
    et = load_manifest(out / "export" / "executorch-int8")["placement"]
    assert et["delegate"] == "XnnpackBackend" and set(et["float_ops"]) <= set(et["outside"])
    lite = load_manifest(out / "export" / "tflite-int8")["placement"]
    assert lite["delegate"] == "XNNPACK" and lite["ops_in_delegate"] + sum(lite["outside"].values()) == lite["ops"]
    assert "CONV_2D" not in lite["float_ops"]  # the convolutions are int8
    assert "CONV_2D" in load_manifest(out / "export" / "tflite-fp32")["placement"]["float_ops"]
    ort = load_manifest(out / "export" / "onnx-int8")["placement"]
    assert ort["kernels"].get("QLinearConv", 0) > 0  # onnxruntime fused the QDQ convolutions
    apple = load_manifest(out / "export" / "executorch-fp16-coreml")["placement"]  # the plan reads anywhere
    assert apple["delegate"] == "CoreMLBackend" and apple["partitions"] == 1 and apple["outside"] == {}
    assert "placement" not in load_manifest(out / "export" / "coreml-fp32")  # Core ML places ops at load


@pytest.mark.parametrize("where, name", [("export", "executorch-fp32"), ("export", "executorch-int8"),
                                         (f"{ONET}/export", "executorch-int8")])
def test_each_pte_has_a_bundled_program_of_held_out_faces_that_its_runtime_verifies(exported, where, name):
    """model.bpte beside each XNNPACK .pte: the same program and, as test cases, the run's held-out
    faces with the program's own outputs, which ExecuTorch's bundled-program check reproduces; an
    expected output moved by 0.5 fails that check."""
    from executorch.devtools.bundled_program.serialize import (_bundled_program_schema_to_flatbuffer,
                                                               deserialize_from_flatbuffer_to_bundled_program)
    from executorch.extension.pybindings.portable_lib import _load_bundled_program_from_buffer

    from ktedge.atomic import sha256_file

    out, cfg, *_ = exported
    folder = out / where / name
    manifest = load_manifest(folder)
    entry = manifest["bundled_program"]
    path = folder / entry["file"]
    assert entry["sha256"] == sha256_file(path) and entry["method"] == "forward" and entry["cases"] == 4
    buffer = path.read_bytes()
    bundle = _load_bundled_program_from_buffer(buffer)
    runner = open_runner(folder)
    schema = deserialize_from_flatbuffer_to_bundled_program(buffer)
    (suite,) = schema.method_test_suites
    run_cfg = load_config(out / where.removesuffix("export") / "config.yaml") if where != "export" else cfg
    faces = split_faces(run_cfg, "test", n=4).tensors()["image"].numpy()
    for i, case in enumerate(suite.test_cases):
        (x,) = (np.frombuffer(v.val.data, np.float32).reshape(v.val.sizes) for v in case.inputs)
        np.testing.assert_array_equal(x, faces[i:i + 1])  # a real held-out face, as the runtime is fed
        got = bundle.verify_result_with_bundled_expected_output("forward", i, 1e-5, 1e-6)
        for y, want in zip(got, runner(x)):
            np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-6)
    expected = suite.test_cases[0].expected_outputs[0].val
    expected.data = (np.frombuffer(expected.data, np.float32) + 0.5).tobytes()
    moved = _load_bundled_program_from_buffer(_bundled_program_schema_to_flatbuffer(schema))
    with pytest.raises(RuntimeError, match="verification failed"):
        moved.verify_result_with_bundled_expected_output("forward", 0, 1e-5, 1e-6)


def test_a_manifest_with_a_wrong_hash_or_a_missing_field_is_refused(exported, tmp_path):
    out, _, _, _ = exported
    d = tmp_path / "tflite-fp32"
    shutil.copytree(out / "export" / "tflite-fp32", d)
    manifest = json.loads((d / "manifest.json").read_text())
    data = bytearray((d / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(KtedgeError, match="sha256 does not match its manifest"):
        open_runner(d)
    preprocessing = manifest.pop("preprocessing")
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(KtedgeError, match=r"manifest\.json: invalid manifest at '\(top level\)': 'preprocessing' is a required"):
        load_manifest(d)
    manifest["preprocessing"], manifest["input"]["layout"] = preprocessing, "CHWN"
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(KtedgeError, match="invalid manifest at 'input/layout'"):
        load_manifest(d)


def test_coreml_is_not_run_off_apple_and_says_so(exported):
    out, _, _, _ = exported
    with pytest.raises(NotRunnableHere, match=r"Core ML \(macOS/iOS.*\) does not run on this machine \(Apple only\)"):
        open_runner(out / "export" / "coreml-fp16")


class RawONet(nn.Module):
    """The pre-trained O-Net as published, per-channel PReLU included (export rewrites it)."""

    def __init__(self):
        super().__init__()
        self.net = load_pretrained_onet()

    def forward(self, image):
        return self.net((image - 127.5) / 128.0)


def test_an_op_a_format_cannot_lower_is_named_and_other_formats_still_export(tmp_path):
    images = lfw_faces("train", 48).tensors()["image"]
    net = RawONet().eval()
    outputs = [{"name": n, "shape": s, "kind": "value", "decode": "-", "task": None}
               for n, s in (("box", [1, 4]), ("landmarks5", [1, 10]), ("prob", [1, 2]))]
    program = torch.export.export(net, (images[:1],))
    deployable = write_deployable(tmp_path / "fuse", program, name="onet-as-published", role="deploy",
                                  input=raw_rgb_input(48, crop_rule("-")), outputs=outputs, dynamic_batch=False,
                                  provenance={"made_by": "ktedge import",
                                              "source": {"kind": "exported_program", "sha256": "0" * 64}})
    src = export_source(deployable, tmp_path, [], images[:1], "minmax")
    todo = [e for f in ("coreml", "tflite") for e in exporters()[f]]
    with progress() as bar:
        results = {r["name"]: r for r in export_artifacts(src, tmp_path / "export", todo, bar)}
    err = results["coreml-fp16"]
    assert not err["ok"] and "coreml cannot lower op aten.prelu (in module net.prelu1 (PReLU)" in err["error"]
    assert "no int8 program for backend 'coreml'" in results["coreml-w8a8"]["error"]
    assert not (tmp_path / "export" / "coreml-fp16").exists()  # nothing half-written
    assert results["tflite-fp32"]["ok"] and results["tflite-fp16"]["ok"]
    out = open_runner(tmp_path / "export" / "tflite-fp32")(images[:1].numpy())
    with torch.no_grad():
        ref = net(images[:1])
    assert all(np.allclose(o, r.numpy(), atol=1e-4) for o, r in zip(out, ref))


def test_onet_imported_from_its_shipped_spec_survives_int8_on_real_lfw_faces(exported):
    """The real O-Net through `ktedge import`'s path beside the run: its face task on real LFW crops
    (faces and non-faces) and its five points against the float program, in every runtime."""
    out, *_ = exported
    deployable = load_deployable(out / ONET / "fuse")
    assert deployable.name == "mtcnn-onet" and deployable.record["provenance"]["made_by"] == "ktedge import"
    assert [o["task"] and o["task"]["name"] for o in deployable.outputs] == [None, None, "face"]
    onet = json.loads((out / ONET / "validate" / "accuracy.json").read_text())
    assert onet["tasks_fp32_torch"]["face"]["value"] >= 95.0  # the real pre-trained model on real crops
    runnable = {k: r for k, r in onet["artifacts"].items() if r["validated"]}
    assert {"executorch-int8", "tflite-int8", "onnx-int8"} <= set(runnable)
    for name, r in runnable.items():
        assert r["tasks"]["face"]["value"] >= onet["tasks_fp32_torch"]["face"]["value"] - 1.0, name
        assert r["outputs"]["landmarks5"]["nme_vs_fp32"] <= r["outputs"]["landmarks5"]["gate"] == 2.0, name
        assert r["passed"], name


def test_export_without_quantized_programs_is_a_clear_error(tiny_run, tmp_path):
    src, _ = tiny_run
    shutil.copytree(src / "train", tmp_path / "train")
    fuse_stage(tmp_path)
    cfg = load_config(overrides=[TINY, QUICK, {"published": []}])
    with pytest.raises(KtedgeError, match=r"quantize/executorch/model\.pt2: missing \(run `ktedge quantize"):
        export_stage(cfg, tmp_path)


def test_the_real_onet_imported_as_a_pt2_is_the_published_deployable(exported, tmp_path):
    """The O-Net exported by hand to a .pt2 and imported with the spec ktedge ships computes what
    the deployable ktedge imports from its factory beside every run computes (one graph, one set of
    weights), and answers the real LFW crops as it does: the rest of the chain is the published one."""
    run, *_ = exported
    program = torch.export.export(load_pretrained_onet(), (torch.zeros(1, 3, 48, 48),))
    torch.export.save(program, tmp_path / "onet.pt2")
    out = tmp_path / "onet"
    r = ktedge("import", str(tmp_path / "onet.pt2"), "--spec", str(shipped_spec("mtcnn-onet")), "--out", str(out))
    assert r.returncode == 0, r.stderr
    same = json.loads((run / ONET / "fuse" / "deployable.json").read_text())
    mine = json.loads((out / "fuse" / "deployable.json").read_text())
    assert mine["program"]["graph_sha256"] == same["program"]["graph_sha256"]  # .pt2 or factory: one model
    assert mine["outputs"] == same["outputs"] and mine["input"] == same["input"]
    assert mine["provenance"]["source"]["kind"] == "exported_program" and same["provenance"]["source"]["kind"] == "factory"
    faces = split_faces(load_config(out / "config.yaml"), "test", ("face",), n=60).tensors()["image"]
    a, b = (predict_outputs(d.program.module(), faces, batch_size(d))
            for d in (load_deployable(out / "fuse"), load_deployable(run / ONET / "fuse")))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
