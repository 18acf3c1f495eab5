import os
import shutil
import subprocess
import sys

import pytest

from ktedge.config import load_config


def ktedge(*args: str, preexec=None, prelude: str = "") -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter, as a user runs it (`prelude`: Python run first)."""
    code = f"import sys\n{prelude}\nfrom ktedge.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                          preexec_fn=preexec)


# A small but real run: every stage of the training recipe, on few faces, in seconds; one published
# model beside it (MediaPipe's ports have tests of their own: tests/test_published_*.py).
TINY = {
    "data": {"n_train": 480, "n_val": 120},
    "train": {"prior_epochs": 3, "canonical_epochs": 4, "adapter_epochs": 8, "batch_size": 32},
    "published": ["mtcnn-onet"],
}
# Quicker quantize and bench settings for the stages after training.
QUICK = {"quantize": {"calibration_faces": 32, "eval_faces": 60, "max_float_layers": 2},
         "bench": {"warmup": 2, "iters": 20, "rounds": 4}}


def deploy_published(name: str, out, artifacts: list[str]) -> tuple:
    """The published model `name` imported into `out`, quantized for ExecuTorch and LiteRT, exported
    as `artifacts`, validated: (out, the import record, the validation)."""
    from ktedge.export.stage import export_stage
    from ktedge.export.validate import validate_stage
    from ktedge.pipeline import import_published
    from ktedge.quantize.stage import quantize_stage

    parent = load_config(overrides=[QUICK, {"quantize": {"backends": ["executorch", "tflite"]},
                                            "export": {"formats": ["executorch", "tflite"], "only": artifacts}}])
    record = import_published(parent, out, name)
    cfg = load_config(out / "config.yaml")
    quantize_stage(cfg, out)
    export_stage(cfg, out)
    return out, record, validate_stage(cfg, out)


@pytest.fixture(scope="session")
def tiny_cfg():
    return load_config(overrides=[TINY])


@pytest.fixture(scope="session")
def tiny_run(tiny_cfg, tmp_path_factory):
    """A trained tiny run directory, shared by the tests that need a checkpoint."""
    from ktedge.model.train import train

    out = tmp_path_factory.mktemp("tiny_run")
    metrics = train(tiny_cfg, out)
    return out, metrics


@pytest.fixture(scope="module")
def one_thread():
    """A module's tests on one torch thread: the runtimes they compare against run on one, and on a
    shared 2-core machine two OpenMP threads per process make tiny steps many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ONET = "published/mtcnn-onet"  # where a run deploys the real O-Net beside its own model


@pytest.fixture(scope="session")
def exported(tiny_run, tmp_path_factory):
    """The tiny run fused, the real O-Net imported beside it from its shipped spec, both quantized,
    exported to every format and validated: the chain `ktedge run` runs, but the bench."""
    from ktedge.export.stage import export_stage
    from ktedge.export.validate import validate_stage
    from ktedge.model.fuse import fuse_stage
    from ktedge.pipeline import import_published, run_configs
    from ktedge.quantize.stage import quantize_stage

    src, _ = tiny_run
    out = tmp_path_factory.mktemp("exported")
    shutil.copytree(src, out, dirs_exist_ok=True)
    cfg = load_config(overrides=[TINY, QUICK])
    fuse_stage(out)
    import_published(cfg, out / ONET, "mtcnn-onet")
    results = {}
    for c, run in run_configs(cfg, out):
        quantize_stage(c, run)
        results[run] = export_stage(c, run), validate_stage(c, run)
    index, validation = results[out]
    return out, cfg, index, validation


BLAZEFACE_ARTIFACTS = ["tflite-fp32", "tflite-int8", "executorch-int8"]


@pytest.fixture(scope="session")
def blazeface_run(tmp_path_factory):
    """The published detector deployed as a run of its own (tests/test_published_blazeface.py), its
    artifacts also the detector the app's core is held to (tests/test_android_core.py)."""
    return deploy_published("blazeface", tmp_path_factory.mktemp("blazeface"), BLAZEFACE_ARTIFACTS)


# `make test` runs two pytest workers (-n 2 --dist loadgroup): the tests that build runs of their
# own (the systems' trainings, the import tests, FaceMesh's deployment) on one, everything else on
# the other, where the session fixtures above (a trained and exported tiny run, the deployed
# detector) are built once and shared. The two groups are given to xdist's scheduler directly: xdist_group
# marks reach it by a suffix xdist writes into the test ids, which pytest 9.2's structured ids
# silently drop (pytest-xdist#1386), and each worker then built the exported run and the systems'
# fixtures again. A worker uses one thread, and so do the `ktedge` processes it starts.
@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SystemsApart(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            # test_import trains and imports its own model, test_published_facemesh deploys its own:
            # neither needs a shared run, and the shared runs' group is the longer one.
            own_runs = ("tests/test_systems.py", "tests/test_import.py", "tests/test_published_facemesh.py")
            return "systems" if nodeid.startswith(own_runs) else "pipeline"

    return SystemsApart(config, log)


if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
