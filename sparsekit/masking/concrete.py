"""Binary Concrete (Gumbel-sigmoid) relaxation of a Bernoulli mask, CTS parameterization.

Reference parameterization (ALGORITHMS.md §2.2): one logit ``a`` per weight, logistic noise
``l = log u - log(1 - u)`` with ``u ~ U(0, 1)`` clamped to [1e-10, 1 - 1e-10], and the relaxed mask

    m = sigmoid(a + l / tau)          (tau = 2/3)

i.e. the textbook form sigmoid((log_alpha + l) / tau) with log_alpha = tau * a. The keep probability used
for sparsity accounting is sigmoid(a) (not E[m]); the final mask is a top-k over ``a``.
"""

from __future__ import annotations

import math

import torch

#: the reference's clamp on the uniform sample (needs float64: 1 - 1e-10 rounds to 1 in float32)
UNIFORM_EPS = 1e-10
DEFAULT_TAU = 2.0 / 3.0


def logit(p: float) -> float:
    """log(p / (1 - p)) for p in (0, 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"logit needs p in (0, 1), got {p}")
    return math.log(p) - math.log1p(-p)


def init_logits(numel: int, density: float, device: str | torch.device = "cpu") -> torch.Tensor:
    """Flat logits with sigmoid(a) = density everywhere (expected density = target at step 0)."""
    return torch.full((numel,), logit(density), dtype=torch.float32, device=device)


def logistic_noise(
    numel: int,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Independent Logistic(0, 1) samples, shape (numel,); drawn in float64 so the clamp is exact."""
    u = torch.rand(numel, generator=generator, device=device, dtype=torch.float64)
    u = u.clamp_(UNIFORM_EPS, 1.0 - UNIFORM_EPS)
    return (torch.log(u) - torch.log1p(-u)).to(dtype)


def relaxed_mask(logits: torch.Tensor, noise: torch.Tensor, tau: float = DEFAULT_TAU) -> torch.Tensor:
    """sigmoid(a + noise / tau): differentiable in ``logits``.

    Example:
        >>> a = torch.zeros(3)
        >>> relaxed_mask(a, torch.zeros(3)).tolist()
        [0.5, 0.5, 0.5]
    """
    return torch.sigmoid(logits + noise / tau)


def keep_probability(logits: torch.Tensor) -> torch.Tensor:
    """sigmoid(a): the per-weight retention probability used for sparsity accounting."""
    return torch.sigmoid(logits)
