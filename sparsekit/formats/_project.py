"""Shared helper of pattern formats (nm, block): project a mask onto a pattern, count what changed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sparsekit.formats.base import Converted, check_equal
from sparsekit.mask import Mask

#: a projected model only re-zeroes weights, so it equals masked-dense(projected mask) exactly
PATTERN_ATOL = 1e-6


def project(
    model: nn.Module,
    mask: Mask,
    example: torch.Tensor,
    project_layer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None],
    validate_layer: Callable[[torch.Tensor], bool],
    what: str,
) -> Converted:
    """Apply ``project_layer(weight, keep) -> new keep (None = layer not eligible)`` to every layer."""
    out = copy.deepcopy(model).eval()
    mask.apply(out)
    params = dict(out.named_parameters())
    new: dict[str, torch.Tensor] = {}
    layers: list[dict[str, Any]] = []
    for name, keep in mask.items():
        w = params[name].detach()
        proj = project_layer(w, keep)
        if proj is None:
            new[name] = keep.clone()
            layers.append({"name": name, "eligible": False, "changed": 0})
            continue
        changed = int((keep & ~proj & (w != 0)).sum())  # non-zero weights the projection removed
        new[name] = proj
        layers.append({
            "name": name, "eligible": True, "changed": changed,
            "sparsity_before": 1 - float(keep.float().mean()), "sparsity_after": 1 - float(proj.float().mean()),
        })
    new_mask = Mask(new)
    new_mask.apply(out)
    for row in layers:
        if row["eligible"] and not validate_layer(params[row["name"]].detach()):
            raise AssertionError(f"{what}: projected {row['name']} violates the pattern")  # a bug, not user error
    converted = Converted(out, new_mask, new_mask)
    diff = check_equal(converted, model, example, PATTERN_ATOL, f"{what} conversion")
    converted.report = {
        "layers": layers,
        "weights_changed": sum(r["changed"] for r in layers),
        "sparsity_before": mask.sparsity,
        "sparsity_after": new_mask.sparsity,
        "pattern_valid": True,
        "max_abs_diff": diff,
        "atol": PATTERN_ATOL,
    }
    return converted


class PatternState:
    """Mixin: pattern formats store the projected mask next to the weights."""

    def save_state(self, converted: Converted) -> dict[str, torch.Tensor]:
        state = {k: v.detach().clone() for k, v in converted.module.state_dict().items()}
        state.update({f"__mask__.{n}": t for n, t in converted.mask.items()})
        return state

    def load_state(self, module: nn.Module, state: dict[str, torch.Tensor], plan: dict[str, Any]) -> nn.Module:
        module.load_state_dict({k: v for k, v in state.items() if not k.startswith("__mask__.")})
        return module.eval()
