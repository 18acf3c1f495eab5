"""The deployable: `deploy.pt2` (the float ExportedProgram, raw RGB 0..255 in) plus
`deployable.json` (its I/O contract, the task each output answers, provenance), the one hand-off
between making a model and every stage after it (docs/design.md). ktedge's fuse stage and
`ktedge import` write one; quantize, export, validate, bench, predict and the report read only
this and the run's data.

A run directory holds its deployables in fixed places: the model it ships in `fuse/`, the KT
model's comparison models in `fuse/comparisons/<name>/`, and ktedge's published models deployed
beside it as whole runs of their own in `published/<name>/` (each with its own `fuse/`)."""
from __future__ import annotations

import hashlib

from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ktedge.atomic import read_json, sha256_file, write_json, write_serialized
from ktedge.errors import KtedgeError
from ktedge.schema import check, load_schema

SCHEMA_ID = "ktedge.deployable/1"
PROGRAM, RECORD = "deploy.pt2", "deployable.json"
BATCH = torch.export.Dim("batch", min=1, max=4096)


@dataclass(frozen=True)
class Deployable:
    folder: Path
    record: dict[str, Any]

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def role(self) -> str:
        return self.record["role"]

    @property
    def input(self) -> dict:
        return self.record["input"]

    @property
    def outputs(self) -> list[dict]:
        return self.record["outputs"]

    @property
    def crop_size(self) -> int:
        return int(self.input["shape"][-1])

    @property
    def dynamic_batch(self) -> bool:
        return self.record["program"]["dynamic_batch"]

    @property
    def sha256(self) -> str:
        """The program's hash: what every later stage records as its input."""
        return self.record["program"]["sha256"]

    @property
    def path(self) -> Path:
        return self.folder / PROGRAM

    def tasks(self) -> list[str]:
        """The tasks its outputs answer, in output order (the labels the run's data must carry)."""
        return [o["task"]["name"] for o in self.outputs if o["task"]]

    def task_outputs(self) -> list[int]:
        """The indices of the outputs that answer a task, in output order."""
        return [i for i, o in enumerate(self.outputs) if o["task"]]

    @cached_property
    def program(self) -> torch.export.ExportedProgram:
        """The program, refused if it is not the file this record describes."""
        import torchao.quantization.pt2e  # noqa: F401  (registers ops the int8 archives use)

        if not self.path.is_file():
            raise KtedgeError(f"{self.path}: missing; {self.folder / RECORD} describes it ({self._remake})")
        if sha256_file(self.path) != self.sha256:
            raise KtedgeError(f"{self.path}: its sha256 is not the one {self.folder / RECORD} records "
                              f"(changed or damaged since); {self._remake}")
        try:
            return torch.export.load(self.path)
        except Exception as e:  # a torn or foreign archive
            raise KtedgeError(f"{self.path}: unreadable program ({type(e).__name__}); {self._remake}") from None

    @property
    def _remake(self) -> str:
        made_by = self.record["provenance"]["made_by"]
        return "re-run `ktedge fuse`" if made_by == "ktedge fuse" else "re-run `ktedge import`"


def schema() -> dict:
    return load_schema("ktedge", "deployable.schema.json")


def tool_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in ("torch", "ktedge")}


def export_program(module: torch.nn.Module, example: torch.Tensor, dynamic_batch: bool = True
                   ) -> torch.export.ExportedProgram:
    """`module` on (B, 3, S, S) as the program a deployable holds: any batch where it can take
    any batch (the stages calibrate and evaluate in batches), else batch 1."""
    with torch.no_grad():
        if dynamic_batch:
            return torch.export.export(module, (example,), dynamic_shapes=({0: BATCH},))
        return torch.export.export(module, (example[:1],))


def graph_sha256(program: torch.export.ExportedProgram) -> str:
    """The sha256 of what the program computes: its graph's code and every weight and constant,
    by name. The .pt2's own bytes are not reproducible (node provenance holds object addresses, the
    archive a serialization id), so two imports of one model agree here, not on the file's hash."""
    h = hashlib.sha256(program.graph_module.code.encode())
    for name, t in sorted({**program.state_dict, **program.constants}.items()):
        t = t.detach().cpu()
        h.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_deployable(folder: Path, program: torch.export.ExportedProgram, *, name: str, role: str, input: dict,
                     outputs: list[dict], provenance: dict, dynamic_batch: bool) -> Deployable:
    """deploy.pt2, then deployable.json (last: the record of what was written), both atomic."""
    folder = Path(folder)
    write_serialized(folder / PROGRAM, lambda f: torch.export.save(program, f))
    record = {"schema": SCHEMA_ID, "name": name, "role": role,
              "program": {"file": PROGRAM, "sha256": sha256_file(folder / PROGRAM), "graph_sha256": graph_sha256(program),
                          "dynamic_batch": dynamic_batch},
              "input": input, "outputs": outputs, "provenance": {**provenance, "tools": tool_versions()}}
    check(record, schema(), str(folder / RECORD), "deployable")
    write_json(folder / RECORD, record)
    return Deployable(folder, record)


def load_deployable(folder: str | Path) -> Deployable:
    """The deployable in `folder` (schema checked; the program's hash is checked when it is read)."""
    folder = Path(folder)
    record = read_json(folder / RECORD)
    if record is None:
        hint = "`ktedge fuse --out RUN` or `ktedge import MODEL --spec SPEC --out RUN` writes it"
        what = "unreadable (not JSON)" if (folder / RECORD).is_file() else "missing"
        raise KtedgeError(f"{folder / RECORD}: {what}; {hint}")
    return Deployable(folder, check(record, schema(), str(folder / RECORD), "deployable"))


def deployable_folders(run: Path) -> list[Path]:
    """The deployables of one run directory: the shipped model, then its comparison models."""
    main = run / "fuse"
    comparisons = sorted(p for p in (main / "comparisons").glob("*") if (p / RECORD).is_file())
    return [main, *comparisons] if (main / RECORD).is_file() else comparisons


def published_runs(run: Path) -> list[Path]:
    """The published models deployed beside the run's own model, each a run directory of its own."""
    return sorted(p for p in (run / "published").glob("*") if (p / "config.yaml").is_file())


def crop_rule(description: str) -> dict:
    """The one crop rule every runtime here applies (export/preprocess.py, the app's Preprocess.kt)."""
    return {"rule": "centre_square", "description": description}


def raw_rgb_input(size: int, crop: dict, alignment: dict | None = None, name: str = "image") -> dict:
    """The input of a deployable whose normalisation is folded into the program: raw RGB 0..255."""
    return {"name": name, "shape": [1, 3, size, size], "layout": "NCHW", "dtype": "float32", "colour_order": "RGB",
            "range": [0, 255], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "crop": crop,
            **({"alignment": alignment} if alignment else {})}
