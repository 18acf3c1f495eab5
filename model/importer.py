"""`ktedge import MODEL --spec SPEC.yaml --out DIR`: a model made elsewhere becomes the run's
deployable, and `ktedge run --out DIR` then quantizes, exports, validates and benchmarks it on the
run's data without training anything.

MODEL is a torch.export `.pt2` (loaded with torch.export.load: nothing is unpickled), or a factory
`pkg.module:fn` returning an nn.Module whose state dict `--weights` holds (weights_only=True). The
spec says what the model takes ((1, 3, S, S) float, (pixel - mean) / std in its colour order) and
what each output is (its decoding kind and the task it answers). The spec's normalisation and
colour order, any BatchNorm and any PReLU are folded or rewritten into the graph (model/
deploy_form.py), so the artifacts take raw RGB 0..255 like ktedge's own, and the folded graph is
checked against the original on the run's faces. Every check runs before anything is written."""
from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ktedge.assets import WEIGHTS, installed
from ktedge.atomic import sha256_file, sha256_json, write_json, write_text
from ktedge.config import Config, load_config
from ktedge.deployable import export_program, write_deployable
from ktedge.errors import KtedgeError
from ktedge.model.align import measured_alignment
from ktedge.model.data.datasets import held_out_source, split_faces
from ktedge.model.deploy_form import (drop_guards, fold_batchnorm_nodes, fold_input_normalisation, prelu_as_max)
from ktedge.model.encoders import load_program
from ktedge.model.fuse import PARITY_FACES, PARITY_TOLERANCE, flat
from ktedge.model.tasks import TASKS, as_outputs
from ktedge.schema import check, load_schema

# How many values a task's output must hold for one face (its metric reads it in that shape).
TASK_SIZES = {"landmarks": 136, "age": 1, "attributes": 9, "action_units": 8, "expression": 6, "face": 2,
              "mesh": 1404, "detection": 896 * 17}


def read_spec(path: str | Path) -> dict:
    """The spec, checked: its schema, then each output's kind and task against ktedge's tasks."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise KtedgeError(f"{path}: spec not found") from None
    except yaml.YAMLError as e:
        raise KtedgeError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    check(spec, load_schema("ktedge.specs", "spec.schema.json"), str(path), "spec")
    names = [o["name"] for o in spec["outputs"]]
    if len(set(names)) != len(names):
        raise KtedgeError(f"{path}: two outputs are named {next(n for n in names if names.count(n) > 1)!r}")
    for o in spec["outputs"]:
        task = o.get("task")
        if task is None:
            continue
        if task not in TASKS:
            raise KtedgeError(f"{path}: output {o['name']}: unknown task {task!r} (ktedge's tasks: {', '.join(TASKS)})")
        if o["kind"] != TASKS[task].kind:
            raise KtedgeError(f"{path}: output {o['name']}: task {task} is read as kind {TASKS[task].kind}, "
                              f"the spec says {o['kind']}")
    return spec


def spec_outputs(spec: dict, shapes: list[list[int]], where: str) -> list[dict]:
    """The deployable's outputs from the spec and the shapes the program gives for one face."""
    if len(shapes) != len(spec["outputs"]):
        raise KtedgeError(f"{where}: the model gives {len(shapes)} output(s), the spec lists {len(spec['outputs'])} "
                          f"({', '.join(o['name'] for o in spec['outputs'])})")
    outputs = []
    for o, shape in zip(spec["outputs"], shapes):
        if "shape" in o and list(o["shape"]) != shape:
            raise KtedgeError(f"{where}: output {o['name']} has shape {shape}, the spec says {o['shape']}")
        task = TASKS[o["task"]] if o.get("task") else None
        size = int(np.prod(shape))
        if task is not None and task.name in TASK_SIZES and size != TASK_SIZES[task.name]:
            raise KtedgeError(f"{where}: output {o['name']} answers {task.name}, which needs {TASK_SIZES[task.name]} "
                              f"values per face; the model gives {size} ({shape})")
        if o.get("eyes") and max(o["eyes"]) >= size // 2:
            raise KtedgeError(f"{where}: output {o['name']}: eyes {o['eyes']} are not points of its {size // 2}")
        entry = task.output(o["name"], shape) if task else {"name": o["name"], "shape": shape, "kind": o["kind"],
                                                            "decode": o.get("decode", o["kind"])}
        if o.get("eye_centres") and max(max(e) for e in o["eye_centres"]) >= size // 2:
            raise KtedgeError(f"{where}: output {o['name']}: eye_centres {o['eye_centres']} are not points of its "
                              f"{size // 2}")
        entry.update({k: o[k] for k in ("labels", "decode", "eyes", "eye_centres", "agreement_gate") if k in o})
        entry["task"] = None if task is None else {"name": task.name, "metric": task.metric_name,
                                                   "lower_is_better": task.lower_is_better,
                                                   **({"gate_rel": o["gate"]} if "gate" in o else {}),
                                                   **({"bound": o["bound"]} if "bound" in o else {})}
        outputs.append(entry)
    return outputs


def from_factory(factory: str, weights: Path | None, example: torch.Tensor) -> torch.export.ExportedProgram:
    """`pkg.module:fn`, called, its state dict loaded from `weights`, exported on `example`."""
    module_name, _, fn_name = factory.partition(":")
    if not fn_name:
        raise KtedgeError(f"--factory {factory}: expected pkg.module:function")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise KtedgeError(f"--factory {factory}: cannot import it ({type(e).__name__}: {e})") from None
    model = fn()
    if not isinstance(model, torch.nn.Module):
        raise KtedgeError(f"--factory {factory}: returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        state = _state_dict(weights)
        ours = model.state_dict()
        missing, unexpected = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
        shapes = sorted(k for k in set(ours) & set(state) if tuple(ours[k].shape) != tuple(state[k].shape))
        if missing or unexpected or shapes:
            detail = "; ".join(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                               for what, keys in (("missing", missing), ("unexpected", unexpected),
                                                  ("shape mismatch", shapes)) if keys)
            raise KtedgeError(f"{weights}: the weights do not fit {factory} ({detail})")
        model.load_state_dict(state)
    with torch.no_grad():
        return torch.export.export(model.eval(), (example,))


def _state_dict(path: Path) -> dict:
    if not path.is_file():
        raise KtedgeError(f"{path}: weights not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle carrying code, a truncated file
        raise KtedgeError(f"{path}: not a state dict that loads with weights_only=True "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise KtedgeError(f"{path}: not a state dict (a mapping of names to tensors)")
    return state


def _input_shape(program: torch.export.ExportedProgram, where: str) -> list:
    users = [s for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    if len(users) != 1:
        raise KtedgeError(f"{where}: the model takes {len(users)} inputs; ktedge deploys models of one image input")
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == users[0].arg.name)
    return list(node.meta["val"].shape)


def _run(fn, x: torch.Tensor, batched: bool) -> list[torch.Tensor]:
    with torch.no_grad():
        parts = [as_outputs(fn(x))] if batched else [as_outputs(fn(x[i:i + 1])) for i in range(len(x))]
    return [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]


def import_config(spec: dict, overrides: list[dict[str, Any]]) -> Config:
    """The run's config: the default, the spec's data settings, then --set; crops at the model's size."""
    return load_config(None, [{"name": spec["name"], "data": spec.get("data", {}), "published": []}, *overrides,
                              {"data": {"image_size": spec["input"]["size"]}}])


def import_model(out: str | Path, spec_path: str | Path, model: str | Path | None = None, factory: str | None = None,
                 weights: str | Path | None = None, overrides: list[dict[str, Any]] = ()) -> dict:
    """-> the import record (fuse/parity.json). Writes DIR/fuse/{deploy.pt2, deployable.json,
    parity.json} and DIR/config.yaml, only after every check passed."""
    out = Path(out)
    t0 = time.perf_counter()
    if (out / "train").exists():
        raise KtedgeError(f"{out}: holds a training run (train/); import into a new folder")
    spec = read_spec(spec_path)
    if not any(o.get("task") for o in spec["outputs"]):
        raise KtedgeError(f"{spec_path}: no output names a task; ktedge gates int8 on a task's metric measured on "
                          f"labelled faces (e.g. `task: age`)")
    if model is not None and factory is not None:
        raise KtedgeError("give MODEL (a torch.export .pt2) or --factory pkg.module:fn (with --weights), not both")
    if model is None and factory is None:  # the spec's own factory, when it names one, is the default model
        factory = spec.get("factory")
        if factory is None:
            raise KtedgeError(f"give MODEL (a torch.export .pt2) or --factory pkg.module:fn; {spec_path} names none")
        if weights is None and "weights" in spec:
            asset = spec["weights"]["asset"]
            if asset not in WEIGHTS:
                raise KtedgeError(f"{spec_path}: weights.asset '{asset}' is not a state dict ktedge installs "
                                  f"(one of {', '.join(WEIGHTS)})")
            weights = installed(asset)
    size = spec["input"]["size"]
    if model is not None:
        where = str(model)
        original = load_program(model, "model")
        source = {"kind": "exported_program", "path": str(Path(model).resolve()), "sha256": sha256_file(model)}
    else:
        where = f"--factory {factory}"
        original = from_factory(factory, Path(weights) if weights else None, torch.zeros(1, 3, size, size))
        source = {"kind": "factory", "factory": factory,
                  **({"path": str(Path(weights).resolve()), "sha256": sha256_file(weights)} if weights
                     else {"sha256": sha256_json(factory)})}
    shape = _input_shape(original, where)
    if len(shape) != 4 or shape[1] != 3 or [int(shape[2]), int(shape[3])] != [size, size]:
        raise KtedgeError(f"{where}: the model takes {[str(d) for d in shape]}; {spec_path} says (1, 3, {size}, {size})")
    static = isinstance(shape[0], int)
    if static and shape[0] != 1:
        raise KtedgeError(f"{where}: the model was exported for batch {shape[0]}; export it for batch 1 or any batch")
    cfg = import_config(spec, list(overrides))
    tasks = [o["task"] for o in spec["outputs"] if o.get("task")]
    held_out = split_faces(cfg, "val", tasks, n=PARITY_FACES).tensors()  # names labels the data lacks
    faces, is_face = held_out["image"], held_out["face"].bool()
    colour = spec["input"].get("colour", "RGB")
    mean = spec["input"].get("mean", [0.0, 0.0, 0.0])
    std = spec["input"].get("std", [1.0, 1.0, 1.0])
    # What the model takes: the faces in its colour order, normalised.
    m = torch.tensor(mean).reshape(1, 3, 1, 1)
    s = torch.tensor(std).reshape(1, 3, 1, 1)
    as_given = ((faces.flip(1) if colour == "BGR" else faces) - m) / s
    reference = _run(original.module(), as_given, batched=not static)
    outputs = spec_outputs(spec, [[1, *r.shape[1:]] for r in reference], f"{spec_path} against {where}")

    gm = drop_guards(original.module())
    folded = [f"{fold_batchnorm_nodes(gm)} BatchNorm folded into their convolutions"]
    if prelu := prelu_as_max(gm):
        folded.append(f"{prelu} PReLU written as max + min")
    folded.append(fold_input_normalisation(gm, mean, std, bgr=colour == "BGR"))
    program, dynamic = _deploy_program(gm, faces)
    got = _run(program.module(), faces, batched=dynamic)
    ref, new = flat(reference), flat(got)
    err = (ref - new).abs().max().item()
    gate = PARITY_TOLERANCE * max(1.0, ref.abs().max().item())
    parity = {"max_abs_error": err, "tolerance": gate, "faces": len(faces), "passed": err <= gate}
    if not parity["passed"]:
        raise KtedgeError(f"{where}: the folded graph differs from the model by {err:.2e} (> {gate:.1e}) on "
                          f"{len(faces)} faces; nothing was written")

    crop = {"rule": "centre_square", "description": spec["input"].get("crop", "square face crop, face centred")}
    alignment = measured_alignment(outputs, [y[is_face].numpy() for y in got], size,
                                   f"its own points on {int(is_face.sum())} {held_out_source(cfg, 'val')} faces")
    write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    deployable = write_deployable(
        out / "fuse", program, name=spec["name"], role="deploy",
        input={"name": "image", "shape": [1, 3, size, size], "layout": "NCHW", "dtype": "float32",
               "colour_order": "RGB", "range": [0, 255], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "crop": crop,
               **({"alignment": alignment} if alignment else {})},
        outputs=outputs, dynamic_batch=dynamic,
        provenance={"made_by": "ktedge import",
                    "source": {**source, "spec_sha256": sha256_file(spec_path)},
                    "folded": folded, "parity": parity})
    record = {**parity, "imported": True, "source": source, "folded": folded, "deploy_sha256": deployable.sha256,
              "config_sha256": sha256_json(cfg.to_dict()),
              "params": {"deploy_graph": sum(v.numel() for v in program.state_dict.values())},
              "wall_s": round(time.perf_counter() - t0, 2)}
    write_json(out / "fuse" / "parity.json", record)
    return record


def _deploy_program(gm: torch.fx.GraphModule, faces: torch.Tensor) -> tuple[torch.export.ExportedProgram, bool]:
    """The folded graph as a program for any batch where it answers a batch as it answers each
    face alone (a graph with a baked batch of 1, e.g. reshape(1, -1), does not), else for batch 1."""
    try:
        program = export_program(gm, faces[:2].clone())
        batch, one = _run(program.module(), faces[:4], True), _run(program.module(), faces[:4], False)
        if all(b.shape == o.shape and torch.allclose(b, o, atol=1e-5, rtol=1e-4) for b, o in zip(batch, one)):
            return program, True
    except Exception:  # noqa: BLE001  (specialised to batch 1: export it as it is)
        pass
    return export_program(gm, faces[:1].clone(), dynamic_batch=False), False
