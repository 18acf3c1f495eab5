"""`ktedge validate`: every exported artifact in its own runtime on labelled held-out faces,
against the fp32 torch program on the same faces. Writes validate/accuracy.json (KT model, synthetic
faces with exact labels) and onet/validate/accuracy.json (O-Net, real LFW crops).

Core ML cannot run off Apple: those artifacts get a structural check and say plainly that their
accuracy was not measured."""
from __future__ import annotations

import collections
import time
from pathlib import Path

import numpy as np
import torch

from ktedge.atomic import read_json, sha256_json, write_json
from ktedge.config import Config
from ktedge.errors import KtedgeError
from ktedge.export.manifest import load_manifest
from ktedge.export.runtimes import NotRunnableHere, open_runner
from ktedge.export.source import astronaut_face, onet_split
from ktedge.model.data.datasets import held_out_source, split_faces
from ktedge.model.metrics import nme_by_region, roc_auc
from ktedge.model.systems import deploy_name, deploy_tasks
from ktedge.model.tasks import TASKS
from ktedge.progress import converter_log, progress

ONET_ACCURACY_GATE = 1.0  # points of face/non-face accuracy
ONET_NME_GATE = 2.0  # percent of inter-ocular distance, artifact vs fp32


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


def coreml_structure(artifact_dir: Path, manifest: dict) -> dict:
    """What can be checked of an .mlpackage without Core ML: the spec loads, its inputs/outputs
    match the manifest, the weight storage is what the precision says, and the op count."""
    import coremltools as ct

    spec = ct.models.MLModel(str(artifact_dir / manifest["file"]), skip_model_load=True).get_spec()
    fn = spec.mlProgram.functions["main"]
    ops = collections.Counter(op.type for op in fn.block_specializations[fn.opset].operations)
    inputs = [i.name for i in spec.description.input]
    outputs = [o.name for o in spec.description.output]
    want_out = [o.get("tensor", o["name"]) for o in manifest["outputs"]]
    int8_weights = ops.get("constexpr_affine_dequantize", 0) + ops.get("constexpr_blockwise_shift_scale", 0)
    expect = {"fp32": int8_weights == 0 and ops.get("cast", 0) == 0, "fp16": int8_weights == 0, "w8": int8_weights > 0 and ops.get("quantize", 0) == 0,
              "w8a8": int8_weights > 0 and ops.get("quantize", 0) > 0}[manifest["precision"]]
    checks = {"inputs_match": inputs == [manifest["input"]["name"]], "outputs_match": outputs == want_out,
              "weights_match_precision": expect}
    return {"structure": {**checks, "ops": sum(ops.values()), "int8_weight_tensors": int8_weights,
                          "activation_quantize_ops": ops.get("quantize", 0)},
            "passed": all(checks.values())}


def _not_run(artifact_dir: Path, manifest: dict, e: NotRunnableHere) -> dict:
    row = {"validated": False, "accuracy": f"not run: {e}", "not_run": e.short}
    if manifest["format"] == "coreml":
        row.update(coreml_structure(artifact_dir, manifest))
    else:
        row["passed"] = None
    return row


def _artifacts(index_dir: Path) -> list[tuple[Path, dict]]:
    index = read_json(index_dir / "index.json")
    if index is None:
        raise KtedgeError(f"{index_dir / 'index.json'}: no export index (run `ktedge export` first)")
    rows = []
    for key in ("artifacts",):
        for a in index[key]:
            if a["ok"]:
                d = Path(a["path"]).parent
                rows.append((d, load_manifest(d)))
    return rows


def validate_kt(cfg: Config, out: Path, bar) -> dict:
    """The run's deploy graph (one output per task) as exported, each artifact in its runtime.
    Per artifact: the first task's metric, the worst task's drift, and every task's gate row."""
    from ktedge.model.train import predict_outputs
    from ktedge.quantize.gate import all_passed, worst_drift
    from ktedge.quantize.stage import load_deploy, task_gates, task_metrics

    tasks = deploy_tasks(cfg)
    primary = TASKS[tasks[0]]
    faces = split_faces(cfg, "test", tasks, cfg.quantize.eval_faces)
    images = faces.tensors()["image"]
    ref = predict_outputs(load_deploy(out).module(), images)
    ref_metrics = task_metrics(cfg, ref, faces)
    landmarks = faces.tensors()["landmarks"].numpy()
    rows = {}
    for artifact_dir, manifest in _artifacts(out / "export"):
        row = {"format": manifest["format"], "precision": manifest["precision"], "variant": manifest["variant"],
               "runtime": manifest["runtime"], "size_bytes": manifest["size_bytes"]}
        try:
            pred = run_artifact(artifact_dir, images.numpy(), bar, f"validate {artifact_dir.name}")
        except NotRunnableHere as e:
            rows[artifact_dir.name] = {**row, **_not_run(artifact_dir, manifest, e)}
            continue
        gates = task_gates(cfg, pred, ref, faces)
        row.update({"validated": True, "metric": gates[tasks[0]]["value"], "drift_rel": worst_drift(gates),
                    **agreement(np.concatenate([p.reshape(len(p), -1) for p in pred], 1),
                                np.concatenate([r.reshape(len(r), -1) for r in ref], 1)),
                    "gate_drift_rel": cfg.quantize.max_drift_rel, "tasks": gates,
                    "passed": all_passed(gates)})
        if "landmarks" in tasks:
            row["nme_by_region"] = nme_by_region(pred[tasks.index("landmarks")], landmarks)
        rows[artifact_dir.name] = row
    return {"model": deploy_name(cfg), "metric": primary.metric_name, "faces": len(images),
            "faces_source": held_out_source(cfg), "fp32_torch": ref_metrics[tasks[0]],
            "tasks_fp32_torch": {t: {"metric": TASKS[t].metric_name, "value": v} for t, v in ref_metrics.items()},
            "fp32_nme_by_region": nme_by_region(ref[tasks.index("landmarks")], landmarks) if "landmarks" in tasks else None,
            "artifacts": rows}


def onet_scores(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """O-Net outputs -> face probability (N,), landmarks (N, 5, 2)."""
    _, lm, prob = outputs
    return prob[:, 1], np.stack([lm[:, :5], lm[:, 5:]], axis=-1)


def landmark_agreement(pred: np.ndarray, ref: np.ndarray) -> float:
    """NME (percent) of 5 points against the fp32 model's, normalised by its inter-ocular distance."""
    iod = np.linalg.norm(ref[:, 0] - ref[:, 1], axis=-1)
    return float(100 * np.mean(np.linalg.norm(pred - ref, axis=-1).mean(1) / iod))


def validate_onet(out: Path, bar) -> dict:
    from ktedge.export.source import ONetDeploy
    from ktedge.model.onet import load_pretrained_onet

    _, images, labels = onet_split()
    faces = np.concatenate([images[labels == 1], astronaut_face()])  # landmark agreement on real faces
    with torch.no_grad():
        net = ONetDeploy(load_pretrained_onet()).eval()
        ref_prob, _ = onet_scores([o.numpy() for o in net(torch.from_numpy(images))])
        _, ref_lm = onet_scores([o.numpy() for o in net(torch.from_numpy(faces))])
    ref_acc = float(100 * np.mean((ref_prob > 0.5) == labels))
    rows = {}
    for artifact_dir, manifest in _artifacts(out / "onet" / "export"):
        row = {"format": manifest["format"], "precision": manifest["precision"], "variant": manifest["variant"],
               "size_bytes": manifest["size_bytes"]}
        try:
            prob, _ = onet_scores(run_artifact(artifact_dir, images, bar, f"validate onet {artifact_dir.name}"))
            _, lm = onet_scores(run_artifact(artifact_dir, faces, bar, f"landmarks onet {artifact_dir.name}"))
        except NotRunnableHere as e:
            rows[artifact_dir.name] = {**row, **_not_run(artifact_dir, manifest, e)}
            continue
        acc = float(100 * np.mean((prob > 0.5) == labels))
        agree = landmark_agreement(lm, ref_lm)
        rows[artifact_dir.name] = {
            **row, "validated": True, "face_accuracy": acc, "accuracy_drop": ref_acc - acc, "auc": roc_auc(prob, labels),
            "landmark_nme_vs_fp32": agree,
            "passed": ref_acc - acc <= ONET_ACCURACY_GATE and agree <= ONET_NME_GATE}
    return {"model": "mtcnn-onet (facenet-pytorch weights)",
            "images": f"{len(images)} real LFW crops from scikit-image lfw_subset ({int(labels.sum())} faces, "
                      f"{int((1 - labels).sum())} non-faces; the other 40 calibrated the int8 programs); landmarks on "
                      f"the {len(faces)} real faces incl. scikit-image astronaut",
            "fp32_torch": {"face_accuracy": ref_acc, "auc": roc_auc(ref_prob, labels)},
            "gates": {"accuracy_drop_points": ONET_ACCURACY_GATE, "landmark_nme_percent": ONET_NME_GATE},
            "artifacts": rows}


def validate_inputs(out: Path) -> str:
    return sha256_json([(read_json(out / d / "index.json") or {}).get("artifacts") for d in ("export", "onet/export")])


def validate_is_current(cfg: Config, out: Path) -> bool:
    record = read_json(out / "validate" / "accuracy.json")
    return record is not None and record.get("inputs_sha256") == validate_inputs(out) \
        and record.get("config_sha256") == sha256_json(cfg.to_dict()["quantize"])


def validate_stage(cfg: Config, out: str | Path) -> dict:
    out = Path(out)
    t0 = time.perf_counter()
    with progress() as bar, converter_log(out / "validate" / "runtimes.log"):  # the runtimes' own chatter
        kt = validate_kt(cfg, out, bar)
        onet = validate_onet(out, bar) if (out / "onet" / "export" / "index.json").is_file() else None
    if onet is not None:
        write_json(out / "onet" / "validate" / "accuracy.json", onet)
    result = {**kt, "inputs_sha256": validate_inputs(out), "config_sha256": sha256_json(cfg.to_dict()["quantize"]),
              "wall_s": round(time.perf_counter() - t0, 2)}
    write_json(out / "validate" / "accuracy.json", result)
    return {"kt": result, "onet": onet}
