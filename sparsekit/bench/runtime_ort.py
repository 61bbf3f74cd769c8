"""ONNX Runtime on an ONNX file: the ``ort-cpu`` / ``ort-cuda`` runtimes' loader.

Every ONNX-file runtime module (``runtime_*.py``) has the same interface: ``load(onnx_path, threads,
**options) -> callable(x) -> y`` (float32 NumPy in, NumPy out), ``empty(threads, identity_onnx,
**options)`` (the library loaded and, where the runtime can, an Identity graph: the memory baseline)
and ``version()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def session(model: str | bytes, threads: int, provider: str = "CPUExecutionProvider") -> Any:
    """An InferenceSession with ``threads`` intra-op threads, sequential, quiet."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=[provider])


def load(onnx_path: str, threads: int, provider: str = "CPUExecutionProvider") -> Callable[[np.ndarray], np.ndarray]:
    sess = session(onnx_path, threads, provider)
    name = sess.get_inputs()[0].name
    out = [sess.get_outputs()[0].name]
    return lambda x: sess.run(out, {name: x})[0]


def empty(threads: int, identity_onnx: str, provider: str = "CPUExecutionProvider") -> Callable[[np.ndarray], np.ndarray]:
    return load(identity_onnx, threads, provider)


def version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        return None
