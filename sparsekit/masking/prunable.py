"""Which tensors are prunable: Conv/Linear weights selected by FQN include/exclude patterns."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from torch import nn

from sparsekit.errors import UsageError

PRUNABLE_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class PrunePolicy:
    """Selects prunable tensors by fully qualified name (FQN, e.g. ``layer1.0.conv1.weight``).

    Attributes:
        include: fnmatch patterns; a weight is prunable only if it matches one (default: all).
        exclude: fnmatch patterns removed after ``include``.
    """

    include: tuple[str, ...] = field(default=("*",), metadata={"help": "FQN patterns to prune"})
    exclude: tuple[str, ...] = field(default=(), metadata={"help": "FQN patterns never pruned"})

    def selects(self, fqn: str) -> bool:
        inc = any(fnmatch.fnmatchcase(fqn, p) for p in self.include)
        exc = any(fnmatch.fnmatchcase(fqn, p) for p in self.exclude)
        return inc and not exc

    def to_dict(self) -> dict:
        return {"include": list(self.include), "exclude": list(self.exclude)}

    @classmethod
    def from_dict(cls, d: dict | None) -> PrunePolicy:
        d = d or {}
        return cls(tuple(d.get("include", ("*",))), tuple(d.get("exclude", ())))


def unprunable_weights(model: nn.Module) -> dict[str, int]:
    """Matrix weights the pruner leaves dense because they are not Conv/Linear weights, e.g. the
    fused q/k/v projection of ``nn.MultiheadAttention`` (``in_proj_weight``): {FQN: numel}."""
    out = {}
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.MultiheadAttention):
            for pname in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                w = getattr(mod, pname, None)
                if w is not None:
                    out[f"{mod_name}.{pname}" if mod_name else pname] = w.numel()
    return out


def prunable_tensors(model: nn.Module, policy: PrunePolicy | None = None) -> dict[str, nn.Parameter]:
    """Return {FQN: weight} for every Conv/Linear weight the policy selects, in module order.

    Raises:
        UsageError: if nothing is prunable.
    """
    policy = policy or PrunePolicy()
    out: dict[str, nn.Parameter] = {}
    for mod_name, mod in model.named_modules():
        if isinstance(mod, PRUNABLE_MODULES) and getattr(mod, "weight", None) is not None:
            fqn = f"{mod_name}.weight" if mod_name else "weight"
            if policy.selects(fqn):
                out[fqn] = mod.weight
    if not out:
        raise UsageError(
            "model has no prunable tensor (Conv/Linear weights matching include="
            f"{list(policy.include)} exclude={list(policy.exclude)})"
        )
    return out
