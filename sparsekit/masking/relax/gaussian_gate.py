"""Gaussian stochastic gates, STG (Yamada, Lindenbaum et al. 2020; docs/algorithms.md §3.3).

A gate z in [0, 1] per parameter ``mu`` with a fixed noise scale ``sigma``:

    eps ~ N(0, 1);  z = clamp(mu + 0.5 + sigma * eps, 0, 1)

The probability that a gate is open is P(z > 0) = Phi((mu + 0.5) / sigma) (Phi = standard normal
CDF; its sum is the expected L0 norm). The deterministic test-time gate is clamp(mu + 0.5, 0, 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _phi(x: torch.Tensor) -> torch.Tensor:
    """Standard normal density."""
    return torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


@dataclass(frozen=True)
class GaussianGate:
    """The STG relaxation of a Bernoulli gate.

    Example:
        >>> gg = GaussianGate(sigma=0.5)
        >>> mu = torch.full((3,), gg.init_param(0.2))
        >>> round(float(gg.keep_prob(mu)[0]), 6)
        0.2
    """

    sigma: float = 0.5

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")

    def init_param(self, density: float) -> float:
        """mu whose keep probability Phi((mu + 0.5) / sigma) equals ``density``."""
        density = min(max(density, 1e-6), 1 - 1e-6)
        # Phi^-1(p) = sqrt(2) * erfinv(2p - 1)
        probit = math.sqrt(2.0) * float(torch.erfinv(torch.tensor(2 * density - 1, dtype=torch.float64)))
        return self.sigma * probit - 0.5

    def sample(self, mu: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return (mu + 0.5 + self.sigma * eps).clamp(0.0, 1.0)

    def keep_prob(self, mu: torch.Tensor) -> torch.Tensor:
        """P(z > 0) = Phi((mu + 0.5) / sigma)."""
        return 0.5 * (1 + torch.erf((mu + 0.5) / (self.sigma * math.sqrt(2.0))))

    def keep_prob_grad(self, mu: torch.Tensor) -> torch.Tensor:
        """d P(z > 0) / d mu = phi((mu + 0.5) / sigma) / sigma."""
        return _phi((mu + 0.5) / self.sigma) / self.sigma

    def test_gate(self, mu: torch.Tensor) -> torch.Tensor:
        return (mu + 0.5).clamp(0.0, 1.0)

    def at_temperature(self, value: float) -> GaussianGate:
        """The same gate with noise ``sigma = value`` (annealing toward deterministic gates)."""
        return GaussianGate(sigma=value)

    @property
    def temperature(self) -> float:
        return self.sigma

    def param_range(self) -> tuple[float, float]:
        """Clamp of mu after each step: the deterministic gate is exactly 0 for mu <= -0.5 and 1 for
        mu >= 0.5; one more unit on each side keeps a closed gate within reach of reopening."""
        return (-1.5, 1.5)
