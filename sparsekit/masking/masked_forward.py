"""Forward a network whose prunable weights are multiplied by (relaxed or binary) masks.

Strong-ticket searches (gates, edge-popup) never change the weights: the multipliers are applied in
the forward graph through ``torch.func.functional_call``, so the module's own parameters stay
bit-identical and gradients flow only to whatever produced the multipliers.
"""

from __future__ import annotations

import torch
from torch import nn


def freeze(model: nn.Module) -> None:
    """Stop gradients to every parameter of ``model`` (weights, biases, BN affine)."""
    for p in model.parameters():
        p.requires_grad_(False)


def masked_call(model: nn.Module, multipliers: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with each named weight replaced by ``weight * multipliers[name]``.

    Multipliers broadcast against the weight: the weight's shape for per-weight masks, or
    (out, 1, ...) for per-output-channel masks. Parameters not named keep their own values.
    """
    params = dict(model.named_parameters())
    overrides = {name: params[name] * m for name, m in multipliers.items()}
    return torch.func.functional_call(model, overrides, (x,))


def binary_multipliers(mask, device: torch.device | str, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Float 0/1 multipliers from a ``Mask`` (for forwarding the final ticket)."""
    return {name: t.to(device=device, dtype=dtype) for name, t in mask.items()}
