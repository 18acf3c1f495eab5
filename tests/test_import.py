"""Your own model in (`ktedge import` + `ktedge run`, and `ktedge.deploy`): a model written and
trained here on a CSV folder of faces, exported with torch.export, goes through the whole chain
without ktedge training anything; the real MTCNN O-Net comes in as a `.pt2` with its shipped spec;
every bad input is one line naming the file, exit 2, nothing written over."""
import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from ktedge.config import load_config
from ktedge.model.data.datasets import split_faces
from ktedge.specs import shipped_spec
from tests.conftest import ktedge
from tests.dataset_folders import write_csv_folder

SIZE = 64
MEAN, STD = [127.5, 127.5, 127.5], [127.5, 127.5, 127.5]
SPEC = {"name": "my-agenet", "input": {"size": SIZE, "colour": "RGB", "mean": MEAN, "std": STD},
        "outputs": [{"name": "age", "kind": "value", "task": "age"}]}
# The chain's quick settings for a CI-size run (the stages are the real ones).
QUICK_RUN = ["--set", "quantize.calibration_faces=32", "--set", "quantize.eval_faces=100",
             "--set", "bench.warmup=2", "--set", "bench.iters=10", "--set", "bench.rounds=2"]
RUNS_HERE = ("executorch-fp32", "executorch-int8", "tflite-fp32", "tflite-fp16", "tflite-int8", "tflite-int8-int8io",
             "onnx-fp32", "onnx-int8", "ethosu-int8-u55", "ethosu-int8-u85")


class AgeNet(nn.Module):
    """A user's own model: (1, 3, 64, 64) RGB as (pixel - 127.5) / 127.5 -> age in years (1,)."""

    def __init__(self):
        super().__init__()
        layers, c_in = [], 3
        for c in (16, 24, 32, 48):
            layers += [nn.Conv2d(c_in, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(48 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 48.0 + 16.0 * self.head(self.features(x))[:, 0]


def age_net() -> nn.Module:
    """The factory `--factory tests.test_import:age_net` names."""
    return AgeNet()


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """Faces in a CSV folder, and AgeNet trained on them briefly (as a user would, outside ktedge),
    saved as a torch.export .pt2, a state dict and a spec. -> (folder, paths, the module)."""
    root = tmp_path_factory.mktemp("user")
    cfg = load_config(overrides=[{"data": {"n_train": 600, "n_val": 150}}])
    for split in ("train", "val"):
        write_csv_folder(split_faces(cfg, split), root / "faces" / split, ("age",))
    data = load_config(overrides=[{"data": {"format": "csv", "train_dir": str(root / "faces" / "train"),
                                            "val_dir": str(root / "faces" / "val")}}])
    faces = split_faces(data, "train", ("age",)).tensors()
    x, y = (faces["image"] - 127.5) / 127.5, faces["age"]
    torch.manual_seed(0)
    model = AgeNet()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(12):
        for idx in torch.randperm(len(x)).split(32):
            loss = torch.nn.functional.smooth_l1_loss(model(x[idx]), y[idx], beta=2.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    paths = {"pt2": root / "agenet.pt2", "weights": root / "agenet.pth", "spec": root / "spec.yaml"}
    torch.export.save(torch.export.export(model, (x[:1],)), paths["pt2"])
    torch.save(model.state_dict(), paths["weights"])
    paths["spec"].write_text(yaml.safe_dump(SPEC))
    return root, paths, model


def _data_args(root) -> list[str]:
    return ["--set", "data.format=csv", "--set", f"data.train_dir={root / 'faces' / 'train'}",
            "--set", f"data.val_dir={root / 'faces' / 'val'}"]


@pytest.fixture(scope="module")
def imported(user, tmp_path_factory):
    """`ktedge import agenet.pt2 --spec spec.yaml` and `ktedge run` on it, as a user types them."""
    root, paths, _ = user
    out = tmp_path_factory.mktemp("imported") / "run"
    r = ktedge("import", str(paths["pt2"]), "--spec", str(paths["spec"]), "--out", str(out), *_data_args(root),
               *QUICK_RUN)
    assert r.returncode == 0, r.stderr
    r = ktedge("run", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out, json.loads((out / "summary.json").read_text()), r.stderr


def test_your_model_goes_through_the_whole_chain_and_nothing_is_trained(imported):
    out, summary, log = imported
    assert not (out / "train").exists() and "nothing to train" in log
    deployable = json.loads((out / "fuse" / "deployable.json").read_text())
    assert deployable["provenance"]["made_by"] == "ktedge import"
    assert "input normalisation folded into the first convolution" in deployable["provenance"]["folded"]
    assert "4 BatchNorm folded into their convolutions" in deployable["provenance"]["folded"]
    assert deployable["input"]["mean"] == [0.0, 0.0, 0.0]  # the artifacts take raw RGB, like ktedge's own
    arts = {a["name"]: a for a in summary["artifacts"]}
    assert {a["model"] for a in summary["artifacts"]} == {"my-agenet"}
    for name in RUNS_HERE:  # each in its own runtime, against the gate
        a = arts[name]
        assert a["validated"] and a["passed"] and a["metric"] > 0, (name, a)
    for name in ("coreml-fp32", "coreml-fp16", "coreml-w8", "coreml-w8a8", "executorch-fp16-coreml"):
        assert arts[name]["not_run"] == "Apple only"
    for name in ("coreml-fp32", "coreml-fp16", "coreml-w8", "coreml-w8a8"):
        assert arts[name]["passed"]  # its structure checked: inputs, outputs, weight storage
    validation = json.loads((out / "validate" / "accuracy.json").read_text())
    fp32 = validation["tasks_fp32_torch"]["age"]["value"]
    ages = split_faces(load_config(out / "config.yaml"), "val", ("age",)).tensors()["age"].numpy()
    assert fp32 < 0.8 * np.abs(ages - np.median(ages)).mean()  # the model learnt age: beats the median answer
    for backend in ("executorch", "tflite", "coreml", "onnx", "ethosu"):
        assert summary["quantize"][backend]["passed"], backend
    assert summary["train"]["imported"]["kind"] == "exported_program"
    assert "Imported by `ktedge import`" in (out / "report.md").read_text()


def test_the_folded_graph_equals_the_users_model_on_raw_pixels(imported, user):
    out, _, _ = imported
    _, _, model = user
    program = torch.export.load(out / "fuse" / "deploy.pt2")
    names = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert not any("batch_norm" in n for n in names) and not any(n.startswith("aten.sub") for n in names)
    faces = split_faces(load_config(out / "config.yaml"), "val", ("age",)).tensors()["image"][:8]
    with torch.no_grad():
        torch.testing.assert_close(program.module()(faces), model((faces - 127.5) / 127.5), atol=1e-3, rtol=1e-5)


def test_deploy_from_python_gives_the_cli_artifacts_byte_for_byte(imported, user, tmp_path):
    import ktedge

    out, summary, _ = imported
    root, _, model = user
    example = (split_faces(load_config(out / "config.yaml"), "train", ("age",)).tensors()["image"][:1] - 127.5) / 127.5
    only = ["executorch-int8", "tflite-int8", "onnx-int8", "tflite-fp32"]
    data = {"format": "csv", "train_dir": str(root / "faces" / "train"), "val_dir": str(root / "faces" / "val")}
    result = ktedge.deploy(model, example, SPEC, out=tmp_path / "notebook", data=data,
                           overrides=[{"quantize": {"calibration_faces": 32, "eval_faces": 100,
                                                    "backends": ["executorch", "tflite", "onnx"]},  # what `only` needs
                                       "export": {"only": only}, "bench": {"warmup": 1, "iters": 5, "rounds": 1}}])
    cli = {a["name"]: a["sha256"] for a in summary["artifacts"] if a["name"] in only}
    assert {a["name"]: a["sha256"] for a in result["artifacts"]} == cli
    assert all(a["passed"] for a in result["artifacts"])


# --- bad input: one line naming the file, exit 2, nothing written over ---------------------------

def _import(out, model, spec, *extra) -> "subprocess.CompletedProcess":  # noqa: F821
    return ktedge("import", *([str(model)] if model else []), "--spec", str(spec), "--out", str(out), *extra)


def _spec(tmp_path, **change) -> str:
    path = tmp_path / f"bad-spec-{len(list(tmp_path.glob('bad-spec-*')))}.yaml"  # one file per case
    path.write_text(yaml.safe_dump({**SPEC, **change}))
    return path


@pytest.fixture()
def earlier(user, tmp_path):
    """A run directory a good import wrote: what every bad import after it must leave untouched."""
    root, paths, _ = user
    out = tmp_path / "run"
    r = _import(out, paths["pt2"], paths["spec"], *_data_args(root))
    assert r.returncode == 0, r.stderr
    return out, {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _refused(r, earlier, *words) -> None:
    out, files = earlier
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("ktedge: error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert all(w in r.stderr for w in words), r.stderr
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == files


def test_a_spec_that_disagrees_with_the_program_is_refused(user, earlier, tmp_path):
    root, paths, _ = user
    out = earlier[0]
    two = [{"name": "age", "kind": "value", "task": "age"}, {"name": "extra", "kind": "value"}]
    cases = [
        (_spec(tmp_path, outputs=two), "the model gives 1 output(s), the spec lists 2 (age, extra)"),
        (_spec(tmp_path, outputs=[{"name": "age", "kind": "value", "task": "age", "shape": [1, 2]}]),
         "output age has shape [1], the spec says [1, 2]"),
        (_spec(tmp_path, outputs=[{"name": "age", "kind": "heatmap", "task": "age"}]),
         "invalid spec at 'outputs/0/kind': 'heatmap' is not one of"),
        (_spec(tmp_path, outputs=[{"name": "age", "kind": "value", "task": "gender"}]),
         "output age: unknown task 'gender'"),
        (_spec(tmp_path, outputs=[{"name": "age", "kind": "value", "task": "landmarks"}]),
         "task landmarks is read as kind points_xy, the spec says value"),
        (_spec(tmp_path, input={"size": 96}), "the model takes ['1', '3', '64', '64']; "),
    ]
    for spec, message in cases:
        _refused(_import(out, paths["pt2"], spec, *_data_args(root)), earlier, str(spec), message)
    # A task whose labels the data lacks: the folder labels age only.
    spec = _spec(tmp_path, outputs=[{"name": "smile", "kind": "multilabel_logits", "task": "attributes"}])
    _refused(_import(out, paths["pt2"], spec, *_data_args(root)), earlier, str(root / "faces" / "val"),
             "labels only age (missing: attributes)")


def test_a_model_that_is_not_an_exported_program_is_refused(user, earlier, tmp_path):
    root, paths, model = user
    out = earlier[0]
    torch.save(model, tmp_path / "pickled.pth", _use_new_zipfile_serialization=True)  # a whole-module pickle
    torch.jit.save(torch.jit.trace(model, torch.zeros(1, 3, SIZE, SIZE)), tmp_path / "scripted.pt")
    (tmp_path / "cut.pt2").write_bytes(paths["pt2"].read_bytes()[:5000])
    for bad in ("pickled.pth", "scripted.pt", "cut.pt2"):
        _refused(_import(out, tmp_path / bad, paths["spec"], *_data_args(root)), earlier, str(tmp_path / bad),
                 "not a torch.export program")


def test_a_factory_that_does_not_import_or_weights_that_do_not_fit_are_refused(user, earlier, tmp_path):
    root, paths, model = user
    out = earlier[0]
    _refused(_import(out, None, paths["spec"], "--factory", "tests.nowhere:age_net", *_data_args(root)), earlier,
             "--factory tests.nowhere:age_net: cannot import it (ModuleNotFoundError")
    state = model.state_dict()
    state["head.3.weight"] = torch.zeros(2, 64)
    torch.save(state, tmp_path / "wrong.pth")
    _refused(_import(out, None, paths["spec"], "--factory", "tests.test_import:age_net", "--weights",
                     str(tmp_path / "wrong.pth"), *_data_args(root)), earlier, str(tmp_path / "wrong.pth"),
             "the weights do not fit tests.test_import:age_net (shape mismatch: head.3.weight)")
    # The right weights through the factory give the .pt2's deployable.
    r = _import(tmp_path / "from-factory", None, paths["spec"], "--factory", "tests.test_import:age_net",
                "--weights", str(paths["weights"]), *_data_args(root))
    assert r.returncode == 0, r.stderr
    a, b = (json.loads((d / "fuse" / "deployable.json").read_text()) for d in (earlier[0], tmp_path / "from-factory"))
    assert a["program"]["graph_sha256"] == b["program"]["graph_sha256"] and a["outputs"] == b["outputs"]


# --- your encoders as KT priors ------------------------------------------------------------------

class ONetFeatures(nn.Module):
    """The O-Net's 256-d feature of a raw RGB crop: a prior a user brings as a .pt2."""

    def __init__(self):
        super().__init__()
        from ktedge.model.encoders import ONetEncoder
        from ktedge.model.onet import load_pretrained_onet

        self.encoder = ONetEncoder(load_pretrained_onet())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def test_a_kt_model_over_your_pt2_encoders_trains_and_deploys_without_them(user, tmp_path):
    from ktedge.model.checkpoint import load_checkpoint
    from tests.conftest import TINY

    _, paths, model = user
    torch.export.save(torch.export.export(ONetFeatures().eval(), (torch.zeros(1, 3, SIZE, SIZE),)),
                      tmp_path / "onet_features.pt2")
    trunk = nn.Sequential(AgeNet().features, nn.Flatten())  # the user's age CNN as a feature map encoder
    trunk[0].load_state_dict(model.features.state_dict())
    torch.export.save(torch.export.export(_Raw(trunk).eval(), (torch.zeros(1, 3, SIZE, SIZE),)),
                      tmp_path / "age_features.pt2")
    priors = [{"task": "face", "backbone": "program", "width": 8, "pretrained": str(tmp_path / "onet_features.pt2")},
              {"task": "age", "backbone": "program", "width": 8, "pretrained": str(tmp_path / "age_features.pt2")}]
    config = tmp_path / "kt.yaml"
    config.write_text(yaml.safe_dump({**TINY, "model": {"priors": priors}, "published": [],
                                      "quantize": {"backends": ["tflite"], "calibration_faces": 32, "eval_faces": 60},
                                      "export": {"formats": ["tflite"], "only": ["tflite-int8"]},
                                      "bench": {"warmup": 1, "iters": 5, "rounds": 1}}))
    out = tmp_path / "run"
    r = ktedge("run", "--out", str(out), "--config", str(config))
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "train" / "metrics.json").read_text())
    assert set(metrics["heads"]) == {"canonical:landmarks", "kt_adapter:landmarks"}  # the priors came trained
    _, cfg = load_checkpoint(out / "train" / "checkpoint.pt")
    deploy = torch.export.load(out / "fuse" / "deploy.pt2")
    assert all(n.split(".")[0] in ("backbone", "adapter", "decoder") for n in deploy.state_dict)  # no prior in it
    summary = json.loads((out / "summary.json").read_text())
    (art,) = summary["artifacts"]
    assert art["name"] == "tflite-int8" and art["validated"] and art["passed"]
    # The checkpoint holds each prior's sha256: a changed file is refused, naming it.
    with open(tmp_path / "age_features.pt2", "ab") as f:
        f.write(b"\0")
    r = ktedge("fuse", "--out", str(out))
    assert r.returncode == 2 and f"{tmp_path / 'age_features.pt2'}: the pretrained encoder" in r.stderr, r.stderr
    assert "has changed since" in r.stderr and r.stderr.count("\n") == 1


class _Raw(nn.Module):
    """An encoder that takes raw RGB 0..255, its normalisation inside (what a .pt2 prior takes)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 127.5) / 127.5)


def test_a_shipped_spec_reads_and_names_its_weights():
    from ktedge.assets import installed
    from ktedge.model.importer import read_spec

    spec = read_spec(shipped_spec("mtcnn-onet"))
    assert [o["name"] for o in spec["outputs"]] == ["box", "landmarks5", "face_prob"]
    assert installed(spec["weights"]["asset"]).is_file()


def test_copying_an_imported_run_keeps_it_runnable(imported, tmp_path):
    """A run directory carries everything: the copy's stages are all current."""
    out, _, _ = imported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    r = ktedge("run", "--out", str(copy))
    assert r.returncode == 0 and "quantize: up to date" in r.stderr and "bench: up to date" in r.stderr, r.stderr
