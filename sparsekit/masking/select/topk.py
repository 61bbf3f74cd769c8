"""Exact top-k selection: exactly ``budget_keep(d, s)`` survivors, deterministic tie-break.

Ties are broken by position (lower flat index wins) by sorting (score, -index) with a stable sort,
so ``kthvalue`` + ``>=`` off-by-one errors cannot happen.
"""

from __future__ import annotations

import torch

from sparsekit.errors import UsageError


def budget_keep(numel: int, sparsity: float) -> int:
    """Number of weights kept: numel - round(sparsity * numel)."""
    if not 0.0 <= sparsity < 1.0:
        raise UsageError(f"sparsity must be in [0, 1), got {sparsity}")
    return numel - int(round(sparsity * numel))


def _topk_flat(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool vector with exactly k True at the largest scores; ties -> lower index first."""
    flat = scores.detach().reshape(-1).to(torch.float64)
    if torch.isnan(flat).any():
        raise UsageError("scores contain NaN; cannot select a mask")
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    if k <= 0:
        return keep
    # stable descending sort keeps the original (index) order among equal scores
    order = torch.sort(flat.cpu(), descending=True, stable=True).indices
    keep[order[:k]] = True
    return keep


def topk_mask(
    scores: dict[str, torch.Tensor], sparsity: float, layerwise: bool = False
) -> dict[str, torch.Tensor]:
    """Exact global (or per-layer) top-k of scores -> {FQN: bool mask}.

    Global: one ranking over the concatenation of all tensors (in dict order), exactly
    ``budget_keep(d, sparsity)`` survivors. Layerwise: each tensor keeps ``budget_keep(d_l, sparsity)``.

    Example:
        >>> m = topk_mask({"w": torch.tensor([3.0, 1.0, 2.0, 0.0])}, 0.5)
        >>> m["w"].tolist()
        [True, False, True, False]
    """
    if layerwise:
        return {
            name: _topk_flat(s, budget_keep(s.numel(), sparsity)).reshape(s.shape)
            for name, s in scores.items()
        }
    flat = torch.cat([s.detach().reshape(-1).cpu().to(torch.float64) for s in scores.values()])
    keep = _topk_flat(flat, budget_keep(flat.numel(), sparsity))
    out, offset = {}, 0
    for name, s in scores.items():
        out[name] = keep[offset : offset + s.numel()].reshape(s.shape)
        offset += s.numel()
    return out
