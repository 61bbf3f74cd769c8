"""Exceptions of the sparse-cpu engine (all one-line messages, all SparsekitError subclasses).

The root of sparsekit's error tree (``SparsekitError`` and the two kinds the engine raises) lives here, in
the lowest distribution, so that the engine installs without sparsekit and ``sparsekit.errors`` re-exports
the same classes: ``except sparsekit.errors.VerificationError`` catches the engine's verify failure.
"""

from __future__ import annotations


class SparsekitError(Exception):
    """A failure the user can act on (exit code 1)."""

    exit_code = 1


class VerificationError(SparsekitError):
    """An exported or converted model does not compute the same function as the masked-dense one."""


class ArtifactError(SparsekitError):
    """A run directory or model file is missing, incomplete or corrupt."""


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
    """The native extension is not built/importable (reinstall: ``pip install -e engine``)."""


def unsupported(op: str, node: str, detail: str = "") -> EngineUnsupported:
    extra = f" ({detail})" if detail else ""
    return EngineUnsupported(
        f"op '{op}' (node '{node}') is not supported by sparse-cpu{extra}; use --runtime ort-cpu"
    )
