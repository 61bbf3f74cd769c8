"""The engine-only distribution (engine/, ``sparsekit-engine``) installs and runs where torch is absent.

Builds the wheel from the checkout (no build isolation: the dev venv's scikit-build-core / pybind11 and the
incremental CMake tree under engine/build/ are reused, so this takes seconds after ``make venv``), installs it
into a fresh virtualenv that has no torch and no sparsekit, gives that venv only numpy, onnx and their
dependencies (linked from the dev venv: no network), and runs a sparse model there: the CLI's JSON and a
parity check against ONNX Runtime outputs computed here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

from tests.unit.test_engine_graphs import conv_model

ROOT = Path(__file__).resolve().parents[2]
#: what the engine's runtime imports need; everything else (torch, sparsekit, onnxruntime) stays out
RUNTIME_MODULES = ("numpy", "onnx", "google", "typing_extensions", "ml_dtypes")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("scikit_build_core") is None or importlib.util.find_spec("pybind11") is None,
    reason="building the engine wheel needs scikit-build-core and pybind11 in the venv (make venv installs them)",
)


def _link_runtime_deps(site: Path, shadow: Path) -> None:
    """A .pth in the new venv pointing at a folder holding only the runtime deps (symlinks)."""
    shadow.mkdir()
    for name in RUNTIME_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        # packages: the folder holding __init__ (or the namespace folder); single-file modules: the file
        src = Path(spec.origin).parent if spec.origin and spec.origin.endswith("__init__.py") else (
            Path(spec.origin) if spec.origin else Path(list(spec.submodule_search_locations)[0]))
        (shadow / src.name).symlink_to(src)
        libs = src.parent / f"{name}.libs"  # manylinux wheels keep vendored shared libraries next to the package
        if libs.is_dir():
            (shadow / libs.name).symlink_to(libs)
    (site / "runtime_deps.pth").write_text(str(shadow) + "\n")


@pytest.fixture(scope="module")
def engine_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("engine_wheel")
    wheels = tmp / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", str(ROOT / "engine"),
         "-w", str(wheels)], capture_output=True, text=True, timeout=1200)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("sparsekit_engine-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    _link_runtime_deps(site, tmp / "runtime_deps")
    return py


def test_engine_wheel_runs_without_torch(engine_venv, tmp_path):
    py = engine_venv
    # the venv really lacks torch, sparsekit and onnxruntime, and has the engine from the wheel (not the checkout)
    probe = subprocess.run([str(py), "-c", (
        "import importlib.util as u, json, sparsekit_engine as e;"
        "print(json.dumps({m: u.find_spec(m) is not None for m in ('torch', 'sparsekit', 'onnxruntime')}"
        " | {'file': e.__file__}))")], capture_output=True, text=True, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout)
    assert seen["torch"] is False and seen["sparsekit"] is False and seen["onnxruntime"] is False
    assert str(ROOT) not in seen["file"]

    rng = np.random.default_rng(3)
    path = conv_model(tmp_path / "sparse.onnx", rng, density=0.1)
    x = rng.standard_normal((3, 8, 10, 9)).astype(np.float32)  # conv_model: C=8, H=10, W=9
    np.save(tmp_path / "x.npy", x)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {sess.get_inputs()[0].name: x})[0]

    run = subprocess.run([str(py), "-c", (
        "import numpy as np, sparsekit_engine as e;"
        f"s = e.load({str(path)!r}, cache=False); np.save('y.npy', s.run(np.load('x.npy')));"
        "print(s.verification['reference'] if 'reference' in s.verification else s.verification)")],
        capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    got = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

    cli = subprocess.run([str(py), "-m", "sparsekit_engine", "bench", str(path), "--batch", "2", "--seconds", "0.2",
                          "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr[-2000:]
    result = json.loads(cli.stdout)
    assert result["batch"] == 2 and result["median_ms"] > 0 and result["runs"] >= 5

    bad = subprocess.run([str(py), "-m", "sparsekit_engine", "bench", str(tmp_path / "missing.onnx")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    usage = subprocess.run([str(py), "-m", "sparsekit_engine", "bench", str(path), "--batch", "0"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1 and "--batch" in usage.stderr


def test_sparsekit_depends_on_the_engine_distribution():
    """sparsekit carries no second copy: its engine is the sparsekit-engine distribution's module."""
    import sparsekit_engine

    import sparsekit.engine

    assert sparsekit.engine is sparsekit_engine
    requires = importlib.metadata.requires("sparsekit") or []
    assert any(r.replace(" ", "").startswith("sparsekit-engine") for r in requires)
    assert not (ROOT / "sparsekit" / "engine" / "planner.py").exists()
