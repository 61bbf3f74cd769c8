"""MNN on CPU: ``mnn-cpu`` (dense kernels) and ``mnn-sparse`` (MNN's own sparse kernels).

MNN runs its own model format, so the ONNX file is converted first, with ``--weightQuantBits 0``
(float weights: MNN's docs suggest 8-bit weights, which run dense) and, for ``mnn-sparse``,
``--detectSparseSpeedUp`` (the converter stores sparse weights where MNN's sparse kernels pay; without
it MNN never uses them). The converted file is cached next to the ONNX file, named by the ONNX file's
SHA-256, the MNN version and the mode, and is only put there after its output matched ONNX Runtime's
on a seeded input within PARITY_RTOL / PARITY_ATOL. Sessions run at MNN's "high" precision (f32; on
ARM "normal" may pick fp16). Installed by ``pip install sparsekit[mnn]``.

The converter runs in a child process through MNN's native ``_tools`` module: it prints, may abort on
a graph it cannot read, and MNN's Python wrapper ``MNN.tools`` must never be imported (it pip-installs
a logging SDK and sends usage logs). A graph MNN cannot convert raises one SparsekitError line.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from sparsekit.errors import SparsekitError, VerificationError

#: converted output vs ONNX Runtime: |mnn - ort| <= PARITY_ATOL * max(1, max|ort|) + PARITY_RTOL * |ort|
PARITY_RTOL = 1e-3
PARITY_ATOL = 1e-4
#: batch of the seeded parity input when the ONNX batch dimension is dynamic
PARITY_BATCH = 2
CONVERT_TIMEOUT_S = 600
_CONVERTER = "import sys, _tools; _tools.mnnconvert(sys.argv)"


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """MNN's native code prints (device features, precision) on fd 1: library code never prints."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("mnn")
    except metadata.PackageNotFoundError:
        return None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_path(onnx_path: str | Path, sparse: bool) -> Path:
    """Where the converted model of ``onnx_path`` lives: next to it, keyed by its content."""
    p = Path(onnx_path)
    mode = "sparse" if sparse else "dense"
    name = f"{p.name}.{file_sha256(p)[:16]}.mnn{version()}.{mode}.mnn"
    if os.access(p.parent, os.W_OK):
        return p.parent / name
    return Path(tempfile.gettempdir()) / "sparsekit-mnn" / name  # a read-only model directory


def convert_args(onnx_path: str | Path, out: str | Path, sparse: bool) -> list[str]:
    args = ["-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(out), "--bizCode", "sparsekit",
            "--weightQuantBits", "0"]
    return args + (["--detectSparseSpeedUp"] if sparse else [])


def _failure_line(log: str) -> str:
    """The converter's own reason, one line (its log has timestamps and banners)."""
    for line in log.splitlines():
        if re.search(r"Not Support|\[ERROR\]|Check failed|Error", line):
            return re.sub(r"^\[[\d:]+\]\s*:\d+:\s*", "", line).strip()
    tail = [ln.strip() for ln in log.splitlines() if ln.strip()]
    return tail[-1] if tail else "no output"


def _convert(onnx_path: Path, out: Path, sparse: bool) -> None:
    try:
        proc = subprocess.run([sys.executable, "-c", _CONVERTER, *convert_args(onnx_path, out, sparse)],
                              capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SparsekitError(f"MNN's converter did not finish {onnx_path.name} in {CONVERT_TIMEOUT_S} s") from None
    log = (proc.stdout or "") + (proc.stderr or "")
    if "Converted Success" not in log or not out.is_file() or out.stat().st_size == 0:
        raise SparsekitError(f"MNN cannot convert {onnx_path.name}: {_failure_line(log)}")


def converted(onnx_path: str | Path, sparse: bool) -> str:
    """Path of the verified MNN model of ``onnx_path`` (converted and checked once, then cached)."""
    src = Path(onnx_path)
    if not src.is_file():
        raise SparsekitError(f"ONNX file not found: {src}")
    dst = cache_path(src, sparse)
    if dst.is_file():
        return str(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _convert(src, tmp, sparse)
        try:
            verify(src, tmp, sparse)
        except (RuntimeError, ValueError, TypeError) as exc:  # MNN's own errors: one line, no traceback
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SparsekitError(f"MNN cannot run its conversion of {src.name}: {msg}") from None
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return str(dst)


def parity_input(onnx_path: str | Path) -> np.ndarray:
    """A seeded float32 input of the ONNX file's input shape (dynamic batch -> PARITY_BATCH)."""
    from sparsekit.bench.runtime_ort import session

    shape = session(str(onnx_path), 1).get_inputs()[0].shape
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if any(d is None for d in dims[1:]):
        raise SparsekitError(f"{Path(onnx_path).name}: only the batch dimension may be dynamic, got {shape}")
    dims[0] = dims[0] or PARITY_BATCH
    return np.random.default_rng(0).standard_normal(dims).astype(np.float32)


def verify(onnx_path: Path, mnn_path: Path, sparse: bool) -> float:
    """Max abs difference of MNN's output vs ONNX Runtime's; VerificationError beyond the tolerance."""
    from sparsekit.bench.runtime_ort import load as ort_load

    x = parity_input(onnx_path)
    ref = np.asarray(ort_load(str(onnx_path), 1)(x), dtype=np.float64)
    got = np.asarray(_module_runner(str(mnn_path), 1)(x), dtype=np.float64)
    if got.shape != ref.shape:
        raise VerificationError(f"MNN ({'sparse' if sparse else 'dense'}) output shape {got.shape} differs from "
                                f"ONNX Runtime's {ref.shape} on {onnx_path.name}")
    diff = np.abs(got - ref)
    bound = PARITY_ATOL * max(1.0, float(np.abs(ref).max())) + PARITY_RTOL * np.abs(ref)
    if not np.all(diff <= bound):
        raise VerificationError(f"MNN ({'sparse' if sparse else 'dense'}) output differs from ONNX Runtime's by "
                                f"{diff.max():.3g} on {onnx_path.name} (tolerance rtol {PARITY_RTOL}, atol "
                                f"{PARITY_ATOL} x max|y|)")
    return float(diff.max())


def _module_runner(mnn_path: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    with _quiet_stdout():
        import MNN.expr as F
        import MNN.nn as nn

        manager = nn.create_runtime_manager(({"backend": "CPU", "numThread": threads, "precision": "high"},))
        module = nn.load_module_from_file(mnn_path, [], [], runtime_manager=manager)

    def run(x: np.ndarray) -> np.ndarray:
        y = module.forward([F.const(x, list(x.shape), F.NCHW)])
        y = y[0] if isinstance(y, (list, tuple)) else y
        if y.data_format == F.NC4HW4:
            y = F.convert(y, F.NCHW)
        return np.array(y.read(), copy=True)

    return run


def load(onnx_path: str, threads: int, sparse: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """MNN's runner of ``onnx_path`` (converted and verified on first use, then from the cache)."""
    return _module_runner(converted(onnx_path, sparse), threads)


def prepare(onnx_path: str, sparse: bool = False) -> dict[str, object]:
    """Convert (and verify) before any timing process starts; what the deployed file weighs."""
    path = converted(onnx_path, sparse)
    return {"deployed_file": path, "file_bytes": os.path.getsize(path)}


def empty(threads: int, identity_onnx: str, sparse: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """MNN loaded with a CPU runtime, no model."""
    with _quiet_stdout():
        import MNN.nn as nn

        nn.create_runtime_manager(({"backend": "CPU", "numThread": threads, "precision": "high"},))
    return lambda x: x
