"""`ktedge export`: every registered format x precision, each artifact in its own folder
`export/<format>-<precision>[-<variant>]/` with `manifest.json`; the real MTCNN O-Net goes
through the same exporters into `onet/export/`. A format that cannot lower an op records an
error naming the op and its module; the others still export."""
from __future__ import annotations

import re
import time
from pathlib import Path

from ktedge.atomic import atomic_path, read_json, sha256_file, sha256_json, write_json
from ktedge.config import Config
from ktedge.errors import KtedgeError
from ktedge.export.manifest import SCHEMA_ID, check_manifest, describe_file, tool_versions
from ktedge.export.registry import Exporter, exporters
from ktedge.export.source import QUANT_INFO, ExportSource, kt_source, onet_source
from ktedge.progress import console, converter_log, is_verbose, progress, quiet_library_logs

# Op names as converters write them: aten::foo, aten.foo, torch.ops.aten.foo, or "foo op:".
_OP = re.compile(r"(?:aten[:._]+|torch\.ops\.aten\.)([A-Za-z0-9_]+)|\b([a-z][a-z0-9_]*) op\b")


SELF = "L['self']."  # how torch.export prefixes module paths


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
    s = src.crop_size
    inp = {"name": built.get("input_name", "image"), "shape": [1, 3, s, s], "dtype": "float32", "layout": "NCHW",
           "quantization": None, **built.get("input", {})}
    outputs = []
    for i, o in enumerate(src.outputs):
        entry = {**o, "dtype": "float32", "quantization": None}
        entry.update(built.get("outputs", [{}] * len(src.outputs))[i])
        if "output_tensors" in built:
            entry["tensor"] = built["output_tensors"][i]
        outputs.append(entry)
    quant = built.get("quantization")
    if quant is None and exp.backend is not None:
        quant = {"method": QUANT_INFO[exp.backend], "weights": "int8 symmetric per-channel",
                 "activations": "int8 per-tensor", "float_layers": src.float_layers[exp.backend]}
    manifest = {
        "schema": SCHEMA_ID, "model": src.name, "format": exp.format, "precision": exp.precision,
        "variant": exp.variant, **describe_file(model_path), "runtime": exp.runtime, "input": inp,
        "preprocessing": {"crop_size": s, "crop": src.crop, "colour_order": "RGB",
                          "range": "raw 0..255 (normalisation is folded into the model)",
                          "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "outputs": outputs, "quantization": quant,
        "source": {"checkpoint_sha256": src.checkpoint_sha256,
                   "program_sha256": src.program_sha256.get(exp.backend or "fp32", src.program_sha256["fp32"])},
        "tools": tool_versions(),
    }
    if built.get("notes"):
        manifest["notes"] = built["notes"]
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


def export_source(src: ExportSource, dest: Path, formats: list[str], bar, only: list[str] | None = None) -> list[dict]:
    """Every artifact of `formats` (or just those named in `only`, e.g. tflite-int8) -> dest/<name>/."""
    registry = exporters()
    todo = [e for f in formats for e in registry[f] if not only or e.name in only]
    task = bar.add_task(f"export {src.name}", total=len(todo), info="")
    results = []
    for exp in todo:
        bar.update(task, info=exp.name)
        if exp.backend is not None and exp.backend not in src.quantized:
            results.append({"name": exp.name, "format": exp.format, "precision": exp.precision, "ok": False,
                            "error": f"no int8 program for backend '{exp.backend}' (add it to quantize.backends)"})
        else:
            try:
                results.append(export_one(src, exp, dest))
            except Exception as e:  # one format failing must not stop the others
                error = describe_failure(exp, src, e)
                console.print(f"[red]export {exp.name}: {error}[/red] (converter log: {dest / 'logs' / exp.name}.log)")
                results.append({"name": exp.name, "format": exp.format, "precision": exp.precision, "ok": False,
                                "error": error})
        bar.update(task, advance=1)
    return results


def export_inputs(cfg: Config, out: Path) -> dict:
    """What the export depends on: the programs it lowers and the formats asked for."""
    def digest(path: Path) -> str | None:
        return sha256_file(path) if path.is_file() else None
    fuse = read_json(out / "fuse" / "parity.json") or {}
    programs = {b: digest(out / "quantize" / b / "model.pt2") for b in cfg.quantize.backends}
    return {"checkpoint": fuse.get("checkpoint_sha256"), "deploy": digest(out / "fuse" / "deploy.pt2"),
            "quantize": programs, "formats": cfg.export.formats, "only": cfg.export.only, "onet": cfg.export.onet,
            "observer": cfg.quantize.observer}


def export_is_current(cfg: Config, out: Path) -> bool:
    index = read_json(out / "export" / "index.json")
    return (index is not None and index.get("inputs_sha256") == sha256_json(export_inputs(cfg, out))
            and all(Path(a["path"]).exists() for a in index["artifacts"] if a["ok"]))


def _second_process(cfg_dict: dict, out: str, onet: bool, verbose: bool) -> list[dict]:
    """What runs beside the KT model's exports: the O-Net's, then the comparison models the bench
    needs (ensemble, canonical encoder alone). Spawned (no torch state is shared), or called in
    this process on a single core."""
    from ktedge.benchmarks.stage import export_variants
    from ktedge.config import config_from_dict

    quiet_library_logs(verbose)
    cfg, out_dir = config_from_dict(cfg_dict, "config"), Path(out)
    results = []
    with progress() as bar:
        if onet:
            results = export_source(onet_source(cfg.quantize.backends, cfg.quantize.observer),
                                    out_dir / "onet" / "export", cfg.export.formats, bar)
        try:
            export_variants(cfg, out_dir, bar)
        except Exception as e:  # the bench retries them and reports; the deploy artifacts stand
            console.print(f"[yellow]export: comparison models not exported here ({e}); ktedge bench retries[/yellow]")
    return results


def export_stage(cfg: Config, out: str | Path) -> dict:
    """The KT model's artifacts, the O-Net's and the bench's comparison models. On two or more
    cores the last two export in a second process while this one exports the KT model (the
    converters are single-threaded Python)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    out = Path(out)
    t0 = time.perf_counter()
    formats = cfg.export.formats
    src = kt_source(cfg, out)  # missing or changed inputs fail here, before a second process starts
    second = (cfg.to_dict(), str(out), cfg.export.onet, is_verbose())
    pool = None
    if (os.cpu_count() or 1) > 1:
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        job = pool.submit(_second_process, *second)
    try:
        with progress() as bar:
            artifacts = export_source(src, out / "export", formats, bar, cfg.export.only)
        if pool is None:
            onet = _second_process(*second)
        else:
            if not job.done():
                console.print("export: waiting for the O-Net and comparison-model exports in the second process")
            try:
                onet = job.result()
            except BrokenProcessPool as e:
                onet = [{"name": e_.name, "format": e_.format, "precision": e_.precision, "ok": False,
                         "error": f"the second export process died: {e}"}
                        for f in formats for e_ in exporters()[f]]
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if cfg.export.onet:
        write_json(out / "onet" / "export" / "index.json", {"artifacts": onet})
    index = {"artifacts": artifacts, "inputs_sha256": sha256_json(export_inputs(cfg, out)),
             "wall_s": round(time.perf_counter() - t0, 2)}
    write_json(out / "export" / "index.json", index)
    if not any(a["ok"] for a in artifacts):
        raise KtedgeError(f"{out / 'export'}: no format exported; see the errors above")
    return index
