"""Weight initialization schemes selectable per run (``--weight-init``).

Strong-ticket methods (gates, edge-popup) never train weights, so the init decides what can be found.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sparsekit.errors import UsageError


def _fan_in(w: torch.Tensor) -> int:
    return int(w[0].numel()) if w.dim() > 1 else int(w.numel())


def kaiming_normal(w: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.randn(w.shape, generator=g) * math.sqrt(2.0 / _fan_in(w))


def signed_kaiming_constant(w: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """sign(N(0,1)) * sqrt(2 / fan_in) (Ramanujan et al.'s edge-popup init)."""
    sign = torch.randn(w.shape, generator=g).sign()
    sign[sign == 0] = 1.0
    return sign * math.sqrt(2.0 / _fan_in(w))


def kaiming_uniform(w: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """U(-b, b) with b = sqrt(6 / fan_in) (same variance as Kaiming-normal)."""
    b = math.sqrt(6.0 / _fan_in(w))
    return (torch.rand(w.shape, generator=g) * 2 - 1) * b


#: half-width of the unscaled uniform init
UNIFORM_BOUND = 1.0


def uniform(w: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """U(-1, 1), whatever the fan-in: the CRBG paper's unscaled uniform init ("avoids Kaiming/Xavier
    heuristics"). Until 2026-12-03 ``uniform`` was an alias of ``kaiming-uniform``."""
    return (torch.rand(w.shape, generator=g) * 2 - 1) * UNIFORM_BOUND


WEIGHT_INITS = {
    "kaiming-normal": kaiming_normal,
    "signed-kaiming-constant": signed_kaiming_constant,
    "kaiming-uniform": kaiming_uniform,
    "uniform": uniform,
}


@torch.no_grad()
def apply_weight_init(model: nn.Module, names: list[str], scheme: str, seed: int) -> None:
    """Re-initialize the named weights in place; ``scheme == "default"`` keeps the model's own init."""
    if scheme == "default":
        return
    if scheme not in WEIGHT_INITS:
        raise UsageError(f"unknown --weight-init {scheme!r} (valid: default, {', '.join(WEIGHT_INITS)})")
    g = torch.Generator().manual_seed(seed + 104_729)
    params = dict(model.named_parameters())
    for n in names:
        p = params[n]
        p.copy_(WEIGHT_INITS[scheme](p, g).to(p.dtype))
