"""`ktedge validate`: every exported artifact of the run's model in its own runtime on labelled
held-out faces, against the deployable's float program on the same faces: each task its outputs
answer (metric, drift, the task gate of quantize/gate.py) and each output's agreement with the
float program (cosine, max error; points: NME against the float points, gated where the
deployable says so). Writes validate/accuracy.json. An artifact this machine cannot run (Core ML
off Apple) gets what its format can check without running it, and says plainly that its accuracy
was not measured."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ktedge.atomic import read_json, sha256_json, write_json
from ktedge.config import Config
from ktedge.deployable import Deployable, load_deployable
from ktedge.errors import KtedgeError
from ktedge.export.manifest import artifact_dir, load_manifest
from ktedge.export.registry import formats
from ktedge.export.runtimes import NotRunnableHere, open_runner
from ktedge.model.align import POINT_KINDS, points_of
from ktedge.model.data.datasets import held_out_source
from ktedge.model.metrics import nme_by_region
from ktedge.model.train import predict_outputs
from ktedge.progress import converter_log, progress
from ktedge.quantize.gate import all_passed, as_labelled, worst_drift
from ktedge.quantize.stage import batch_size, eval_faces, task_gates


def run_artifact(artifact_dir: Path, images: np.ndarray, bar, label: str) -> list[np.ndarray]:
    """All images through the artifact one at a time (as a phone runs it) -> stacked outputs."""
    runner = open_runner(artifact_dir)
    task = bar.add_task(label, total=len(images), info="")
    outs: list[list[np.ndarray]] = []
    for i in range(len(images)):
        outs.append(runner(images[i:i + 1]))
        bar.update(task, advance=1)
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def agreement(pred: np.ndarray, ref: np.ndarray) -> dict:
    p, r = pred.reshape(len(pred), -1), ref.reshape(len(ref), -1)
    cos = (p * r).sum(1) / (np.linalg.norm(p, axis=1) * np.linalg.norm(r, axis=1) + 1e-12)
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()), "max_abs_error": float(np.abs(p - r).max())}


def points_agreement(pred: np.ndarray, ref: np.ndarray, kind: str, eyes: list[int] | None) -> float:
    """NME (percent) of an artifact's points against the float program's, normalised by the float
    points' eye distance where the deployable names the eyes, else by the crop's side."""
    p, r = points_of(kind, pred), points_of(kind, ref)
    norm = np.linalg.norm(r[:, eyes[0]] - r[:, eyes[1]], axis=-1) if eyes else np.ones(len(r))
    return float(100 * np.mean(np.linalg.norm(p - r, axis=-1).mean(1) / norm))


def output_rows(deployable: Deployable, pred: list[np.ndarray], ref: list[np.ndarray], faces_only: np.ndarray) -> dict:
    """Each output's agreement with the float program; points measured on the faces only (a
    non-face's points mean nothing), gated where the deployable gives an agreement gate."""
    rows = {}
    for o, p, r in zip(deployable.outputs, pred, ref):
        row = agreement(p, r)
        if o["kind"] in POINT_KINDS:
            row["nme_vs_fp32"] = points_agreement(p[faces_only], r[faces_only], o["kind"], o.get("eyes"))
        if "agreement_gate" in o:
            measure = row.get("nme_vs_fp32", 100 * (1 - row["cosine_min"]))
            row.update({"gate": o["agreement_gate"], "passed": measure <= o["agreement_gate"]})
        rows[o["name"]] = row
    return rows


def _not_run(artifact_dir: Path, manifest: dict, e: NotRunnableHere) -> dict:
    row = {"validated": False, "accuracy": f"not run: {e}", "not_run": e.short, "passed": None}
    structure = formats()[manifest["format"]].structure
    if structure is not None:
        row.update(structure(artifact_dir, manifest))
    return row


def _artifacts(index_dir: Path) -> list[tuple[Path, dict]]:
    index = read_json(index_dir / "index.json")
    if index is None:
        raise KtedgeError(f"{index_dir / 'index.json'}: no export index (run `ktedge export` first)")
    return [(artifact_dir(index_dir.parent, a), load_manifest(artifact_dir(index_dir.parent, a)))
            for a in index["artifacts"] if a["ok"]]


def validate_run(cfg: Config, out: Path, bar) -> dict:
    """The run's model as exported, each artifact in its runtime. Per artifact: the first task's
    metric, the worst task's drift, every task's gate row and every output's agreement."""
    deployable = load_deployable(out / "fuse")
    tasks = deployable.tasks()
    faces = eval_faces(cfg, deployable)
    images = faces.tensors()["image"]
    labels = faces.tensors()
    faces_only = labels["face"].numpy() == 1
    ref = predict_outputs(deployable.program.module(), images, batch_size(deployable))
    reference = task_gates(cfg, deployable, ref, ref, faces)  # the float program's own metrics
    landmarks = [i for i, o in zip(deployable.task_outputs(), deployable.outputs) if o["task"]["name"] == "landmarks"] \
        if "landmarks" in tasks else []
    rows = {}
    for artifact_dir, manifest in _artifacts(out / "export"):
        row = {"format": manifest["format"], "precision": manifest["precision"], "variant": manifest["variant"],
               "runtime": manifest["runtime"], "size_bytes": manifest["size_bytes"]}
        try:
            pred = run_artifact(artifact_dir, images.numpy(), bar, f"validate {deployable.name} {artifact_dir.name}")
        except NotRunnableHere as e:
            rows[artifact_dir.name] = {**row, **_not_run(artifact_dir, manifest, e)}
            continue
        gates = task_gates(cfg, deployable, pred, ref, faces)
        outputs = output_rows(deployable, pred, ref, faces_only)
        row.update({"validated": True, "metric": gates[tasks[0]]["value"], "drift_rel": worst_drift(gates),
                    **agreement(np.concatenate([p.reshape(len(p), -1) for p in pred], 1),
                                np.concatenate([r.reshape(len(r), -1) for r in ref], 1)),
                    "gate_drift_rel": cfg.quantize.max_drift_rel, "tasks": gates, "outputs": outputs,
                    "passed": all_passed(gates) and all(o.get("passed", True) for o in outputs.values())})
        if landmarks:
            row["nme_by_region"] = nme_by_region(as_labelled(pred[landmarks[0]], labels["landmarks"].numpy()),
                                                 labels["landmarks"].numpy())
        rows[artifact_dir.name] = row
    return {"model": deployable.name, "metric": reference[tasks[0]]["metric"], "faces": len(images),
            "faces_source": held_out_source(cfg), "fp32_torch": reference[tasks[0]]["fp32"],
            "tasks_fp32_torch": {t: {"metric": g["metric"], "value": g["fp32"]} for t, g in reference.items()},
            "fp32_nme_by_region": nme_by_region(as_labelled(ref[landmarks[0]], labels["landmarks"].numpy()),
                                                labels["landmarks"].numpy()) if landmarks else None,
            "artifacts": rows}


def validate_inputs(out: Path) -> str:
    return sha256_json((read_json(out / "export" / "index.json") or {}).get("artifacts"))


def validate_is_current(cfg: Config, out: Path) -> bool:
    record = read_json(out / "validate" / "accuracy.json")
    return record is not None and record.get("inputs_sha256") == validate_inputs(out) \
        and record.get("config_sha256") == sha256_json(cfg.to_dict()["quantize"])


def validate_stage(cfg: Config, out: str | Path) -> dict:
    out = Path(out)
    t0 = time.perf_counter()
    with progress() as bar, converter_log(out / "validate" / "runtimes.log"):  # the runtimes' own chatter
        result = validate_run(cfg, out, bar)
    result = {**result, "inputs_sha256": validate_inputs(out), "config_sha256": sha256_json(cfg.to_dict()["quantize"]),
              "wall_s": round(time.perf_counter() - t0, 2)}
    write_json(out / "validate" / "accuracy.json", result)
    return result
