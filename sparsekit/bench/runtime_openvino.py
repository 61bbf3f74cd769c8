"""OpenVINO on CPU (``openvino-cpu``): the exported ONNX file as is, dense kernels.

Compiled with the LATENCY performance hint, one stream, ``threads`` inference threads, no core
pinning, and the inference precision pinned to f32: on CPUs with AVX-512 BF16/AMX or ARM fp16
OpenVINO otherwise picks bf16/f16 by itself, which is faster but not the same model. Installed by ``pip install
sparsekit[openvino]``; the interface is ``runtime_ort``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def compile_config(threads: int) -> dict[str, Any]:
    """Compile options: a latency measurement of the f32 model on ``threads`` threads."""
    # no core pinning: like ORT's and torch's threads, OpenVINO's float (pinned to a core another
    # process was busy on, resnet20 ran 1.3-1.6x slower on a shared 2-core machine, 2026-12-03)
    return {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}


def load(onnx_path: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(onnx_path), "CPU", compile_config(threads))
    precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    if "f32" not in precision and "float32" not in precision:  # never time a silently reduced model
        raise RuntimeError(f"OpenVINO compiled the model at {precision}, not f32")
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        # the result is a view of the request's buffer, overwritten by the next call: copy it
        return np.array(request.infer({0: x})[0], copy=True)

    return run


def empty(threads: int, identity_onnx: str) -> Callable[[np.ndarray], np.ndarray]:
    """OpenVINO's CPU plugin loaded with a one-op model (it cannot compile the dynamic-rank Identity)."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([-1], np.float32)
    compiled = ov.Core().compile_model(ov.Model([ops.relu(x)], [x]), "CPU", compile_config(threads))
    request = compiled.create_infer_request()
    request.infer({0: np.zeros(4, np.float32)})
    return lambda x: x


def version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return None
