"""Typed exceptions. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations


class SparsekitError(Exception):
    """A failure the user can act on (exit code 1)."""

    exit_code = 1


class UsageError(SparsekitError):
    """Bad input from the user: unknown name, value out of range, bad path (exit code 2)."""

    exit_code = 2


class DataNotFoundError(SparsekitError):
    """A dataset is not on disk where we looked (exit code 1)."""


class TrainingDivergedError(SparsekitError):
    """The loss became NaN or infinite (exit code 1)."""


class VerificationError(SparsekitError):
    """An exported or converted model does not compute the same function as the masked-dense one."""


class ArtifactError(SparsekitError):
    """A run directory or model file is missing, incomplete or corrupt."""


class LayerCollapseError(SparsekitError):
    """A mask keeps no weight of some prunable layer: the network is disconnected (exit code 1)."""
