"""GradBalance: hold the expected density of a relaxed mask near a target by balancing gradients.

Implements the CTS reference rule (docs/algorithms.md §2.4), for any relaxation whose keep
probability is pi = sigmoid(theta) of the trained parameter theta (CTS: pi = sigmoid(a); hard-concrete
gates: pi = P(z != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta))); other keep probabilities
(Gaussian gates: pi = Phi((mu + 0.5) / sigma)) pass their derivative ``dpi`` to ``step``:

    K~   = headroom * kappa * d                 (headroom 1.1)
    e    = c_s * (sum(pi) / K~ - 1)             (c_s = 100)
    g_sp = (c_s / K~) * pi * (1 - pi)           (= de/dtheta, all >= 0; (c_s / K~) * dpi in general)
    lam* = ||g_obj|| / ||g_sp|| if e > 0 else 0    (stable norms)
    lam  = lam* on the first step, then (1 - beta) * lam + beta * lam*   (beta = 0.01)
    g    = g_obj + lam * g_sp

The Lagrangian variant (``LagrangeBalance``) uses K~ = kappa * d and gradient ascent on lambda.

``two_sided=True`` (a deviation from the reference, used by the gates method) also pushes the density
*up* when it is below the target: lam* = tanh(e) * ||g_obj|| / ||g_sp|| for any e (so lam may become
negative). tanh keeps the push proportional near the target (e = 1 is 1 % off with c_s = 100) instead
of switching sign at e = 0. The reference's one-sided rule leaves lam at 0 below the target, so an
objective that closes gates on its own ends with fewer open gates than the budget, and the final
top-k re-admits gates the search was closing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def stable_norm(v: torch.Tensor) -> torch.Tensor:
    """2-norm computed as max|v| * ||v / max|v||| (no overflow/underflow for tiny or huge entries)."""
    scale = v.abs().max().clamp_min(1e-12)
    return (v / scale).norm() * scale


def sparsity_gradient(pi: torch.Tensor, target_count: float, c_s: float) -> torch.Tensor:
    return (c_s / target_count) * pi * (1 - pi)


@dataclass
class GradBalance:
    """One-sided gradient balancing with EMA smoothing (the CTS default).

    Example:
        >>> gb = GradBalance(density=0.1, numel=10)
        >>> g = gb.step(torch.ones(10), torch.full((10,), 0.5))  # expected density 0.5 > 0.11
        >>> round(gb.lam, 4) == round(float(stable_norm(torch.ones(10)) / stable_norm(
        ...     sparsity_gradient(torch.full((10,), 0.5), 1.1, 100.0))), 4)
        True
    """

    density: float
    numel: int
    headroom: float = 1.1
    c_s: float = 100.0
    beta: float = 0.01
    lam: float | None = None  # None = not yet initialized (the reference's -inf sentinel)
    last_target_ratio: float = 0.0
    last_excess: float = 0.0
    two_sided: bool = False

    @property
    def target_count(self) -> float:
        return self.headroom * self.density * self.numel

    def step(
        self, g_obj: torch.Tensor, pi: torch.Tensor, reduce=None, dpi: torch.Tensor | None = None,
        used: float | None = None, g_used: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the combined gradient for the parameters whose keep probabilities are ``pi``.

        ``reduce`` optionally averages a scalar across distributed ranks (lam* is averaged there).
        ``dpi`` is d pi / d theta for relaxations whose keep probability is not a sigmoid of the
        parameter (e.g. Phi for Gaussian gates); None means pi * (1 - pi) (the sigmoid case).
        ``used`` / ``g_used``: a cost budget (channel-level MACs, latency): the expected cost in place
        of sum(pi) and its gradient in the parameters in place of dpi (``numel`` is then the dense
        cost and ``density`` the fraction of it kept).
        """
        k = self.target_count
        e = self.c_s * ((float(pi.sum()) if used is None else used) / k - 1.0)
        if g_used is not None:
            g_sp = (self.c_s / k) * g_used
        else:
            g_sp = sparsity_gradient(pi, k, self.c_s) if dpi is None else (self.c_s / k) * dpi
        if self.two_sided:
            ratio = math.tanh(e) * float(stable_norm(g_obj) / (stable_norm(g_sp) + 1e-12))
        elif e > 0:
            ratio = float(stable_norm(g_obj) / (stable_norm(g_sp) + 1e-12))
        else:
            ratio = 0.0
        if reduce is not None:
            ratio = float(reduce(ratio))
        self.lam = ratio if self.lam is None else (1 - self.beta) * self.lam + self.beta * ratio
        self.last_target_ratio, self.last_excess = ratio, e
        return g_obj + self.lam * g_sp


@dataclass
class LagrangeBalance:
    """Lagrangian multiplier variant: minimize L + lam * e over theta, maximize over lam (SGD)."""

    density: float
    numel: int
    lr: float = 1e-3
    c_s: float = 100.0
    lam: float = 0.0
    last_excess: float = 0.0

    @property
    def target_count(self) -> float:
        return self.density * self.numel

    def step(self, g_obj: torch.Tensor, pi: torch.Tensor, reduce=None, used: float | None = None,
             g_used: torch.Tensor | None = None) -> torch.Tensor:
        k = self.target_count
        e = self.c_s * ((float(pi.sum()) if used is None else used) / k - 1.0)
        g_sp = sparsity_gradient(pi, k, self.c_s) if g_used is None else (self.c_s / k) * g_used
        g = g_obj + self.lam * g_sp
        self.lam += self.lr * e  # ascent on lambda; free sign
        self.last_excess = e
        return g
