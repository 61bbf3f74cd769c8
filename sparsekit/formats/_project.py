"""Shared helper of pattern formats (nm, block): project a mask onto a pattern, count what changed.

Semantics (both formats): the projected mask is a valid pattern over the ORIGINAL architecture; the
weights the ticket kept are ranked by magnitude and the pattern keeps the largest ones it can, at
the ticket's density where the pattern allows it (N:M caps it at N/M). A pattern slot the ticket had
masked may be part of the new mask (a kept 4x4 block keeps all 16 slots; a 2:4 group with one
survivor may get a second): such a "revived" slot holds exactly 0 until the converted
model is fine-tuned with the new mask held (``convert --finetune-epochs N``). So the projected model
computes masked-dense(projected mask) exactly, and the report says, per layer, the mask density
before/after, the non-zero density after, and how many of the ticket's surviving weights (and what
share of their magnitude) the pattern kept. Layers a format cannot pattern (e.g. an input width
that is not a multiple of M) are left as they are and listed with the reason; ``pattern_valid``
covers the patterned layers only and the report says which those are.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sparsekit.binary_mask import Mask
from sparsekit.formats.base import Converted, check_equal

#: a projected model only re-zeroes weights, so it equals masked-dense(projected mask) exactly
PATTERN_ATOL = 1e-6

#: project_layer(weight, keep) -> new keep, or a str: the reason the layer cannot be patterned
ProjectFn = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | str"]
#: validate_layer(name, weight, new keep) -> whether weight and keep follow the pattern
ValidateFn = Callable[[str, torch.Tensor, torch.Tensor], bool]


def project(model: nn.Module, mask: Mask, example: torch.Tensor, project_layer: ProjectFn,
            validate_layer: ValidateFn, what: str) -> Converted:
    """Apply ``project_layer`` to every masked layer and report what the projection kept."""
    out = copy.deepcopy(model).eval()
    mask.apply(out)
    params = dict(out.named_parameters())
    new: dict[str, torch.Tensor] = {}
    layers: list[dict[str, Any]] = []
    for name, keep in mask.items():
        w = params[name].detach()
        alive = keep & (w != 0)  # the ticket's surviving (non-zero) weights
        proj = project_layer(w, keep)
        row: dict[str, Any] = {"name": name, "numel": keep.numel(), "density_before": float(keep.float().mean()),
                               "nonzero_before": int(alive.sum())}
        if isinstance(proj, str):
            new[name] = keep.clone()
            row.update(eligible=False, skipped=proj, changed=0, density_after=row["density_before"],
                       nonzero_after=row["nonzero_before"])
            layers.append(row)
            continue
        kept_alive = alive & proj
        mag = float(w[alive].abs().sum())
        row.update(
            eligible=True,
            changed=int((alive & ~proj).sum()),  # surviving weights the projection removed
            density_after=float(proj.float().mean()),
            nonzero_after=int(kept_alive.sum()),
            revived=int((proj & ~keep).sum()),  # slots now in the mask, holding 0 until fine-tuned
            survivors_kept=int(kept_alive.sum()) / max(1, int(alive.sum())),
            magnitude_kept=float(w[kept_alive].abs().sum()) / mag if mag > 0 else 1.0,
        )
        new[name] = proj
        layers.append(row)
    new_mask = Mask(new)
    new_mask.apply(out)
    for row in layers:
        if row["eligible"]:
            row["pattern_valid"] = bool(validate_layer(row["name"], params[row["name"]].detach(), new[row["name"]]))
            if not row["pattern_valid"]:
                raise AssertionError(f"{what}: projected {row['name']} violates the pattern")  # a bug, not user error
    converted = Converted(out, new_mask, new_mask)
    diff = check_equal(converted, model, example, PATTERN_ATOL, f"{what} conversion")
    total = sum(r["numel"] for r in layers)
    nz_before = sum(r["nonzero_before"] for r in layers)
    nz_after = sum(r["nonzero_after"] for r in layers)
    skipped = [{"name": r["name"], "reason": r["skipped"]} for r in layers if not r["eligible"]]
    converted.report = {
        "pattern": what,
        "layers": layers,
        "weights_changed": sum(r["changed"] for r in layers),
        "density_before": 1 - mask.sparsity,
        "density_after": 1 - new_mask.sparsity,
        "nonzero_density_before": nz_before / max(1, total),
        "nonzero_density_after": nz_after / max(1, total),
        "survivors_kept": nz_after / max(1, nz_before),
        "sparsity_before": mask.sparsity,
        "sparsity_after": new_mask.sparsity,
        # True only for the layers that were patterned; skipped_layers names the others
        "pattern_valid": all(r["pattern_valid"] for r in layers if r["eligible"]) and any(r["eligible"] for r in layers),
        "patterned_layers": [r["name"] for r in layers if r["eligible"]],
        "skipped_layers": skipped,
        "max_abs_diff": diff,
        "atol": PATTERN_ATOL,
    }
    return converted


def ranked_keep(score: torch.Tensor, k: torch.Tensor | int, dim: int = -1) -> torch.Tensor:
    """Boolean tensor keeping the ``k`` highest ``score`` entries along ``dim``; ties by position
    (a stable sort, so the result is deterministic)."""
    order = torch.sort(score, dim=dim, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(dim, order, torch.arange(score.shape[dim]).expand_as(order).contiguous())
    return rank < k


class PatternState:
    """Mixin: pattern formats store the projected mask next to the weights."""

    def save_state(self, converted: Converted) -> dict[str, torch.Tensor]:
        state = {k: v.detach().clone() for k, v in converted.module.state_dict().items()}
        state.update({f"__mask__.{n}": t for n, t in converted.mask.items()})
        return state

    def load_state(self, module: nn.Module, state: dict[str, torch.Tensor], plan: dict[str, Any]) -> nn.Module:
        module.load_state_dict({k: v for k, v in state.items() if not k.startswith("__mask__.")})
        return module.eval()
