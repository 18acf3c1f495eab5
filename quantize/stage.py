"""`ktedge quantize`: the run's deployable -> one int8 program per backend, behind one task gate.

For each PT2E backend (executorch, tflite, coreml, ethosu): calibrate on the run's training-split faces,
convert, measure per-layer SQNR and every task the deployable's outputs answer on labelled
held-out faces against the float program. While a task misses its gate (quantize/gate.py), the
layer that loses the most SQNR over its input goes back to float (mixed precision), up to
`max_float_layers` (not for ethosu: an NPU runs integer only). The onnx backend quantizes the
float ONNX graph with onnxruntime and is gated the same way, in onnxruntime. Writes quantize/<backend>/{model.pt2 | model.onnx, calibration.json,
sensitivity.json}. Reads the deployable and the run's data and quantize settings, nothing else."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

from ktedge.atomic import atomic_path, matches_record, read_json, sha256_file, sha256_json, write_json, write_serialized
from ktedge.config import Config
from ktedge.deployable import BATCH, Deployable, export_program, load_deployable
from ktedge.model.data.datasets import split_faces
from ktedge.model.data.faces import FaceSet
from ktedge.model.train import predict_outputs
from ktedge.progress import converter_log, progress
from ktedge.quantize.calibration import calibration_digest, calibration_set
from ktedge.quantize.gate import all_passed, gate_tasks, gate_text, worst_drift
from ktedge.quantize.quantizers import BACKENDS, FOLD_QUANTIZE, PROGRAM_FILE, NPU_BACKENDS, make_quantizer
from ktedge.quantize.sensitivity import layer_sensitivity

SENSITIVITY_FACES = 32


def quantize_config_sha256(cfg: Config) -> str:
    """What a quantized program depends on besides the deployable: the quantize section and the
    seed and data settings that draw the calibration and evaluation faces."""
    d = cfg.to_dict()
    return sha256_json({"seed": d["seed"], "data": d["data"], "quantize": d["quantize"],
                        "calibration_images": calibration_digest(cfg)})


def quantize_is_current(cfg: Config, out: Path) -> bool:
    try:
        digest = load_deployable(out / "fuse").sha256
    except Exception:  # noqa: BLE001  (no or a broken deployable: the stage runs and says what is wrong)
        return False
    want = quantize_config_sha256(cfg)
    for backend in cfg.quantize.backends:
        dest = out / "quantize" / backend
        record = read_json(dest / "sensitivity.json")
        if (record is None or record.get("deploy_sha256") != digest or record.get("config_sha256") != want
                or not matches_record(dest / PROGRAM_FILE[backend], dest / "sensitivity.json", "model_sha256")):
            return False
    return True


def eval_faces(cfg: Config, deployable: Deployable) -> FaceSet:
    """The labelled held-out faces the gate measures every task on (refusing data without their labels)."""
    return split_faces(cfg, "test", deployable.tasks(), cfg.quantize.eval_faces)


def task_targets(deployable: Deployable, faces: FaceSet) -> dict[str, np.ndarray]:
    targets = faces.tensors()
    return {t: targets[t].numpy() for t in deployable.tasks()}


def task_gates(cfg: Config, deployable: Deployable, outputs: list[np.ndarray], reference: list[np.ndarray],
               faces: FaceSet) -> dict[str, dict]:
    """Each task's gate row (quantize/gate.py): a program's outputs against the float program's."""
    picked = deployable.task_outputs()
    gates = {o["task"]["name"]: o["task"].get("gate_rel", cfg.quantize.max_drift_rel) for o in deployable.outputs
             if o["task"]}
    bounds = {o["task"]["name"]: o["task"]["bound"] for o in deployable.outputs
              if o["task"] and "bound" in o["task"]}
    return gate_tasks(deployable.tasks(), [outputs[i] for i in picked], [reference[i] for i in picked],
                      task_targets(deployable, faces), gates, bounds)


def batch_size(deployable: Deployable) -> int:
    return 64 if deployable.dynamic_batch else 1


def quantize_program(program: torch.export.ExportedProgram, backend: str, observer: str, float_layers: list[str],
                     calibration: torch.Tensor, batch: int = 32) -> torch.fx.GraphModule:
    # prepare_pt2e rewrites the graph it is given: always hand it a fresh module. The Arm quantizer's
    # passes cannot trace the module's input-shape guard (a call_module node): it goes without.
    prepared = prepare_pt2e(program.module(check_guards=backend not in NPU_BACKENDS),
                            make_quantizer(backend, observer, float_layers))
    with torch.no_grad():
        for i in range(0, len(calibration), batch):
            prepared(calibration[i:i + batch])
    return convert_pt2e(prepared, fold_quantize=FOLD_QUANTIZE[backend])


def output_ranges(pred: np.ndarray) -> dict:
    """An output tensor's value range, and whether its components live on ranges so different
    that one per-tensor int8 scale would crush the small ones (peers' 'int8 collapses a head')."""
    comp = pred.reshape(len(pred), -1)
    spans = comp.max(0) - comp.min(0)
    ratio = float(spans.max() / max(spans.min(), 1e-12))
    return {"min": float(pred.min()), "max": float(pred.max()), "component_span_ratio": round(ratio, 2),
            "mixed_ranges": ratio > 100.0}


def _record(cfg: Config, deployable: Deployable, backend: str, gates: dict, float_layers: list[str], attempts: list,
            faces: FaceSet, reference: list[np.ndarray], dest: Path, wall: float) -> dict:
    primary = deployable.tasks()[0]
    return {
        # metric/fp32/int8: the first task's; drift_rel: the task that drifted most; passed: every task's gate.
        "backend": backend, "metric": gates[primary]["metric"], "fp32": gates[primary]["fp32"],
        "int8": gates[primary]["value"], "drift_rel": worst_drift(gates), "tasks": gates,
        "gate_drift_rel": cfg.quantize.max_drift_rel, "passed": all_passed(gates), "float_layers": float_layers,
        "attempts": attempts, "eval_faces": len(faces),
        "output_ranges": {o["name"]: output_ranges(r[:64]) for o, r in zip(deployable.outputs, reference)},
        "deploy_sha256": deployable.sha256, "config_sha256": quantize_config_sha256(cfg),
        "model_sha256": sha256_file(dest / PROGRAM_FILE[backend]), "wall_s": wall,
    }


def quantize_backend(cfg: Config, out: Path, backend: str, deployable: Deployable, calibration: torch.Tensor,
                     described: dict, faces: FaceSet, reference: list[np.ndarray], bar) -> dict:
    q = cfg.quantize
    t0 = time.perf_counter()
    program = deployable.program
    images = faces.tensors()["image"]
    batch = batch_size(deployable)
    max_float_layers = q.max_float_layers
    if backend in NPU_BACKENDS:
        program, batch = export_program(program.module(), images[:1], dynamic_batch=False), 1
        max_float_layers = 0
    float_gm = program.module()
    float_layers: list[str] = []
    attempts = []
    task = bar.add_task(f"quantize {backend}", total=max_float_layers + 1, info="")
    while True:
        quant_gm = quantize_program(program, backend, q.observer, float_layers, calibration, min(batch, 32))
        gates = task_gates(cfg, deployable, predict_outputs(quant_gm, images, batch), reference, faces)
        drift, passed = worst_drift(gates), all_passed(gates)
        attempts.append({"float_layers": list(float_layers), "metrics": {t: g["value"] for t, g in gates.items()},
                         "drift_rel": drift, "passed": passed})
        bar.update(task, advance=1, info=f"{'; '.join(gate_text(g) for g in gates.values())} "
                                         f"({len(float_layers)} float layers)")
        sensitivity = layer_sensitivity(float_gm, quant_gm, calibration[:SENSITIVITY_FACES if batch > 1 else 1])
        if passed or len(float_layers) >= max_float_layers:
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
    bar.update(task, completed=max_float_layers + 1)
    wall = round(time.perf_counter() - t0, 2)

    dest = out / "quantize" / backend
    with torch.no_grad():
        quantized = (torch.export.export(quant_gm, (images[:2].clone(),), dynamic_shapes=({0: BATCH},)) if batch > 1
                     else torch.export.export(quant_gm, (images[:1].clone(),)))
    write_serialized(dest / "model.pt2", lambda f: torch.export.save(quantized, f))
    write_json(dest / "calibration.json", {
        "backend": backend, "quantizer": BACKENDS[backend][1], "observer": q.observer,
        "weights": "int8 symmetric per-channel", "activations": "int8 per-tensor", "images": described, "wall_s": wall})
    for row in sensitivity:
        row["float"] = row["layer"] in float_layers
    result = _record(cfg, deployable, backend, gates, float_layers, attempts, faces, reference, dest, wall)
    fallback = {"fallback": "none: the NPU runs integer only"} if backend in NPU_BACKENDS else {}
    write_json(dest / "sensitivity.json", {"layers": sensitivity, **fallback, **result})
    return result


def quantize_onnx_backend(cfg: Config, out: Path, deployable: Deployable, calibration: np.ndarray, described: dict,
                          faces: FaceSet, reference: list[np.ndarray], bar) -> dict:
    """The float graph in ONNX, quantized by onnxruntime, gated in onnxruntime."""
    from ktedge.quantize.onnx_int8 import quantize_onnx, run_onnx, to_onnx

    t0 = time.perf_counter()
    task = bar.add_task("quantize onnx", total=1, info="")
    dest = out / "quantize" / "onnx"
    example = torch.from_numpy(calibration[:1]).clone()
    with (tempfile.TemporaryDirectory() as tmp, atomic_path(dest / "model.onnx") as path,
          converter_log(dest / "convert.log")):  # the converter's and the quantizer's own output
        fp32 = Path(tmp) / "fp32.onnx"
        one = export_program(deployable.program.module(), example, dynamic_batch=False)  # phones run one face
        to_onnx(one, example, [o["name"] for o in deployable.outputs], fp32)
        method = quantize_onnx(fp32, calibration, path, cfg.quantize.observer)
        gates = task_gates(cfg, deployable, run_onnx(path, faces.tensors()["image"].numpy()), reference, faces)
    wall = round(time.perf_counter() - t0, 2)
    bar.update(task, advance=1, info="; ".join(gate_text(g) for g in gates.values()))
    write_json(dest / "calibration.json", {"backend": "onnx", "quantizer": method, "observer": cfg.quantize.observer,
                                           "weights": "int8 symmetric, per-channel in convolutions, per-tensor elsewhere",
                                           "activations": "uint8 asymmetric per-tensor",
                                           "images": described, "wall_s": wall})
    attempts = [{"float_layers": [], "metrics": {t: g["value"] for t, g in gates.items()},
                 "drift_rel": worst_drift(gates), "passed": all_passed(gates)}]
    result = _record(cfg, deployable, "onnx", gates, [], attempts, faces, reference, dest, wall)
    # onnxruntime's quantizer has no per-layer fallback here: a miss is reported, not recovered.
    write_json(dest / "sensitivity.json", {"layers": [], "fallback": "none for onnx", **result})
    return result


def quantize_stage(cfg: Config, out: str | Path) -> dict[str, dict]:
    out = Path(out)
    q = cfg.quantize
    images, described = calibration_set(cfg)  # a bad calibration folder is named before any work
    deployable = load_deployable(out / "fuse")
    calibration = torch.from_numpy(images)
    faces = eval_faces(cfg, deployable)
    reference = predict_outputs(deployable.program.module(), faces.tensors()["image"], batch_size(deployable))
    results = {}
    with progress() as bar:
        for backend in q.backends:
            if backend in BACKENDS:
                results[backend] = quantize_backend(cfg, out, backend, deployable, calibration, described, faces,
                                                    reference, bar)
            else:  # onnx: its runtime's own quantizer
                results[backend] = quantize_onnx_backend(cfg, out, deployable, images, described, faces, reference,
                                                         bar)
    return results
