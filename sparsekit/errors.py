"""Typed exceptions. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations

# the root of the tree and the two kinds the engine raises live in the engine distribution (it installs
# without sparsekit); re-exported here so every sparsekit error is one tree
from sparsekit_engine.errors import ArtifactError, SparsekitError, VerificationError

__all__ = [
    "ArtifactError", "DataNotFoundError", "LayerCollapseError", "SparsekitError", "TrainingDivergedError",
    "UsageError", "VerificationError",
]


class UsageError(SparsekitError):
    """Bad input from the user: unknown name, value out of range, bad path (exit code 2)."""

    exit_code = 2


class DataNotFoundError(SparsekitError):
    """A dataset is not on disk where we looked (exit code 1)."""


class TrainingDivergedError(SparsekitError):
    """The loss became NaN or infinite (exit code 1)."""


class LayerCollapseError(SparsekitError):
    """A mask keeps no weight of some prunable layer: the network is disconnected (exit code 1)."""
