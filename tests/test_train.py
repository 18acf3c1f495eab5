import json
import os
import subprocess
import sys

import pytest
import torch

from ktedge.errors import KtedgeError
from ktedge.model.checkpoint import load_checkpoint, read_checkpoint
from ktedge.model.data.faces import generate_faces, split_seed


def test_training_lowers_the_held_out_loss_of_every_head(tiny_run, tiny_cfg):
    out, metrics = tiny_run
    trained = {k for k in metrics["heads"]}
    # Every non-pretrained prior, the canonical encoder and the adapter stage were trained.
    assert trained == {"prior1:age", "prior2:attributes", "canonical:landmarks", "kt_adapter:landmarks"}
    for name, rec in metrics["heads"].items():
        assert rec["held_out_loss_after"] < rec["held_out_loss_before"], name
    assert metrics["metric"] == "nme"
    for key in ("canonical_alone", "kt_deploy", "ensemble"):
        assert 0 < metrics[key]["nme"] < 100
    on_disk = json.loads((out / "train" / "metrics.json").read_text())
    assert on_disk["kt_deploy"] == metrics["kt_deploy"]


def test_checkpoint_round_trips_with_weights_only(tiny_run, tiny_cfg):
    out, metrics = tiny_run
    path = out / "train" / "checkpoint.pt"
    raw = torch.load(path, weights_only=True)  # plain data: loads with the safe unpickler
    assert set(raw) == {"format", "config", "state_dict", "pretrained_sha256"} and raw["pretrained_sha256"] == {}
    model, cfg = load_checkpoint(path)
    assert cfg == tiny_cfg
    faces = generate_faces(16, split_seed(cfg.seed, "val"), cfg.data.image_size, cfg.data.n_identities)
    x = faces.tensors()["image"]
    with torch.no_grad():
        pred = model(x)
    assert pred.shape == (16, 68, 2)
    # The reloaded deploy model reproduces the held-out metric recorded at training time.
    from ktedge.model.metrics import nme

    all_val = generate_faces(cfg.data.n_val, split_seed(cfg.seed, "val"), cfg.data.image_size, cfg.data.n_identities)
    with torch.no_grad():
        full = model(all_val.tensors()["image"]).numpy()
    assert nme(full, all_val.landmarks) == pytest.approx(metrics["kt_deploy"]["nme"], rel=1e-4)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/ktedge_pwned",))


def test_checkpoint_with_code_is_refused(tmp_path):
    bad = tmp_path / "evil.pt"
    torch.save({"format": "ktedge.kt_model/1", "config": {}, "state_dict": {"x": _Exploit()}}, bad)
    if os.path.exists("/tmp/ktedge_pwned"):
        os.remove("/tmp/ktedge_pwned")
    with pytest.raises(KtedgeError, match="refused to load"):
        read_checkpoint(bad)
    assert not os.path.exists("/tmp/ktedge_pwned")


def test_bad_checkpoints_get_clear_errors(tiny_run, tmp_path):
    out, _ = tiny_run
    good = (out / "train" / "checkpoint.pt").read_bytes()
    cases = {
        "missing.pt": (None, "checkpoint not found"),
        "empty.pt": (b"", "checkpoint is empty"),
        "truncated.pt": (good[: len(good) // 2], "truncated or corrupt"),
        "garbage.pt": (b"not a checkpoint at all" * 10, "truncated or corrupt"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(KtedgeError, match=message) as e:
            load_checkpoint(path)
        assert str(path) in str(e.value)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(KtedgeError, match="not a ktedge KT-model checkpoint"):
        load_checkpoint(other)


def test_checkpoint_of_another_architecture_is_named(tiny_run, tmp_path):
    out, _ = tiny_run
    state = torch.load(out / "train" / "checkpoint.pt", weights_only=True)
    state["config"]["model"]["canonical"]["width"] = 24  # the weights are width 16
    path = tmp_path / "mismatch.pt"
    torch.save(state, path)
    with pytest.raises(KtedgeError, match=r"weights do not match the architecture in its config \(shape mismatch: .*canonical"):
        load_checkpoint(path)


def _ktedge(*args):
    return subprocess.run([sys.executable, "-m", "ktedge", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args, message", [
    (["--set", "data.bogus=1"], "unknown config key 'data.bogus'"),
    (["--set", "train.lr=fast"], "'train.lr' must be float, got 'fast'"),
    (["--set", "model.canonical.backbone=efficientnet"], "model.canonical.backbone 'efficientnet' is not one of"),
    (["--config", "/nonexistent/cfg.yaml"], "/nonexistent/cfg.yaml: config file not found"),
])
def test_cli_bad_config_is_one_line_without_traceback(tmp_path, args, message):
    r = _ktedge("train", "--out", str(tmp_path / "run"), *args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_cli_debug_shows_the_traceback(tmp_path):
    r = _ktedge("train", "--debug", "--out", str(tmp_path / "run"), "--set", "data.bogus=1")
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_unknown_key_in_a_config_file_names_the_file(tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("train:\n  adapter_epochs: 3\n  epochz: 2\n")
    r = _ktedge("train", "--out", str(tmp_path / "run"), "--config", str(cfg))
    assert r.returncode == 2 and f"{cfg}: unknown config key 'train.epochz'" in r.stderr


def test_train_device_auto_takes_cuda_only_where_there_is_one(monkeypatch):
    from ktedge.model.train import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine's case, stated
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(KtedgeError, match="train.device is cuda, but this torch sees no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
