"""Faults from outside the code: a disk that fills while an artifact is written, a runtime library
that is not installed. Each is one named line, exit 2, and nothing written before is lost."""
import json
import resource
import shutil
import subprocess
import sys

from ktedge.atomic import sha256_file
from tests.conftest import ktedge

# A "disk" that takes files up to 1 MB: the JSON records fit, the deploy graphs (~2.5 MB) do not.
# Python ignores SIGXFSZ, so a write past the limit fails with EFBIG as on a full disk (ENOSPC).
FILE_SIZE_LIMIT = 1_000_000


def _small_disk() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def test_a_full_disk_while_fusing_is_one_line_and_keeps_the_previous_graph(tiny_run, tmp_path):
    src, _ = tiny_run
    out = tmp_path / "run"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("quantize", "export", "validate", "bench", "published"))
    assert ktedge("fuse", "--out", str(out)).returncode == 0
    before = {p: sha256_file(p) for p in (out / "fuse").rglob("*") if p.is_file()}
    r = ktedge("fuse", "--out", str(out), preexec=_small_disk)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"ktedge: error: {out / 'fuse' / 'deploy.pt2'}: File too large"), r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert {p: sha256_file(p) for p in (out / "fuse").rglob("*") if p.is_file()} == before  # old graphs, records intact
    assert not list(out.rglob(".*.tmp"))  # the half-written temp is gone


def test_a_full_disk_while_writing_a_checkpoint_is_one_line(tiny_run, tmp_path):
    """torch.save on its own raises a bare RuntimeError on a short write; ktedge names the file."""
    src, _ = tiny_run
    dest = tmp_path / "checkpoint.pt"
    dest.write_bytes(b"previous")
    code = ("import resource, torch\n"
            f"from ktedge.model.checkpoint import load_checkpoint, save_checkpoint\n"
            f"model, cfg = load_checkpoint({str(src / 'train' / 'checkpoint.pt')!r})\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
            f"try:\n    save_checkpoint({str(dest)!r}, model, cfg)\n"
            f"except OSError as e:\n    print('OSError', e.filename, e.strerror)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert f"OSError {dest} File too large" in r.stdout, r.stdout + r.stderr
    assert dest.read_bytes() == b"previous"


def test_a_missing_runtime_is_named_and_validation_goes_on_with_the_others(exported, tmp_path):
    """onnxruntime made unimportable (sys.modules entry None: `import` raises ImportError)."""
    src, *_ = exported
    out = tmp_path / "run"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("bench"))
    no_ort = "sys.modules['onnxruntime'] = None"
    r = ktedge("predict", str(out / "export" / "onnx-int8"), "/nonexistent.png", prelude=no_ort)
    assert r.returncode == 2 and "/nonexistent.png: no such image" in r.stderr  # the image is checked first
    photo = tmp_path / "face.png"
    from PIL import Image
    from skimage import data

    Image.fromarray(data.astronaut()[30:190, 160:320]).save(photo)
    r = ktedge("predict", str(out / "export" / "onnx-int8"), str(photo), prelude=no_ort)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert f"{out / 'export' / 'onnx-int8'}: the onnx runtime is not installed (onnxruntime)" in r.stderr

    r = ktedge("validate", "--out", str(out), prelude=no_ort)
    assert r.returncode == 0, r.stderr
    rows = json.loads((out / "validate" / "accuracy.json").read_text())["artifacts"]
    assert rows["onnx-int8"]["validated"] is False and rows["onnx-int8"]["not_run"] == "onnxruntime not installed"
    assert rows["tflite-int8"]["validated"] and rows["executorch-int8"]["validated"]
    assert "not run here (onnxruntime not installed)" in r.stderr
