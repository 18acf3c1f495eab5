"""The Android app's runtime wrappers (app/: FaceModel.kt, LiteRtFaceModel.kt, ExecuTorchFaceModel.kt)
compiled on the desktop JVM with Debian's kotlinc against signature stubs of the LiteRT and ExecuTorch
APIs the app pins (android_demo/stubs: generated from the libraries' sources, commits and sha256s in
SOURCES.json), so an API drift fails here; and the one version story: the pins in gradle.properties,
in core's Runtimes.kt and in the stubs agree, and are no older than the exporter's in pyproject.toml."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "android_demo"
STUBS = DEMO / "stubs"
APP = DEMO / "app/src/main/kotlin/org/ktedge/demo"
GSON = Path("/usr/share/java/gson.jar")
FIXTURES = Path(__file__).parent / "fixtures" / "android"


def _toolchain_missing() -> str | None:
    missing = [] if GSON.is_file() else [str(GSON)]
    if shutil.which("kotlinc") is None or shutil.which("java") is None:
        missing.append("kotlinc/java")
    return ", ".join(missing) or None


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    """android_demo/stubs/compile_app.sh run: -> its folder (runtime-stubs.jar, app-wrappers.jar)."""
    missing = _toolchain_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"Kotlin toolchain missing in CI ({missing}): `make android-core-deps` should have installed it")
        pytest.skip(f"Kotlin toolchain missing ({missing}): run `make android-core-deps`")
    out = tmp_path_factory.mktemp("app-desktop")
    r = subprocess.run(["bash", str(STUBS / "compile_app.sh"), str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def kotlinc(out: Path, source: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Compiles one snippet as app code: against the stubs and the compiled wrappers."""
    (tmp_path / "Snippet.kt").write_text(source)
    cp = f"{out / 'runtime-stubs.jar'}:{out / 'app-wrappers.jar'}:{GSON}"
    return subprocess.run(["kotlinc", "-nowarn", str(tmp_path / "Snippet.kt"), "-cp", cp, "-d", str(tmp_path / "s.jar")],
                          capture_output=True, text=True, timeout=300)


def test_the_runtime_wrappers_compile_against_the_pinned_apis(compiled):
    with zipfile.ZipFile(compiled / "app-wrappers.jar") as jar:
        classes = set(jar.namelist())
    for name in ("LiteRtFaceModel", "ExecuTorchFaceModel", "FaceModels"):
        assert f"org/ktedge/demo/{name}.class" in classes
    with zipfile.ZipFile(compiled / "runtime-stubs.jar") as jar:
        stubbed = set(jar.namelist())
    # the wrappers were compiled against the stubs, not against nothing
    assert {"com/google/ai/edge/litert/CompiledModel.class", "org/pytorch/executorch/Module.class"} <= stubbed


GOOD = """package ktedge.check
import com.google.ai.edge.litert.CompiledModel
import org.pytorch.executorch.Module

fun liteRt(path: String): CompiledModel = CompiledModel.create(path, CompiledModel.Options.CPU)
fun executorch(module: Module) { module.loadMethod("forward") }
"""

# What the wrappers called before: LiteRT 2.0's Model class (gone from 2.1) and ExecuTorch 1.0's
# loadMethod status code (void from 1.3, it throws instead).
BAD = """package ktedge.check
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.Model
import org.pytorch.executorch.Module

fun liteRt(path: String): CompiledModel = CompiledModel.create(Model.load(path), CompiledModel.Options.CPU)
fun executorch(module: Module): Boolean = module.loadMethod("forward") == 0
"""


def test_a_call_the_pinned_api_lacks_fails_the_compile(compiled, tmp_path):
    good = kotlinc(compiled, GOOD, tmp_path)
    assert good.returncode == 0, good.stderr[-3000:]
    bad = kotlinc(compiled, BAD, tmp_path)
    assert bad.returncode != 0
    assert "unresolved reference: Model" in bad.stderr
    assert "operator '==' cannot be applied to 'Unit' and 'Int'" in bad.stderr


def _compiled_app_sources() -> list[str]:
    script = (STUBS / "compile_app.sh").read_text()
    return re.search(r"^app_sources=\(([^)]*)\)", script, re.M).group(1).split()


def test_every_app_source_that_touches_a_runtime_is_compiled():
    """A new wrapper file cannot escape the check, and the compiled ones stay free of Android."""
    listed = _compiled_app_sources()
    for source in APP.glob("*.kt"):
        text = source.read_text()
        if re.search(r"^import (com\.google\.ai\.edge\.litert|org\.pytorch\.executorch)\.", text, re.M):
            assert source.name in listed, f"{source.name} uses a runtime but compile_app.sh does not compile it"
    for name in listed:
        assert not re.search(r"^import android", (APP / name).read_text(), re.M), f"{name} imports Android"


def _load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def test_the_stub_generator_keeps_signatures_and_drops_bodies():
    """A hand-written file in the library sources' shapes -> its stub, as reviewed: private and
    internal members, bodies, annotations and trailing commas gone; defaults, constructors' visibility,
    enum entries, getters and supertypes kept."""
    stubs = _load_module(STUBS / "kotlin_stubs.py")
    got = stubs.stub_file((FIXTURES / "stub_input.kt").read_text(), "// stub of tests/fixtures/android/stub_input.kt")
    assert got == (FIXTURES / "stub_expected.kt").read_text()


def test_the_committed_stubs_are_the_recorded_sources():
    sources = json.loads((STUBS / "SOURCES.json").read_text())
    recorded = set()
    for lib in sources["libraries"].values():
        for f in lib["files"]:
            stub = (STUBS / f["stub"]).read_text()
            assert f"{lib['repo']}@{lib['commit'][:12]}:\n// {f['path']} (sha256 {f['sha256']})" in stub
            recorded.add(f["stub"])
    recorded |= {a["stub"] for a in sources["android"]} | {"src/ktedge/stubs/Stub.kt"}
    assert {str(p.relative_to(STUBS)) for p in (STUBS / "src").rglob("*.kt")} == recorded


@pytest.mark.skipif(not (os.environ.get("EXECUTORCH_GIT") and os.environ.get("LITERT_GIT")),
                    reason="regenerating needs the libraries' sources: set EXECUTORCH_GIT and LITERT_GIT to clones")
def test_the_generator_reproduces_the_committed_stubs(tmp_path):
    subprocess.run([sys.executable, str(STUBS / "generate.py"), "--executorch-git", os.environ["EXECUTORCH_GIT"],
                    "--litert-git", os.environ["LITERT_GIT"], "--out", str(tmp_path)], check=True)
    for path in [*(tmp_path / "src").rglob("*.kt"), tmp_path / "SOURCES.json"]:
        assert path.read_text() == (STUBS / path.relative_to(tmp_path)).read_text(), path


def _gradle_properties() -> dict[str, str]:
    lines = (DEMO / "gradle.properties").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.match(r"\d+(\.\d+)*", version).group(0).split("."))


def test_one_version_story_from_exporter_to_app():
    """gradle.properties pins the AARs; core's Runtimes.kt states the same versions (the app's
    refusal message and its result rows use them); the stubs were generated for them; and no pin is
    older than the package that writes (executorch) or checks (ai-edge-litert) the artifact."""
    gradle = _gradle_properties()
    runtimes = (DEMO / "core/src/main/kotlin/org/ktedge/demo/core/Runtimes.kt").read_text()
    stubbed = json.loads((STUBS / "SOURCES.json").read_text())["libraries"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    for runtime, prop, const, exporter in (("executorch", "executorchVersion", "EXECUTORCH", "executorch"),
                                           ("litert", "litertVersion", "LITERT", "ai-edge-litert")):
        pinned = gradle[prop]
        assert re.search(rf'const val {const} = "{re.escape(pinned)}"', runtimes), (const, pinned)
        assert stubbed[runtime]["pinned"] == pinned
        exported = re.search(rf'"{exporter}==([^"]+)"', pyproject).group(1)
        assert _numbers(pinned) >= _numbers(exported), f"{prop}={pinned} is older than {exporter}=={exported}"
