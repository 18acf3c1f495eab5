"""Run an exported artifact in its own runtime, with I/O handled from its manifest only:
colour order, normalisation, layout, input dtype and int8 quantization, output dequantization
(export/preprocess.py). Validation and the latency harness both go through here."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ktedge.errors import KtedgeError
from ktedge.export.manifest import load_manifest
from ktedge.export.preprocess import dequantize_output, model_input


class NotRunnableHere(KtedgeError):
    """The artifact's runtime is not here: not on this OS (Core ML off Apple), or not installed.
    Validation records the artifact as not run and goes on with the others."""

    def __init__(self, message: str, short: str):
        super().__init__(message)
        self.short = short  # a few words for a table cell


class Runner:
    """`runner(image)` with image (1, 3, S, S) float32 RGB 0..255 -> the outputs in manifest order."""

    def __init__(self, artifact_dir: Path, manifest: dict, invoke: Callable[[np.ndarray], list[np.ndarray]]):
        self.artifact_dir, self.manifest, self._invoke = artifact_dir, manifest, invoke

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        raw = self._invoke(model_input(image, self.manifest))
        return [dequantize_output(y, t).reshape(t["shape"]) for y, t in zip(raw, self.manifest["outputs"])]


def _executorch(path: Path, manifest: dict, threads: int):
    # The quantized kernels, for q/dq ops an int8 program with float layers may leave outside
    # XNNPACK (seen: "Missing operator: quantized_decomposed::dequantize_per_channel.out").
    import executorch.kernels.quantized  # noqa: F401
    import torch
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    if _threadpool_get_thread_count() != threads:  # XNNPACK's pool; the binding's only thread control
        _unsafe_reset_threadpool(threads)
    method = Runtime.get().load_program(path).load_method("forward")
    return lambda x: [t.numpy() for t in method.execute([torch.from_numpy(x)])]


def _tflite(path: Path, manifest: dict, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=threads).get_signature_runner()
    key = next(iter(runner.get_input_details()))

    def invoke(x: np.ndarray) -> list[np.ndarray]:
        result = runner(**{key: x})
        return [result[o["tensor"]] for o in manifest["outputs"]]
    return invoke


def _onnx(path: Path, manifest: dict, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def _coreml(path: Path, manifest: dict, threads: int):
    import platform

    if platform.system() != "Darwin":
        raise NotRunnableHere(f"{path}: Core ML runs only on macOS/iOS (this is {platform.system()})", "Apple only")
    import coremltools as ct

    model = ct.models.MLModel(str(path))
    name = manifest["input"]["name"]
    return lambda x: [model.predict({name: x})[o["tensor"]] for o in manifest["outputs"]]


# What each loader imports: a latency harness imports these before timing a load.
RUNTIME_MODULES = {"executorch": ["torch", "executorch.runtime"], "tflite": ["ai_edge_litert.interpreter"],
                   "onnx": ["onnxruntime"], "coreml": []}
LOADERS = {"executorch": _executorch, "tflite": _tflite, "onnx": _onnx, "coreml": _coreml}


def open_runner(artifact_dir: str | Path, threads: int = 1) -> Runner:
    """Load an artifact (manifest checked, hash verified) into its runtime."""
    artifact_dir = Path(artifact_dir)
    manifest = load_manifest(artifact_dir)
    if manifest["format"] == "executorch" and manifest["variant"] == "coreml":
        import platform

        if platform.system() != "Darwin":
            raise NotRunnableHere(f"{artifact_dir}: the ExecuTorch Core ML delegate runs only on Apple devices",
                                  "Apple only")
    try:
        invoke = LOADERS[manifest["format"]](artifact_dir / manifest["file"], manifest, threads)
    except (ImportError, ModuleNotFoundError) as e:
        raise NotRunnableHere(f"{artifact_dir}: the {manifest['format']} runtime is not installed ({e.name}); "
                              f"`pip install -e .` installs it", f"{e.name} not installed") from None
    return Runner(artifact_dir, manifest, invoke)
