"""Runtimes: what executes a model in ``sparsekit bench``.

Adding a runtime = one ``RUNTIMES.register`` line here (plus, for a new engine, a branch in
``worker.py``). CUDA runtimes are skipped with a reason when CUDA is absent and they came from the
default list; asking for one explicitly without CUDA is a usage error.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sparsekit.registry import Registry

RUNTIMES: Registry = Registry("runtime")


@dataclass(frozen=True)
class Runtime:
    """An execution engine on a device.

    Attributes:
        name: registry name.
        engine: "torch" (eager module rebuilt from a run), "ort" (ONNX Runtime on a .onnx file) or
            "sparse-cpu" (sparsekit.engine on the same .onnx file).
        device: "cpu" or "cuda".
        sparse: how a ticket's sparsity is executed: "masked" (dense kernels on zeros), "csr", or
            "engine" (sparsekit's native engine picks sparse or dense kernels per layer).
        dense_runtime: the runtime whose dense model this one's tickets are compared with when both
            are benched (torch-csr's dense model IS torch-cpu's: measured once, under that name).
    """

    name: str
    engine: str
    device: str
    sparse: str = "masked"
    dense_runtime: str | None = None

    def unavailable_reason(self) -> str | None:
        """None when this runtime can run on this machine, else why not."""
        if self.engine == "sparse-cpu":
            return _engine_missing()
        if self.device == "cuda":
            if self.engine == "torch" and not _torch_cuda():
                return "CUDA is not available to torch on this machine"
            if self.engine == "ort" and "CUDAExecutionProvider" not in _ort_providers():
                return "onnxruntime has no CUDAExecutionProvider on this machine (install onnxruntime-gpu and CUDA)"
        return None

    @property
    def ort_provider(self) -> str:
        return "CUDAExecutionProvider" if self.device == "cuda" else "CPUExecutionProvider"


@lru_cache(maxsize=1)
def _torch_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@lru_cache(maxsize=1)
def _ort_providers() -> tuple[str, ...]:
    import onnxruntime

    providers = tuple(onnxruntime.get_available_providers())
    if "CUDAExecutionProvider" in providers and not _torch_cuda():
        return tuple(p for p in providers if p != "CUDAExecutionProvider")  # no GPU behind it
    return providers


@lru_cache(maxsize=1)
def _engine_missing() -> str | None:
    import importlib.util

    if importlib.util.find_spec("sparsekit.engine._native") is None:
        return "the sparse-cpu native library is not built (reinstall sparsekit: pip install -e .)"
    return None


def _add(rt: Runtime, help: str) -> None:
    RUNTIMES.register(rt.name, help=help)(rt)


_add(Runtime("torch-cpu", "torch", "cpu"), "PyTorch eager on CPU (masked-dense or structured weights)")
_add(Runtime("torch-csr", "torch", "cpu", sparse="csr", dense_runtime="torch-cpu"),
     "PyTorch eager on CPU, sparse Linear layers as CSR with int32 indices")
_add(Runtime("ort-cpu", "ort", "cpu"), "ONNX Runtime CPU execution provider")
_add(Runtime("sparse-cpu", "sparse-cpu", "cpu", sparse="engine"),
     "sparsekit's native engine on the exported ONNX file: sparse or dense kernels per layer, timed at load")
_add(Runtime("torch-cuda", "torch", "cuda"), "PyTorch eager on CUDA")
_add(Runtime("ort-cuda", "ort", "cuda"), "ONNX Runtime CUDA execution provider")

#: what ``sparsekit bench`` measures when --runtime is not given (CUDA ones skipped without CUDA)
DEFAULT_RUNTIMES = ("torch-cpu", "ort-cpu", "sparse-cpu", "torch-cuda", "ort-cuda")
