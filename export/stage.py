"""`ktedge export`: every deployable of the run through the format registry, each artifact in its
own folder with `manifest.json`. The run's model gets every artifact of `export.formats`
(`export/<format>-<precision>[-<variant>]/`); its comparison models get each format's fp32
artifact that runs here (`export/comparisons/<name>/`); each published model beside it is a run
of its own and exports the same way. A format that cannot lower an op records an error naming
the op and its module; the others still export. Export converts only: every int8 program it
lowers was made and gated by the quantize stage."""
from __future__ import annotations

import re
import time
from pathlib import Path

import torch

from ktedge.atomic import atomic_path, read_json, sha256_json, write_json
from ktedge.config import Config
from ktedge.deployable import Deployable, deployable_folders, load_deployable
from ktedge.errors import KtedgeError
from ktedge.export.manifest import SCHEMA_ID, check_manifest, describe_file, tool_versions
from ktedge.export.registry import Exporter, exporters, formats, reference_exporters
from ktedge.export.source import ExportSource, export_source, quantized_program
from ktedge.model.data.datasets import split_faces
from ktedge.progress import console, converter_log, is_verbose, progress, quiet_library_logs
from ktedge.quantize.calibration import calibration_set

# Op names as converters write them: aten::foo, aten.foo, torch.ops.aten.foo, or "foo op:".
_OP = re.compile(r"(?:aten[:._]+|torch\.ops\.aten\.)([A-Za-z0-9_]+)|\b([a-z][a-z0-9_]*) op\b")
SELF = "L['self']."  # how torch.export prefixes module paths
BUNDLED_FACES = 4  # held-out faces an artifact may carry as test cases (ExecuTorch's BundledProgram)


def op_modules(program, op: str) -> list[str]:
    """The modules a graph op was traced in (from nn_module_stack), for error messages."""
    found = []
    for node in program.graph.nodes:
        if node.op == "call_function" and str(node.target).split(".")[-2:][0] == op:
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path, cls = list(stack.values())[-1]
                where = f"{path.removeprefix(SELF)} ({str(getattr(cls, '__name__', cls)).rsplit('.', 1)[-1]})"
            else:
                where = "(top level)"
            if where not in found:
                found.append(where)
    return found


def describe_failure(exp: Exporter, src: ExportSource, exc: BaseException) -> str:
    """One line: which op the format could not lower and where it came from, when the
    converter's message names an op; else the converter's own first line."""
    chain, e = [], exc
    while e is not None and len(chain) < 5:  # the converters wrap the error that names the op
        chain.append(" ".join(str(e).split()))
        e = e.__cause__ or e.__context__
    message = chain[0]
    for op in (a or b for text in chain for a, b in _OP.findall(text)):
        modules = op_modules(src.program, op)
        if modules:
            where = ", ".join(modules[:4]) + (f" and {len(modules) - 4} more" if len(modules) > 4 else "")
            return f"{exp.format} cannot lower op aten.{op} (in module {where}): {message[:200]}"
    return f"{exp.format} export failed ({type(exc).__name__}): {message[:300]}"


def build_manifest(src: ExportSource, exp: Exporter, built: dict, model_path: Path) -> dict:
    d = src.deployable
    inp = {"name": built.get("input_name", d.input["name"]), "shape": d.input["shape"], "dtype": "float32",
           "layout": "NCHW", "quantization": None, **built.get("input", {})}
    outputs = []
    for i, o in enumerate(d.outputs):
        entry = {k: o[k] for k in ("name", "shape", "kind", "decode", "labels") if k in o}
        entry.update({"dtype": "float32", "quantization": None, "task": o["task"]["name"] if o["task"] else None})
        entry.update(built.get("outputs", [{}] * len(d.outputs))[i])
        if "output_tensors" in built:
            entry["tensor"] = built["output_tensors"][i]
        outputs.append(entry)
    quant = built.get("quantization")
    if quant is None and exp.backend is not None:
        quant = src.quantization[exp.backend]
    folded = d.input["mean"] == [0.0, 0.0, 0.0] and d.input["std"] == [1.0, 1.0, 1.0]
    manifest = {
        "schema": SCHEMA_ID, "model": d.name, "format": exp.format, "precision": exp.precision,
        "variant": exp.variant, **describe_file(model_path), "runtime": exp.runtime, "input": inp,
        "preprocessing": {"crop_size": d.crop_size, "crop_rule": d.input["crop"]["rule"],
                          "crop": d.input["crop"]["description"],
                          **({"alignment": d.input["alignment"]} if "alignment" in d.input else {}),
                          "colour_order": d.input["colour_order"],
                          "range": "raw 0..255 (normalisation is folded into the model)" if folded else "0..255",
                          "mean": d.input["mean"], "std": d.input["std"]},
        "outputs": outputs, "quantization": quant,
        "source": {"deployable_sha256": d.sha256,
                   "program_sha256": src.program_sha256.get(exp.backend or "fp32", d.sha256),
                   "made_by": d.record["provenance"]["made_by"],
                   "origin_sha256": d.record["provenance"]["source"]["sha256"]},
        "tools": tool_versions(),
    }
    for key in ("bundled_program", "ethosu", "notes"):
        if built.get(key):
            manifest[key] = built[key]
    fmt = formats()[exp.format]
    if fmt.placement is not None:
        manifest["placement"] = fmt.placement(model_path)
    return check_manifest(manifest, f"{exp.name} manifest")


def export_one(src: ExportSource, exp: Exporter, dest: Path) -> dict:
    """Write dest/<exp.name>/{model<suffix>, manifest.json} as one atomic folder rename."""
    t0 = time.perf_counter()
    with atomic_path(dest / exp.name) as tmp, converter_log(dest / "logs" / f"{exp.name}.log"):
        tmp.mkdir()
        model_path = tmp / f"model{exp.suffix}"
        built = exp.build(src, model_path)
        manifest = build_manifest(src, exp, built, model_path)
        write_json(tmp / "manifest.json", manifest)
    return {"name": exp.name, "format": exp.format, "precision": exp.precision, "variant": exp.variant,
            "path": str(dest / exp.name / manifest["file"]), "size_bytes": manifest["size_bytes"],
            "sha256": manifest["sha256"], "ok": True, "wall_s": round(time.perf_counter() - t0, 2)}


def export_artifacts(src: ExportSource, dest: Path, todo: list[Exporter], bar) -> list[dict]:
    """Each exporter of `todo` on `src` -> dest/<name>/; a failure is a row naming why."""
    task = bar.add_task(f"export {src.name}", total=len(todo), info="")
    results = []
    for exp in todo:
        bar.update(task, info=exp.name)
        if exp.backend is not None and exp.backend not in src.quantization:
            results.append({"name": exp.name, "format": exp.format, "precision": exp.precision, "ok": False,
                            "error": f"no int8 program for backend '{exp.backend}' (add it to quantize.backends)"})
        else:
            try:
                results.append(export_one(src, exp, dest))
            except Exception as e:  # one format failing must not stop the others
                error = describe_failure(exp, src, e)
                console.print(f"[red]export {src.name} {exp.name}: {error}[/red] (converter log: "
                              f"{dest / 'logs' / exp.name}.log)")
                results.append({"name": exp.name, "format": exp.format, "precision": exp.precision, "ok": False,
                                "error": error})
        bar.update(task, advance=1)
    return results


def _todo(cfg: Config, deployable: Deployable) -> list[Exporter]:
    """The run's model: every artifact of the formats asked for; a comparison model: the fp32 ones."""
    if deployable.role != "deploy":
        return [e for e in reference_exporters() if e.format in cfg.export.formats]
    return [e for f in cfg.export.formats for e in exporters()[f] if not cfg.export.only or e.name in cfg.export.only]


def _dest(run: Path, folder: Path) -> Path:
    return run / "export" if folder == run / "fuse" else run / "export" / "comparisons" / folder.name


def export_inputs(cfg: Config, out: Path) -> dict:
    """What the export depends on: the deployables it converts, their int8 programs, what is asked for."""
    programs = {b: (read_json(out / "quantize" / b / "sensitivity.json") or {}).get("model_sha256")
                for b in cfg.quantize.backends}
    deployables = {str(f.relative_to(out)): (read_json(f / "deployable.json") or {}).get("program", {}).get("sha256")
                   for f in deployable_folders(out)}
    return {"deployables": deployables, "quantize": programs, "formats": cfg.export.formats, "only": cfg.export.only,
            "observer": cfg.quantize.observer}


def export_is_current(cfg: Config, out: Path) -> bool:
    index = read_json(out / "export" / "index.json")
    return (index is not None and index.get("inputs_sha256") == sha256_json(export_inputs(cfg, out))
            and all((out / a["path"]).exists() for rows in [index["artifacts"], *index.get("comparisons", {}).values()]
                    for a in rows if a["ok"]))


def export_deployable(cfg_dict: dict, run: str, folder: str, verbose: bool) -> list[dict]:
    """One deployable's artifacts (a job: run in this process, or spawned beside the others)."""
    from ktedge.config import config_from_dict

    quiet_library_logs(verbose)
    cfg, run_dir = config_from_dict(cfg_dict, f"{run}/config.yaml"), Path(run)
    deployable = load_deployable(folder)
    todo = _todo(cfg, deployable)
    example = split_faces(cfg, "calibration", n=1).tensors()["image"].clone()
    held_out = split_faces(cfg, "test", n=BUNDLED_FACES).tensors()["image"].clone()
    backends = [b for b in cfg.quantize.backends if any(e.backend == b for e in todo)]
    # The int8-I/O file's output scales are set on the calibration faces, as its activations' were.
    calibration = torch.from_numpy(calibration_set(cfg)[0]) if "tflite" in backends else None
    src = export_source(deployable, run_dir, backends, example, cfg.quantize.observer, held_out, calibration)
    with progress() as bar:
        return export_artifacts(src, _dest(run_dir, Path(folder)), todo, bar)


def export_stage(cfg: Config, out: str | Path) -> dict:
    """Every deployable of the run. On two or more cores the comparison models export in a
    second process while this one exports the run's model (the converters are single-threaded)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    out = Path(out)
    t0 = time.perf_counter()
    main = load_deployable(out / "fuse")  # missing or changed inputs fail here, before any work
    _ = main.program  # read: its hash is checked
    for backend in [b for b in cfg.quantize.backends if any(e.backend == b for e in _todo(cfg, main))]:
        quantized_program(main, out, backend)
    folders = deployable_folders(out)
    jobs = [(cfg.to_dict(), str(out), str(f), is_verbose()) for f in folders]
    results: dict[str, list[dict]] = {}
    if (os.cpu_count() or 1) > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            others = [pool.submit(export_deployable, *job) for job in jobs[1:]]
            results[jobs[0][2]] = export_deployable(*jobs[0])
            if not all(f.done() for f in others):
                console.print("export: waiting for the comparison models' exports in the second process")
            for job, future in zip(jobs[1:], others):
                results[job[2]] = future.result()
    else:
        for job in jobs:
            results[job[2]] = export_deployable(*job)
    for rows in results.values():  # paths relative to the run: a copied run points at its own files
        for a in rows:
            if a["ok"]:
                a["path"] = str(Path(a["path"]).relative_to(out))
    index = {"artifacts": results[str(out / "fuse")],
             "comparisons": {Path(f).name: rows for f, rows in results.items() if f != str(out / "fuse")},
             "inputs_sha256": sha256_json(export_inputs(cfg, out)), "wall_s": round(time.perf_counter() - t0, 2)}
    write_json(out / "export" / "index.json", index)
    if not any(a["ok"] for a in index["artifacts"]):
        raise KtedgeError(f"{out / 'export'}: no format exported; see the errors above")
    return index
