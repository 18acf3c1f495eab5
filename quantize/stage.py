"""`ktedge quantize`: the fuse stage's deploy graph -> one int8 PT2E program per backend.

For each backend: calibrate on held-out faces, convert, measure per-layer SQNR and the task
metric on labelled held-out faces against the float deploy graph. While a task misses its gate
(quantize/gate.py), the layer that loses the most SQNR over its input goes back to float
(mixed precision), up to `max_float_layers`. Writes quantize/<backend>/{model.pt2, calibration.json, sensitivity.json}.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

from ktedge.atomic import (matches_record, read_json, sha256_file, sha256_json, verify_record, write_json,
                           write_serialized)
from ktedge.config import Config
from ktedge.errors import KtedgeError
from ktedge.model.data.datasets import split_faces
from ktedge.model.data.faces import FaceSet
from ktedge.model.systems import deploy_tasks
from ktedge.model.tasks import TASKS, evaluate
from ktedge.model.train import predict_outputs
from ktedge.progress import progress
from ktedge.quantize.calibration import calibration_digest, calibration_set
from ktedge.quantize.gate import all_passed, gate_tasks, worst_drift
from ktedge.quantize.quantizers import BACKENDS, make_quantizer
from ktedge.quantize.sensitivity import layer_sensitivity

SENSITIVITY_FACES = 32


def quantize_config_sha256(cfg: Config) -> str:
    """What a quantized program depends on besides the deploy graph: the quantize section and the
    seed and data settings that draw the calibration and evaluation faces."""
    d = cfg.to_dict()
    return sha256_json({"seed": d["seed"], "data": d["data"], "quantize": d["quantize"],
                        "calibration_images": calibration_digest(cfg)})


def quantize_is_current(cfg: Config, out: Path) -> bool:
    deploy = out / "fuse" / "deploy.pt2"
    if not deploy.is_file():
        return False
    digest, want = sha256_file(deploy), quantize_config_sha256(cfg)
    for backend in cfg.quantize.backends:
        record = read_json(out / "quantize" / backend / "sensitivity.json")
        if (record is None or record.get("deploy_sha256") != digest or record.get("config_sha256") != want
                or not matches_record(out / "quantize" / backend / "model.pt2", out / "quantize" / backend /
                                      "sensitivity.json", "model_sha256")):
            return False
    return True


def load_deploy(out: Path) -> torch.export.ExportedProgram:
    path = out / "fuse" / "deploy.pt2"
    if not path.is_file():
        raise KtedgeError(f"{path}: no deploy graph (run `ktedge fuse --out {out}` first)")
    verify_record(path, out / "fuse" / "parity.json", "deploy_sha256", f"re-run `ktedge fuse --out {out}`")
    try:
        return torch.export.load(path)
    except Exception as e:  # a torn or foreign archive
        raise KtedgeError(f"{path}: unreadable deploy graph ({type(e).__name__}: {str(e)[:100]}); re-run `ktedge fuse`") from None


def task_targets(cfg: Config, faces: FaceSet) -> dict[str, np.ndarray]:
    targets = faces.tensors()
    return {t: targets[t].numpy() for t in deploy_tasks(cfg)}


def task_metrics(cfg: Config, outputs: list[np.ndarray], faces: FaceSet) -> dict[str, float]:
    """Each deployed task's metric on labelled faces (one per output)."""
    return evaluate(deploy_tasks(cfg), outputs, task_targets(cfg, faces))


def task_gates(cfg: Config, outputs: list[np.ndarray], reference: list[np.ndarray], faces: FaceSet) -> dict[str, dict]:
    """Each deployed task's gate row (quantize/gate.py): a program's outputs against fp32's."""
    return gate_tasks(deploy_tasks(cfg), outputs, reference, task_targets(cfg, faces), cfg.quantize.max_drift_rel)


def quantize_program(program: torch.export.ExportedProgram, backend: str, observer: str, float_layers: list[str],
                     calibration: torch.Tensor) -> torch.fx.GraphModule:
    # prepare_pt2e rewrites the graph it is given: always hand it a fresh module.
    prepared = prepare_pt2e(program.module(), make_quantizer(backend, observer, float_layers))
    with torch.no_grad():
        for i in range(0, len(calibration), 32):
            prepared(calibration[i:i + 32])
    # litert-torch lowers float weights wrapped in quantize/dequantize, not pre-folded int8 constants.
    return convert_pt2e(prepared, fold_quantize=backend != "tflite")


def output_ranges(pred: np.ndarray) -> dict:
    """An output tensor's value range, and whether its components live on ranges so different
    that one per-tensor int8 scale would crush the small ones (peers' 'int8 collapses a head')."""
    comp = pred.reshape(len(pred), -1)
    spans = comp.max(0) - comp.min(0)
    ratio = float(spans.max() / max(spans.min(), 1e-12))
    return {"min": float(pred.min()), "max": float(pred.max()), "component_span_ratio": round(ratio, 2),
            "mixed_ranges": ratio > 100.0}


def quantize_backend(cfg: Config, out: Path, backend: str, program: torch.export.ExportedProgram,
                     calibration: torch.Tensor, described: dict, faces: FaceSet, reference: list[np.ndarray],
                     bar) -> dict:
    q = cfg.quantize
    t0 = time.perf_counter()
    images = faces.tensors()["image"]
    float_gm = program.module()
    float_layers: list[str] = []
    attempts = []
    task = bar.add_task(f"quantize {backend}", total=q.max_float_layers + 1, info="")
    while True:
        quant_gm = quantize_program(program, backend, q.observer, float_layers, calibration)
        gates = task_gates(cfg, predict_outputs(quant_gm, images), reference, faces)
        drift, passed = worst_drift(gates), all_passed(gates)
        attempts.append({"float_layers": list(float_layers), "metrics": {t: g["value"] for t, g in gates.items()},
                         "drift_rel": drift, "passed": passed})
        bar.update(task, advance=1, info=f"drift {100 * drift:.2f}% ({len(float_layers)} float layers)")
        sensitivity = layer_sensitivity(float_gm, quant_gm, calibration[:SENSITIVITY_FACES])
        if passed or len(float_layers) >= q.max_float_layers:
            break
        candidates = [r for r in sensitivity if r["layer"] not in float_layers and r["sqnr_db"] is not None]
        if not candidates:
            break
        # The layer that loses the most SQNR itself, not the one with the worst output: a layer late
        # in the graph inherits the error made upstream (AUFormer's CI model: its eight lowest-SQNR
        # layers in float left the drift at 11.6 %; its expert 3x3 convs, the largest losses, fix it).
        # The first layer goes last: it alone is measured against an exact input, and every int8
        # layer loses ~25 dB against one.
        first = sensitivity[0]["layer"]
        float_layers.append(max(candidates, key=lambda r: (r["layer"] != first, r["sqnr_drop_db"]))["layer"])
    bar.update(task, completed=q.max_float_layers + 1)
    wall = round(time.perf_counter() - t0, 2)

    dest = out / "quantize" / backend
    quantized = torch.export.export(quant_gm, (images[:2].clone(),),
                                    dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=4096)}})
    write_serialized(dest / "model.pt2", lambda f: torch.export.save(quantized, f))
    write_json(dest / "calibration.json", {
        "backend": backend, "quantizer": BACKENDS[backend][1], "observer": q.observer,
        "weights": "int8 symmetric per-channel", "activations": "int8 per-tensor",
        "images": described,
        "wall_s": wall,
    })
    primary = deploy_tasks(cfg)[0]
    for row in sensitivity:
        row["float"] = row["layer"] in float_layers
    result = {
        # metric/fp32/int8: the first task's; drift_rel: the task that drifted most; passed: every task's gate.
        "backend": backend, "metric": TASKS[primary].metric_name, "fp32": gates[primary]["fp32"],
        "int8": gates[primary]["value"], "drift_rel": drift, "tasks": gates,
        "gate_drift_rel": q.max_drift_rel, "passed": passed, "float_layers": float_layers, "attempts": attempts,
        "eval_faces": len(faces),
        "output_ranges": dict(zip(deploy_tasks(cfg), map(output_ranges, predict_outputs(float_gm, images[:64])))),
        "deploy_sha256": sha256_file(out / "fuse" / "deploy.pt2"), "config_sha256": quantize_config_sha256(cfg),
        "model_sha256": sha256_file(dest / "model.pt2"),
        "wall_s": wall,
    }
    write_json(dest / "sensitivity.json", {"layers": sensitivity, **result})
    return result


def quantize_stage(cfg: Config, out: str | Path) -> dict[str, dict]:
    out = Path(out)
    q = cfg.quantize
    images, described = calibration_set(cfg)  # a bad calibration folder is named before any work
    program = load_deploy(out)
    calibration = torch.from_numpy(images)
    faces = split_faces(cfg, "test", deploy_tasks(cfg), q.eval_faces)
    reference = predict_outputs(program.module(), faces.tensors()["image"])
    results = {}
    with progress() as bar:
        for backend in q.backends:
            results[backend] = quantize_backend(cfg, out, backend, program, calibration, described, faces,
                                                reference, bar)
    return results
