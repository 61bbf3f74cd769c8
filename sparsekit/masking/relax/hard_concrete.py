"""Hard-concrete gates (Louizos, Welling & Kingma 2018; docs/algorithms.md §3.2).

A gate z in [0, 1] per parameter ``log_alpha``:

    u ~ U(0, 1);  s = sigmoid((log u - log(1 - u) + log_alpha) / beta)
    z = clamp(s * (zeta - gamma) + gamma, 0, 1)

with beta = 2/3, gamma = -0.1, zeta = 1.1. The stretch puts positive mass on z == 0 exactly, so the
probability that a gate is open has the closed form

    P(z != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta))

(the expected L0 norm is its sum). The deterministic test-time gate is
clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# clamp u away from 0 and 1 so the logistic noise stays finite
_U_EPS = 1e-6


@dataclass(frozen=True)
class HardConcrete:
    """The hard-concrete relaxation of a Bernoulli gate.

    Example:
        >>> hc = HardConcrete()
        >>> la = torch.full((3,), hc.init_param(0.1))
        >>> round(float(hc.keep_prob(la)[0]), 6)
        0.1
    """

    beta: float = 2.0 / 3.0
    gamma: float = -0.1
    zeta: float = 1.1

    @property
    def _shift(self) -> float:
        # beta * log(-gamma / zeta): the offset between log_alpha and the logit of P(z != 0)
        return self.beta * math.log(-self.gamma / self.zeta)

    def init_param(self, density: float) -> float:
        """log_alpha whose keep probability P(z != 0) is ``density`` (docs/algorithms.md §3.4)."""
        density = min(max(density, 1e-6), 1 - 1e-6)
        return math.log(density / (1 - density)) + self._shift

    def sample(self, log_alpha: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One stochastic gate per entry (differentiable in ``log_alpha`` where 0 < z < 1)."""
        u = torch.rand(log_alpha.shape, generator=generator, device=log_alpha.device, dtype=log_alpha.dtype)
        u = u.clamp(_U_EPS, 1 - _U_EPS)
        s = torch.sigmoid((torch.logit(u) + log_alpha) / self.beta)  # logit(u) = log u - log(1 - u)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def keep_prob(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """P(z != 0), closed form."""
        return torch.sigmoid(log_alpha - self._shift)

    def keep_prob_grad(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """d P(z != 0) / d log_alpha = pi * (1 - pi)."""
        pi = self.keep_prob(log_alpha)
        return pi * (1 - pi)

    def test_gate(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """Deterministic gate used at test time (exact zeros count as pruned)."""
        return (torch.sigmoid(log_alpha) * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def at_temperature(self, value: float) -> HardConcrete:
        """The same gate with temperature ``beta = value`` (annealing toward hard 0/1 samples)."""
        return HardConcrete(beta=value, gamma=self.gamma, zeta=self.zeta)

    @property
    def temperature(self) -> float:
        return self.beta

    def param_range(self) -> tuple[float, float]:
        """Clamp of log_alpha after each step: [log 1e-2, log 1e2] as in Louizos et al.'s code, so a
        closed gate keeps a non-zero gradient and can reopen (the deterministic gate is exactly 0 /
        1 already for |log_alpha| >= log(1.1 / 0.1) = 2.4, well inside the range)."""
        return (math.log(1e-2), math.log(1e2))
