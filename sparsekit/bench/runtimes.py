"""Runtimes: what executes a model in ``sparsekit bench``.

Adding a runtime that runs an ONNX file = one module ``sparsekit/bench/runtime_<name>.py`` with
``load(onnx_path, threads, **options) -> callable(x)``, ``empty(threads)`` and ``version()`` (see
``runtime_ort``), plus one registration line here naming it. CUDA runtimes are skipped with a reason
when CUDA is absent and they came from the default list, optional ones (``pip install
sparsekit[openvino]`` / ``[mnn]``) when not installed; asking for one explicitly is then a usage error.

``dense_runtimes()`` gives other code (the engine benchmark, latency budgets) the installed dense
CPU runtimes with one ``load(onnx_path, threads) -> callable(x)`` each.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from sparsekit.registry import Registry

if TYPE_CHECKING:  # numpy is not imported by `sparsekit list`
    import numpy as np

RUNTIMES: Registry = Registry("runtime")


@dataclass(frozen=True)
class Runtime:
    """An execution engine on a device.

    Attributes:
        name: registry name.
        engine: "torch" (eager module rebuilt from a run), "sparse-cpu" (sparsekit.engine on the
            .onnx file), or an ONNX-file runtime ("ort", "openvino", "mnn"): runtimes of one engine share
            timing processes (their dense and ticket variants interleave), different engines never do.
        device: "cpu" or "cuda".
        sparse: how a ticket's sparsity is executed: "masked" (dense kernels on zeros), "csr",
            "engine" (sparsekit's native engine picks sparse or dense kernels per layer) or "mnn" (MNN's
            converter stores sparse weights for the layers where it predicts its sparse kernels pay).
        dense_runtime: the runtime whose dense model this one's tickets are compared with when both
            are benched (torch-csr's dense model IS torch-cpu's: measured once, under that name).
        module: the ``runtime_*`` module that loads an ONNX file for this runtime (None: torch,
            sparse-cpu, which the worker runs itself).
        options: keyword arguments of the module's ``load`` (and ``prepare``), as (name, value) pairs.
        requires: the importable package this runtime needs; extra: the pip extra that installs it.
    """

    name: str
    engine: str
    device: str
    sparse: str = "masked"
    dense_runtime: str | None = None
    module: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    requires: str | None = None
    extra: str | None = None

    def unavailable_reason(self) -> str | None:
        """None when this runtime can run on this machine, else why not."""
        if self.engine == "sparse-cpu":
            return _engine_missing()
        if self.requires and not _installed(self.requires):
            return f"{self.requires} is not installed (pip install 'sparsekit[{self.extra}]')"
        if self.device == "cuda":
            if self.engine == "torch" and not _torch_cuda():
                return "CUDA is not available to torch on this machine"
            if self.engine == "ort" and "CUDAExecutionProvider" not in _ort_providers():
                return "onnxruntime has no CUDAExecutionProvider on this machine (install onnxruntime-gpu and CUDA)"
        return None

    @property
    def ort_provider(self) -> str:
        return "CUDAExecutionProvider" if self.device == "cuda" else "CPUExecutionProvider"


    def install_status(self) -> str | None:
        """"installed" / "not installed: how" for a runtime of an optional extra, None for the others;
        cheap (a find_spec, no import: ``sparsekit list runtimes`` stays instant)."""
        if self.requires is None:
            return None
        reason = self.unavailable_reason()
        return "installed" if reason is None else f"not installed: {reason}"

    def loader(self) -> Any:
        """The ``runtime_*`` module of an ONNX-file runtime (imports nothing heavy itself)."""
        if self.module is None:
            raise ValueError(f"{self.name} does not run ONNX files through a runtime module")
        return importlib.import_module(self.module)

    def load(self, onnx_path: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
        """``callable(x) -> y`` running ``onnx_path`` on this runtime with ``threads`` threads."""
        return self.loader().load(onnx_path, threads, **dict(self.options))

    def version(self) -> str | None:
        return self.loader().version() if self.module else None


@cache
def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


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
    if importlib.util.find_spec("sparsekit.engine._native") is None:
        return "the sparse-cpu native library is not built (reinstall sparsekit: pip install -e .)"
    return None


def _add(rt: Runtime, help: str) -> None:
    RUNTIMES.register(rt.name, help=help)(rt)


_add(Runtime("torch-cpu", "torch", "cpu"), "PyTorch eager on CPU (masked-dense or structured weights)")
_add(Runtime("torch-csr", "torch", "cpu", sparse="csr", dense_runtime="torch-cpu"),
     "PyTorch eager on CPU, sparse Linear layers as CSR with int32 indices")
_ORT = "sparsekit.bench.runtime_ort"
_add(Runtime("ort-cpu", "ort", "cpu", module=_ORT, options=(("provider", "CPUExecutionProvider"),)),
     "ONNX Runtime CPU execution provider")
_add(Runtime("sparse-cpu", "sparse-cpu", "cpu", sparse="engine"),
     "sparsekit's native engine on the exported ONNX file: sparse or dense kernels per layer, timed at load")
_add(Runtime("torch-cuda", "torch", "cuda"), "PyTorch eager on CUDA")
_add(Runtime("ort-cuda", "ort", "cuda", module=_ORT, options=(("provider", "CUDAExecutionProvider"),)),
     "ONNX Runtime CUDA execution provider")
_add(Runtime("openvino-cpu", "openvino", "cpu", module="sparsekit.bench.runtime_openvino", requires="openvino",
             extra="openvino"),
     "OpenVINO CPU on the ONNX file: dense, f32 pinned, latency hint (pip install sparsekit[openvino])")
_add(Runtime("mnn-cpu", "mnn", "cpu", module="sparsekit.bench.runtime_mnn", options=(("sparse", False),),
             requires="MNN", extra="mnn"),
     "MNN CPU, converted from the ONNX file with float weights: dense kernels (pip install sparsekit[mnn])")
_add(Runtime("mnn-sparse", "mnn", "cpu", sparse="mnn", dense_runtime="mnn-cpu", module="sparsekit.bench.runtime_mnn",
             options=(("sparse", True),), requires="MNN", extra="mnn"),
     "MNN CPU converted with sparse detection (no weight quantization): MNN's sparse kernels where they pay")

#: what ``sparsekit bench`` measures when --runtime is not given (CUDA and optional ones skipped when absent)
DEFAULT_RUNTIMES = ("torch-cpu", "ort-cpu", "openvino-cpu", "mnn-cpu", "mnn-sparse", "sparse-cpu", "torch-cuda",
                    "ort-cuda")
#: dense CPU runtimes of ONNX files, in the order ``dense_runtimes`` lists them
DENSE_ONNX_RUNTIMES = ("ort-cpu", "openvino-cpu", "mnn-cpu")


def dense_runtimes(names: tuple[str, ...] = DENSE_ONNX_RUNTIMES) -> dict[str, Runtime]:
    """The installed dense CPU runtimes of ``names``: ``{name: rt}`` with ``rt.load(onnx_path, threads)``
    returning ``callable(x: float32 ndarray) -> ndarray`` and ``rt.version()``.

    Example:
        >>> run = dense_runtimes()["ort-cpu"].load("model.onnx", threads=1)  # doctest: +SKIP
        >>> y = run(x)  # doctest: +SKIP
    """
    out = {}
    for name in names:
        rt = RUNTIMES.get(name)
        if rt.module is not None and rt.device == "cpu" and rt.unavailable_reason() is None:
            out[name] = rt
    return out
