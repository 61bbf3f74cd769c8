"""Cost models of channel tickets: what the network left by unit keeps costs.

A cost is a function of U unit keep values (a ``UnitSpace`` of sparsekit.masking.channel_space):
exact for 0/1 keeps and the expectation under independent Bernoulli keeps for probabilities,
differentiable in them, so GradBalance can hold a MAC or latency budget instead of a count.
``ChannelCost`` counts candidate channels, ``ParamCost`` the prunable weights left after structured
removal, ``MacCost`` multiply-accumulates per sample; latency models (measured tables) come from a
``LatencySource`` (sparsekit.cost.latency).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparsekit.cost.macs import torch_macs
from sparsekit.errors import UsageError


class CostModel:
    """Cost of the network left by unit keeps: ``exact(keep)`` for 0/1, ``expected(p)`` for
    probabilities (differentiable), ``dense`` for the full model. Subclasses set ``kind``/``unit``."""

    kind = ""
    unit = ""
    #: each unit's keep enters the cost affinely (``_put_back`` prices candidates by the gradient)
    multilinear = False

    def __init__(self, space: Any) -> None:
        self.space = space
        ones = torch.ones(space.size, dtype=torch.float64)
        self.dense = float(self.expected(ones))

    def expected(self, p: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def exact(self, keep: torch.Tensor) -> float:
        return float(self.expected(keep.to(torch.float64)))

    def fraction(self, keep: torch.Tensor) -> float:
        return self.exact(keep) / self.dense if self.dense else 1.0


class ChannelCost(CostModel):
    """Candidate channels kept (``--sparsity`` at channel granularity: a fraction of channels)."""

    kind, unit = "channels", "channels"
    multilinear = True

    def expected(self, p: torch.Tensor) -> torch.Tensor:
        return (self.space.unit_sizes.to(p) * p).sum()


class ParamCost(CostModel):
    """Weights of the prunable layers left after structured removal (rows and input columns)."""

    kind, unit = "params", "weights"
    multilinear = True

    def __init__(self, space: Any) -> None:
        self._layers = [g for g in space.layers if g.weight in space.row_units]
        super().__init__(space)

    def expected(self, p: torch.Tensor) -> torch.Tensor:
        q = self.space.extend(p)
        return sum((g.kernel * g.pairs(q) for g in self._layers), q.new_zeros(()))


class MacCost(CostModel):
    """Multiply-accumulates per sample of the whole model (non-Conv/Linear MACs: ``constant``)."""

    kind, unit = "macs", "MACs"
    multilinear = True

    def __init__(self, space: Any, constant: float = 0.0) -> None:
        self.constant = constant
        super().__init__(space)

    def expected(self, p: torch.Tensor) -> torch.Tensor:
        q = self.space.extend(p)
        return sum((g.positions * g.kernel * g.pairs(q) for g in self.space.layers), q.new_zeros(())) + self.constant


def mac_cost(space: Any, model: nn.Module) -> MacCost:
    """MacCost with the model's non-Conv/Linear MACs (counted by torch's FLOP counter) as the constant."""
    layer_macs = MacCost(space).dense
    total = torch_macs(model, space.in_shape)
    return MacCost(space, constant=max(0.0, float(total) - layer_macs))


def cost_for(budget: Any, space: Any, model: nn.Module, latency: Any = None) -> tuple[CostModel, float]:
    """(cost model, absolute budget) of a ``sparsekit.cost.budget.Budget`` over ``space`` (a UnitSpace).

    ``latency``: the ``LatencySource`` the pipeline prepared for a latency budget (its tables are
    measured in sparsekit.bench); None prepares one here (library use).

    Raises:
        UsageError: when the model's channel couplings cannot be traced: the structured converter
            (same dependency graph) could then remove no channel, so no cost budget can be met.
    """
    if not space.units.coupled:
        raise UsageError(f"a {budget.kind} budget needs channels the structured format can remove, but this model's "
                         f"channel couplings cannot be traced ({space.units.untraced}); prune it with --sparsity "
                         "instead")
    if budget.kind == "params":
        cost: CostModel = ParamCost(space)
    elif budget.kind == "macs":
        cost = mac_cost(space, model)
    elif budget.kind == "latency":
        if latency is None:
            from sparsekit.cost.latency import prepare

            latency = prepare(budget)
        return latency.for_units(space, model), budget.value
    else:
        raise UsageError(f"unknown budget kind {budget.kind!r}")
    return cost, budget.value * cost.dense


def uniform_keep(cost: CostModel, fraction: float, size: int) -> float:
    """Keep probability p (the same for every unit) with expected cost = ``fraction`` x dense (bisection)."""
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if float(cost.expected(torch.full((size,), mid, dtype=torch.float64)).detach()) / cost.dense < fraction:
            lo = mid
        else:
            hi = mid
    return min(max(0.5 * (lo + hi), 1e-4), 1 - 1e-4)
