"""Typed exceptions. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations

# the root of the tree and the two kinds the engine raises live in the engine distribution (it installs
# without sparsekit); re-exported here so every sparsekit error is one tree
from sparsekit_engine.errors import ArtifactError, SparsekitError, VerificationError

__all__ = [
    "ArtifactError", "DataNotFoundError", "LayerCollapseError", "SettingError", "SparsekitError",
    "TrainingDivergedError", "UsageError", "VerificationError",
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


class SettingError(UsageError):
    """A bad value of named settings (config fields), phrased in their names, not in CLI flags.

    ``template`` writes each setting as ``{name}``: ``str(exc)`` shows the names (``sparsity must be in
    [0, 1), got 1.5``), and the CLI renders the same template with each setting's flag
    (``--sparsity must be in [0, 1), got 1.5``). Braces that are not a listed setting stay as they are.
    """

    def __init__(self, template: str, *settings: str) -> None:
        self.template, self.settings = template, settings
        super().__init__(self.render(lambda name: name))

    def render(self, spell) -> str:  # noqa: ANN001  (spell: setting name -> how to write it)
        import re

        return re.sub(r"\{(\w+)\}", lambda m: spell(m[1]) if m[1] in self.settings else m[0], self.template)
