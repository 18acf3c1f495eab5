"""The Ethos-U export on the shared exported tiny run and the real O-Net beside it: ExecuTorch's Arm
backend and Vela compile each whole for the NPU, and the TOSA graph Vela compiled runs in the TOSA
reference model on the held-out faces (the NPU itself is not here)."""
import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ktedge.config import load_config
from ktedge.errors import KtedgeError
from ktedge.export.runtimes import open_runner
from ktedge.model.data.datasets import split_faces
from ktedge.model.encoders import load_program
from tests.conftest import ONET

TARGETS = {"ethosu-int8-u55": "ethos-u55-128", "ethosu-int8-u85": "ethos-u85-256"}


@pytest.mark.parametrize("where", [".", ONET])
def test_each_model_compiles_whole_for_each_npu_and_meets_the_gate_in_the_tosa_reference(exported, where):
    out = exported[0] / where
    validation = json.loads((out / "validate" / "accuracy.json").read_text())
    for name, target in TARGETS.items():
        manifest = json.loads((out / "export" / name / "manifest.json").read_text())
        npu, placed = manifest["ethosu"], manifest["placement"]
        # One NPU partition; the CPU only quantizes the float input and dequantizes each output.
        io = {"quantized_decomposed::quantize_per_tensor": 1,
              "quantized_decomposed::dequantize_per_tensor": len(manifest["outputs"])}
        assert (placed["delegate"], placed["partitions"], placed["outside"]) == ("EthosUBackend", 1, io)
        assert placed["ops_in_delegate"] > 10 and placed["kernels"].get("CONV2D", 0) > 0, placed
        vela = npu["vela"]
        assert npu["target"] == target and vela["accelerator"].lower() == target.replace("-", "_")
        assert vela["inference_ms"] > 0 and vela["macs"] > 10_000 and vela["clock_mhz"] > 0
        row = validation["artifacts"][name]
        assert row["validated"] and row["passed"] and "TOSA reference model" in row["runtime"], row
        assert row["drift_rel"] <= row["gate_drift_rel"], row


@pytest.mark.parametrize("where", [".", ONET])
@pytest.mark.parametrize("name", list(TARGETS))
def test_the_tosa_reference_computes_the_quantize_stages_int8_program(exported, where, name):
    """The NPU's integer arithmetic against the PT2E program it was lowered from (simulated in
    float), every output: the same values to within an output step, on held-out faces."""
    out = exported[0] / where
    faces = split_faces(load_config(out / "config.yaml"), "test", n=24).tensors()["image"]
    simulated = load_program(out / "quantize" / "ethosu" / "model.pt2", "int8 program").module()
    runner = open_runner(out / "export" / name)
    scales = [q["scale"] for q in runner.manifest["ethosu"]["npu_io"]["outputs"]]
    steps = []
    for i in range(len(faces)):
        sim = simulated(faces[i:i + 1])
        sim = sim if isinstance(sim, (tuple, list)) else [sim]
        npu = runner(faces[i:i + 1].numpy())
        steps += [np.abs(s.detach().numpy().reshape(-1) - n.reshape(-1)) / q for s, n, q in zip(sim, npu, scales)]
    steps = np.concatenate(steps)
    # Measured: the default model (40 faces) 85 % of the values equal, at most 1 step apart; the
    # tiny run's model (24 faces) 94 % equal, at most 2 steps (integer rounding compounds per layer).
    assert np.mean(steps < 0.5) > 0.75 and steps.max() <= 3.0 + 1e-3, (np.mean(steps < 0.5), steps.max())


class OutOfOrder(torch.nn.Module):
    """Two heads computed in one order and returned in the other, of different sizes and ranges."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4)
        self.cls, self.reg = torch.nn.Linear(8 * 8 * 8, 2), torch.nn.Linear(8 * 8 * 8, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu(self.conv(x / 255.0)).flatten(1)  # (B, 512)
        p = self.cls(f).softmax(1)  # (B, 2): computed first
        box = 40.0 * self.reg(f)  # (B, 4)
        return box, p


def test_each_output_is_dequantized_with_its_own_scale_whatever_order_the_npu_computes_them(tmp_path):
    """Plumbing, not accuracy (random pixels): each returned output read from the NPU output
    that computes it and dequantized with its own scale, as the PT2E program answers."""
    from ktedge.export.registry import by_name, formats
    from ktedge.quantize.stage import quantize_program

    x = torch.rand(16, 3, 32, 32) * 255
    program = quantize_program(torch.export.export(OutOfOrder().eval(), (x[:1],)), "ethosu", "minmax", [], x, batch=1)
    path = tmp_path / "model.pte"
    built = by_name()["ethosu-int8-u55"].build(SimpleNamespace(quantized={"ethosu": program}, example=x[:1]), path)
    io = built["ethosu"]["npu_io"]["outputs"]
    assert [q["npu_output"] for q in io] == [1, 0]  # the box is the NPU's second output
    run = formats()["ethosu"].open(path, {"ethosu": built["ethosu"], "input": {"shape": [1, 3, 32, 32]}}, 1)
    for i in range(4):
        got, want = run(x[i:i + 1].numpy()), [t.detach().numpy() for t in program(x[i:i + 1])]
        assert [g.shape for g in got] == [(1, 4), (1, 2)]
        for g, w, q in zip(got, want, io):
            assert np.abs(g - w).max() <= 1.01 * q["scale"], (g, w, q)


def test_a_changed_tosa_graph_is_refused(exported, tmp_path):
    src = exported[0] / "export" / "ethosu-int8-u55"
    copy = tmp_path / "ethosu"
    shutil.copytree(src, copy)
    data = bytearray((copy / "model.tosa").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.tosa").write_bytes(bytes(data))
    with pytest.raises(KtedgeError, match=r"model\.tosa: sha256 does not match its manifest"):
        open_runner(copy)
    (copy / "model.tosa").unlink()
    with pytest.raises(KtedgeError, match=r"model\.tosa: missing"):
        open_runner(copy)


def test_the_installed_set_is_consistent():
    """The Ethos-U tools' pins (numpy, ml_dtypes, flatbuffers) and everything else agree: `pip check`."""
    r = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
