"""What the exporters take: one deployable (ktedge/deployable.py) with the quantize stage's
programs for it, read from a run directory."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ktedge.atomic import read_json, sha256_file, verify_record
from ktedge.deployable import Deployable, export_program
from ktedge.errors import KtedgeError
from ktedge.model.encoders import load_program
from ktedge.quantize.quantizers import PROGRAM_FILE


@dataclass
class ExportSource:
    """A deployable ready for the exporters. Programs take (1, 3, S, S) float RGB 0..255, NCHW."""
    deployable: Deployable
    program: torch.export.ExportedProgram  # fp32, batch 1 (phones run one face; static shapes lower everywhere)
    example: torch.Tensor  # (1, 3, S, S): one of the run's faces
    observer: str
    held_out: torch.Tensor | None = None  # (N, 3, S, S): held-out faces an artifact carries (a BundledProgram)
    calibration: torch.Tensor | None = None  # (N, 3, S, S): the quantize stage's calibration faces
    quantized: dict[str, nn.Module] = field(default_factory=dict)  # backend -> converted int8 PT2E module
    quantized_files: dict[str, Path] = field(default_factory=dict)  # backend -> a runtime's own int8 file (onnx)
    quantization: dict[str, dict] = field(default_factory=dict)  # backend -> the manifest's quantization entry
    program_sha256: dict[str, str] = field(default_factory=dict)  # "fp32" / backend -> hash of its program

    @property
    def name(self) -> str:
        return self.deployable.name

    @property
    def outputs(self) -> list[dict]:
        return self.deployable.outputs

    @property
    def crop_size(self) -> int:
        return self.deployable.crop_size


def quantized_program(deployable: Deployable, run: Path, backend: str) -> tuple[Path, dict, dict]:
    """The quantize stage's program of `backend` for this deployable -> (its file, sensitivity.json,
    calibration.json); refused where it is missing, changed since, or made from another deployable."""
    dest = run / "quantize" / backend
    path = dest / PROGRAM_FILE[backend]
    hint = f"run `ktedge quantize --out {run}`"
    if not path.is_file():
        raise KtedgeError(f"{path}: missing ({hint})")
    verify_record(path, dest / "sensitivity.json", "model_sha256", f"re-run `ktedge quantize --out {run}`")
    record = read_json(dest / "sensitivity.json") or {}
    if record.get("deploy_sha256") != deployable.sha256:
        raise KtedgeError(f"{path}: made from another deployable than {deployable.folder}; {hint}")
    return path, record, read_json(dest / "calibration.json") or {}


def export_source(deployable: Deployable, run: Path, backends: list[str], example: torch.Tensor,
                  observer: str, held_out: torch.Tensor | None = None,
                  calibration: torch.Tensor | None = None) -> ExportSource:
    """The deployable and, for each of `backends`, the int8 program the quantize stage made of it."""
    one = export_program(deployable.program.module(), example, dynamic_batch=False)
    src = ExportSource(deployable=deployable, program=one, example=example, observer=observer, held_out=held_out,
                       calibration=calibration, program_sha256={"fp32": deployable.sha256})
    for backend in backends:
        path, record, calibration = quantized_program(deployable, run, backend)
        if path.suffix == ".pt2":
            src.quantized[backend] = load_program(path, "int8 program").module()
        else:  # a runtime's own int8 file (onnx), copied as it is
            src.quantized_files[backend] = path
        src.quantization[backend] = {"method": f"{calibration.get('quantizer', backend)}, "
                                               f"{calibration.get('observer')} observer",
                                     "weights": calibration.get("weights", ""),
                                     "activations": calibration.get("activations", ""),
                                     "float_layers": record.get("float_layers", [])}
        src.program_sha256[backend] = sha256_file(path)
    return src
