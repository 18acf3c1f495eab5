"""`ktedge.deploy`: the chain from a notebook. Your model (an nn.Module and an example input, or
an ExportedProgram) and its spec go through exactly what `ktedge import` + `ktedge run` do: the
program is saved as the .pt2 the command line would read, so both give the same artifacts."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from ktedge.atomic import write_serialized, write_text


def deploy(model: torch.nn.Module | torch.export.ExportedProgram, example_input: torch.Tensor | None,
           spec: dict | str | Path, out: str | Path, data: dict[str, Any] | None = None,
           overrides: list[dict[str, Any]] | None = None) -> dict:
    """Import `model` into the run directory `out` and run quantize -> export -> validate -> bench
    -> report on the run's data (`data`: the config's data keys, e.g. {"format": "csv",
    "train_dir": "faces/"}; synthetic faces by default). -> summary.json's content.

    `example_input` is what torch.export traces an nn.Module with: (1, 3, S, S) as the spec's
    input says (None for an ExportedProgram). `spec` is the spec as a dict or a YAML file."""
    from ktedge.model.importer import import_model
    from ktedge.pipeline import run

    out = Path(out)
    if isinstance(model, torch.nn.Module):
        if example_input is None:
            raise ValueError("ktedge.deploy: an nn.Module needs example_input, e.g. torch.zeros(1, 3, S, S)")
        with torch.no_grad():
            model = torch.export.export(model.eval(), (example_input,))
    program_path = out / "import" / "model.pt2"
    write_serialized(program_path, lambda f: torch.export.save(model, f))
    spec_path = Path(spec) if not isinstance(spec, dict) else out / "import" / "spec.yaml"
    if isinstance(spec, dict):
        write_text(spec_path, yaml.safe_dump(spec, sort_keys=False))
    changes = [*(overrides or []), *([{"data": data}] if data else [])]
    import_model(out, spec_path, model=program_path, overrides=changes)
    from ktedge.config import load_config

    return run(load_config(out / "config.yaml"), out)
