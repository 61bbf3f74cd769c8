"""Binary Concrete (Gumbel-sigmoid) relaxation of a Bernoulli mask, CTS parameterization.

Reference parameterization (docs/algorithms.md §2.2): one logit ``a`` per weight, logistic noise
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
#: clamp of a float32 uniform sample: 2^-24 is float32's spacing just below 1, so [2^-24, 1 - 2^-24]
#: is the widest symmetric range representable; logistic noise is then within +-16.6 instead of the
#: reference's +-23.0. Deviation: each bound is reached with probability 6e-8 per weight per step; the
#: mean is unchanged (symmetric) and the variance pi^2 / 3 changes by -1.3e-6 relative (computed from
#: the logistic tail: E[x^2; |x| > 16.6] replaced by the clamped mass x 16.6^2).
UNIFORM_EPS_FLOAT32 = 2.0**-24
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
    """Independent Logistic(0, 1) samples, shape (numel,), drawn directly in ``dtype``.

    float64 uses the reference clamp [1e-10, 1 - 1e-10]; float32 (the search's dtype, 2-3x cheaper
    per step on CPU than drawing float64 and casting) clamps to [2^-24, 1 - 2^-24], see
    UNIFORM_EPS_FLOAT32.
    """
    eps = UNIFORM_EPS if dtype == torch.float64 else UNIFORM_EPS_FLOAT32
    u = torch.rand(numel, generator=generator, device=device, dtype=dtype)
    u = u.clamp_(eps, 1.0 - eps)
    return torch.log(u) - torch.log1p(-u)


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
