"""Exceptions of the sparse-cpu engine (all one-line messages, all SparsekitError subclasses)."""

from __future__ import annotations

from sparsekit.errors import ArtifactError, SparsekitError, VerificationError


class EngineError(SparsekitError):
    """Base class of sparse-cpu failures (exit code 1)."""


class EngineUnsupported(EngineError):
    """The graph uses an op (or an op configuration) that sparse-cpu does not implement."""


class EngineInputError(EngineError, ValueError):
    """``Session.run`` got an input of the wrong rank, shape or dtype."""


class EngineVerifyError(VerificationError):
    """The engine's outputs differ from ONNX Runtime's on the verification batch."""


class EngineLoadError(ArtifactError):
    """The model file is missing, unreadable, or not a valid ONNX model."""


class EngineBuildError(EngineError):
    """The native extension is not built/importable (reinstall: ``pip install -e .``)."""


def unsupported(op: str, node: str, detail: str = "") -> EngineUnsupported:
    extra = f" ({detail})" if detail else ""
    return EngineUnsupported(
        f"op '{op}' (node '{node}') is not supported by sparse-cpu{extra}; use --runtime ort-cpu"
    )
