"""What the exporters take: one deployable model (float program, its int8 PT2E programs, its I/O
contract) built either from a run directory's fuse/quantize outputs (the KT model) or from the
real pre-trained MTCNN O-Net, so both go through the same exporters, runtimes and validation."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ktedge.atomic import read_json, sha256_file, sha256_path, verify_record
from ktedge.config import Config
from ktedge.errors import KtedgeError
from ktedge.model.onet import ONET_MEAN, ONET_SIZE, ONET_STD, ONet, load_pretrained_onet, onet_weights_path
from ktedge.model.data.synth import ACTION_UNITS, ATTRIBUTES, EXPRESSIONS
from ktedge.model.systems import deploy_name, deploy_tasks
from ktedge.model.tasks import as_outputs
from ktedge.quantize.calibration import calibration_set

# How an app turns each task's output tensor into an answer: a kind the app decodes (export/preprocess.py
# decode, the Android app's Decode.kt), the class names where there are some, and a line for a person.
TASK_OUTPUTS = {
    "landmarks": {"kind": "points_xy",
                  "decode": "68 (x, y) points, iBUG-300W order, as fractions of the crop: pixel = value * crop_size"},
    "age": {"kind": "value", "decode": "age in years"},
    "attributes": {"kind": "multilabel_logits", "labels": list(ATTRIBUTES),
                   "decode": "one logit per attribute: present where > 0"},
    "action_units": {"kind": "multilabel_logits", "labels": list(ACTION_UNITS),
                     "decode": "one logit per action unit: active where > 0"},
    "expression": {"kind": "class_logits", "labels": list(EXPRESSIONS), "decode": "logits over expressions: argmax"},
    "identity": {"kind": "embedding",
                 "decode": "unit-length embedding: same person where cosine similarity is above the verification threshold"},
}


def task_output(task: str, shape: list[int]) -> dict:
    """The manifest's description of a task model's one output."""
    return {"name": task, "shape": shape, **TASK_OUTPUTS[task]}


QUANT_INFO = {
    "executorch": "PT2E, executorch XNNPACKQuantizer",
    "tflite": "PT2E, litert_torch PT2EQuantizer",
    "coreml": "PT2E, XNNPACKQuantizer config (W8A8)",
}


@dataclass
class ExportSource:
    """A model ready for the exporters. Programs take (1, 3, S, S) float RGB 0..255, NCHW."""
    name: str
    program: torch.export.ExportedProgram  # fp32, batch 1
    quantized: dict[str, nn.Module]  # backend -> converted int8 PT2E module
    float_layers: dict[str, list[str]]  # backend -> layers its int8 program keeps in float
    calibration: np.ndarray  # (N, 3, S, S) float32 faces, for quantizers that calibrate themselves (ONNX)
    outputs: list[dict]  # name, shape, kind, decode (labels)
    crop: str
    checkpoint_sha256: str
    observer: str
    program_sha256: dict[str, str] = field(default_factory=dict)  # "fp32" / backend -> hash of its program

    @property
    def example(self) -> torch.Tensor:
        return torch.from_numpy(self.calibration[:1]).clone()

    @property
    def crop_size(self) -> int:
        return int(self.calibration.shape[-1])


def batch_one(module: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """Re-export with batch 1: phones run one face at a time, and static shapes lower everywhere."""
    with torch.no_grad():
        return torch.export.export(module, (example,))


def _load_program(path: Path, hint: str) -> torch.export.ExportedProgram:
    if not path.is_file():
        raise KtedgeError(f"{path}: missing ({hint})")
    try:
        return torch.export.load(path)
    except Exception as e:  # a torn or foreign archive
        raise KtedgeError(f"{path}: unreadable program ({type(e).__name__}); {hint}") from None


def kt_source(cfg: Config, out: Path) -> ExportSource:
    """The deploy graph (the KT model's, or another system's) and its per-backend int8 programs from
    the run directory."""
    import torchao.quantization.pt2e  # noqa: F401  (registers the quantized_decomposed ops the int8 archives use)

    parity = read_json(out / "fuse" / "parity.json") or {}
    deploy_path = out / "fuse" / "deploy.pt2"
    program = _load_program(deploy_path, f"run `ktedge fuse --out {out}`")
    calibration, _ = calibration_set(cfg)
    deploy_sha = sha256_file(deploy_path)
    quantized, float_layers, hashes = {}, {}, {"fp32": deploy_sha}
    for backend in cfg.quantize.backends:
        path = out / "quantize" / backend / "model.pt2"
        verify_record(path, out / "quantize" / backend / "sensitivity.json", "model_sha256",
                      f"re-run `ktedge quantize --out {out}`")
        program_q = _load_program(path, f"run `ktedge quantize --out {out}`")
        record = read_json(out / "quantize" / backend / "sensitivity.json") or {}
        if record.get("deploy_sha256") != deploy_sha:
            raise KtedgeError(f"{path}: made from another deploy graph than {deploy_path}; "
                              f"re-run `ktedge quantize --out {out}`")
        quantized[backend] = program_q.module()
        float_layers[backend] = record.get("float_layers", [])
        hashes[backend] = sha256_file(path)
    example = torch.from_numpy(calibration[:1]).clone()
    with torch.no_grad():
        shapes = [list(y.shape) for y in as_outputs(program.module()(example))]
    return ExportSource(
        name=deploy_name(cfg), program=batch_one(program.module(), example), quantized=quantized,
        float_layers=float_layers, calibration=calibration,
        outputs=[task_output(t, shape) for t, shape in zip(deploy_tasks(cfg), shapes)],
        crop="square face crop, face centred, eyes level (as the synthetic faces are drawn)",
        checkpoint_sha256=parity.get("checkpoint_sha256") or sha256_file(out / "train" / "checkpoint.pt"),
        observer=cfg.quantize.observer, program_sha256=hashes)


class PReLUAsMax(nn.Module):
    """PReLU as max(x, 0) + a * min(x, 0), exactly. Core ML rejects a per-channel PReLU on rank-3
    input and XNNPACK's channels-last pass fails on it after a Linear; max/min/mul lower everywhere."""

    def __init__(self, prelu: nn.PReLU):
        super().__init__()
        self.register_buffer("alpha", prelu.weight.detach().clone())  # (C,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha.view(1, -1, *([1] * (x.dim() - 2)))  # broadcast over the channel axis
        return torch.clamp(x, min=0) + a * torch.clamp(x, max=0)


def replace_prelu(module: nn.Module) -> nn.Module:
    """A copy of `module` with every nn.PReLU computed as PReLUAsMax (same values)."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.PReLU):
                setattr(parent, name, PReLUAsMax(child))
    return module


class ONetDeploy(nn.Module):
    """O-Net taking raw RGB 0..255 at 48x48, MTCNN's normalisation inside the graph."""

    def __init__(self, net: ONet):
        super().__init__()
        self.net = replace_prelu(net)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net((image - ONET_MEAN) / ONET_STD)  # box (B, 4), landmarks (B, 10), prob (B, 2)


def lfw_crops() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's lfw_subset: 100 real LFW face crops then 100 non-face crops, 25x25 grey.
    -> (200, 3, 48, 48) float32 RGB 0..255 (grey repeated), labels (200,) 1 = face."""
    from skimage import data

    grey = torch.from_numpy(data.lfw_subset().astype(np.float32) * 255.0)[:, None]  # (200, 1, 25, 25)
    rgb = torch.nn.functional.interpolate(grey, size=(ONET_SIZE, ONET_SIZE), mode="bilinear", align_corners=False)
    labels = np.r_[np.ones(100), np.zeros(100)].astype(np.int64)
    return rgb.repeat(1, 3, 1, 1).clamp(0, 255).numpy(), labels


def astronaut_face() -> np.ndarray:
    """The face in scikit-image's `astronaut` photo (Eileen Collins), cropped and resized: (1, 3, 48, 48)."""
    from skimage import data

    crop = data.astronaut()[30:190, 160:320]  # a square around the face (rows, cols)
    t = torch.from_numpy(crop.astype(np.float32)).permute(2, 0, 1)[None]
    return torch.nn.functional.interpolate(t, size=(ONET_SIZE, ONET_SIZE), mode="bilinear", align_corners=False).numpy()


def onet_split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every 5th LFW crop (20 faces, 20 non-faces) calibrates; the other 160 evaluate.
    -> calibration images, evaluation images, evaluation labels."""
    images, labels = lfw_crops()
    cal = np.arange(len(images)) % 5 == 0
    return images[cal], images[~cal], labels[~cal]


def onet_source(backends: list[str], observer: str) -> ExportSource:
    """The real pre-trained MTCNN O-Net, quantized per backend on real face/non-face crops."""
    from ktedge.quantize.stage import quantize_program

    calibration, _, _ = onet_split()
    deploy = ONetDeploy(load_pretrained_onet()).eval()
    example = torch.from_numpy(calibration[:1]).clone()
    program = batch_one(deploy, example)
    with torch.no_grad():  # calibration runs in batches: quantize a batch-dynamic program
        dynamic = torch.export.export(deploy, (torch.from_numpy(calibration[:2]).clone(),),
                                      dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=4096)}})
    quantized = {b: quantize_program(dynamic, b, observer, [], torch.from_numpy(calibration)) for b in backends}
    return ExportSource(
        name="mtcnn-onet", program=program, quantized=quantized, float_layers={b: [] for b in backends},
        calibration=calibration,
        outputs=[{"name": "box", "shape": [1, 4], "kind": "box_offsets",
                  "decode": "box offsets (x1, y1, x2, y2) as fractions of the crop"},
                 {"name": "landmarks5", "shape": [1, 10], "kind": "points_x_then_y",
                  "decode": "5 points x1..x5 then y1..y5 as fractions of the crop (eyes, nose, mouth corners)"},
                 {"name": "face_prob", "shape": [1, 2], "kind": "probabilities", "labels": ["not face", "face"],
                  "decode": "softmax (not face, face)"}],
        crop="MTCNN R-Net box, squared, resized to 48x48",
        checkpoint_sha256=sha256_path(onet_weights_path()), observer=observer,
        program_sha256={"fp32": sha256_path(onet_weights_path())})
