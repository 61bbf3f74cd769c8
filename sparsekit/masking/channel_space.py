"""The channel decision space: one keep variable per coupled channel unit, and what the network costs.

``UnitSpace`` maps U unit keep values (probabilities during a channel-level search, 0/1 at the end)
to

* multipliers for every parameter a unit gates: the weight rows of all its coupled layers, their
  bias entries and the BatchNorm affine that follows them (so a closed unit emits exactly 0 during
  the search too, as it will after structured removal);
* the cost of the network that remains (``CostModel``): candidate channels, prunable parameters,
  MACs, or latency from a measured table (sparsekit/bench/latency_table.py). Costs are exact for 0/1
  keeps and expectations under independent Bernoulli keeps for probabilities, differentiable in
  them, so GradBalance can hold a MAC or latency budget instead of a count.

MACs of a Conv/Linear layer after removal = positions x kernel x (kept output rows x kept input
channels, per group); a layer's input channels belong to the units of the layers that produce them
(Torch-Pruning's dependency graph, ``coupled_channel_groups``), so removing a unit shrinks its own
layers and every consumer. Layers that are not prunable keep their rows but still lose input
columns; MACs outside Conv/Linear layers (attention's matrix products) are a constant.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sparsekit.errors import UsageError
from sparsekit.mask import Mask
from sparsekit.masking.channel_groups import (
    _LAYERS,
    _example,
    channel_units,
    layer_bn_pairs,
    probe_forward,
)
from sparsekit.progress import step


@dataclass
class LayerGeometry:
    """One Conv/Linear layer in unit terms (index U = "always kept": the image, classes, fixed rows)."""

    weight: str
    out_idx: torch.Tensor  # (out,) unit of each output row
    in_idx: torch.Tensor  # (in,) unit of each input channel / feature
    groups: int
    kernel: int  # weights per (output row, input channel) pair: prod(kernel size)
    positions: int  # output positions per sample (H_out * W_out; tokens for a Linear on sequences)
    corr_units: torch.Tensor  # units that are both an output row and an input channel of one group
    corr_counts: torch.Tensor  # how many (row, channel) pairs of that unit (float64)
    kind: str  # "conv", "depthwise" or "linear"
    in_width: int
    out_width: int
    #: what a latency table needs to rebuild the layer alone: input spatial size (or token count),
    #: kernel size, stride, padding, dilation
    config: dict[str, Any] = field(default_factory=dict)

    def pairs(self, q: torch.Tensor) -> torch.Tensor:
        """Expected kept (row, channel) pairs for unit keep values ``q`` of shape (U + 1,), q[U] = 1.

        E[keep_o * keep_c] = q_o * q_c for different units and q_u for the same unit (a depthwise
        conv's channel is its own input), hence the correction term; exact for 0/1 keeps.
        """
        po = q[self.out_idx].view(self.groups, -1).sum(1)  # (G,)
        pi = q[self.in_idx].view(self.groups, -1).sum(1)  # (G,)
        c = q[self.corr_units]
        return (po * pi).sum() + (self.corr_counts.to(q.dtype) * (c - c * c)).sum()

    def widths(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected kept (input, output) widths."""
        return q[self.in_idx].sum(), q[self.out_idx].sum()


class UnitSpace:
    """Units of a model restricted to the prunable weights ``names`` (see module docstring)."""

    def __init__(self, model: nn.Module, names: list[str], in_shape: tuple[int, ...]) -> None:
        with step("tracing channel couplings"):
            self._build(model, names, in_shape)

    def _build(self, model: nn.Module, names: list[str], in_shape: tuple[int, ...]) -> None:
        self.names = list(names)
        self.in_shape = tuple(in_shape)
        self.units = channel_units(model, self.names, self.in_shape)
        self.size = len(self.units.units)
        U = self.size
        params = dict(model.named_parameters())
        self.shapes = {n: tuple(params[n].shape) for n in self.names}
        unit_of: dict[tuple[str, int], int] = {}
        for u, rows in enumerate(self.units.units):
            for row in rows:
                unit_of[row] = u
        self.unit_sizes = torch.tensor([len(rows) for rows in self.units.units], dtype=torch.float64)
        # (out,) unit of every output row of each prunable weight (U for the classifier's rows)
        self.row_units = {n: torch.tensor([unit_of.get((n, r), U) for r in range(self.shapes[n][0])])
                          for n in self.names}
        example = _example(model, self.in_shape)
        mod_name = {m: n for n, m in model.named_modules()}
        # multipliers for the parameters that make a closed channel emit a constant otherwise
        self.extra_units: dict[str, torch.Tensor] = {}
        for mod in model.modules():
            fqn = f"{mod_name[mod]}.weight"
            if isinstance(mod, _LAYERS) and fqn in self.row_units and getattr(mod, "bias", None) is not None:
                self.extra_units[f"{mod_name[mod]}.bias"] = self.row_units[fqn]
        for layer, bn in layer_bn_pairs(model, example):
            fqn = f"{mod_name[layer]}.weight"
            if fqn in self.row_units and bn.weight is not None and bn.weight.shape[0] == self.shapes[fqn][0]:
                self.extra_units[f"{mod_name[bn]}.weight"] = self.row_units[fqn]
                self.extra_units[f"{mod_name[bn]}.bias"] = self.row_units[fqn]
        self.layers = self._geometry(model, example, unit_of)

    # -- construction --
    def _geometry(self, model: nn.Module, example: torch.Tensor, unit_of: dict) -> list[LayerGeometry]:
        U = self.size
        mod_name = {m: n for n, m in model.named_modules()}
        in_idx: dict[str, torch.Tensor] = {}
        layers = [m for m in model.modules() if isinstance(m, _LAYERS)]
        for m in layers:
            width = m.in_channels if not isinstance(m, nn.Linear) else m.in_features
            in_idx[f"{mod_name[m]}.weight"] = torch.full((width,), U, dtype=torch.long)
        for g in self.units.groups:
            root_unit = [U] * g["channels"]
            for j in range(g["channels"]):
                for member in g["members"]:
                    u = unit_of.get((member["weight"], member["rows"][j]))
                    if u is not None:
                        root_unit[j] = u
                        break
            for item in g.get("inputs", []):
                idx = in_idx.get(item["weight"])
                if idx is None:
                    continue
                for j, cols in enumerate(item["cols"]):
                    for c in cols:
                        if 0 <= c < idx.numel():
                            idx[c] = root_unit[j]
        positions: dict[str, int] = defaultdict(int)
        in_sizes: dict[str, list[int]] = {}

        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            ch = out.shape[-1] if isinstance(mod, nn.Linear) else out.shape[1]
            positions[f"{mod_name[mod]}.weight"] += out.numel() // max(ch, 1) // out.shape[0]
            x = inp[0]
            in_sizes.setdefault(f"{mod_name[mod]}.weight",
                                list(x.shape[1:-1]) if isinstance(mod, nn.Linear) else list(x.shape[2:]))

        probe_forward(model, example, [m.register_forward_hook(hook) for m in layers])
        out = []
        for m in layers:
            fqn = f"{mod_name[m]}.weight"
            w = m.weight
            rows = self.row_units.get(fqn, torch.full((w.shape[0],), U, dtype=torch.long))
            cols = in_idx[fqn]
            groups = getattr(m, "groups", 1)
            depthwise = groups > 1 and groups == cols.numel() == rows.numel()
            if depthwise and bool((cols == U).all()):
                cols = rows.clone()  # a depthwise conv's input channel c is coupled to its output c
            kind = "linear" if isinstance(m, nn.Linear) else ("depthwise" if depthwise else "conv")
            corr_u, corr_n = _same_unit_pairs(rows, cols, groups, U)
            config: dict[str, Any] = {"in_size": in_sizes.get(fqn, [])}
            if not isinstance(m, nn.Linear):
                config.update(kernel=list(m.kernel_size), stride=list(m.stride), dilation=list(m.dilation),
                              padding=list(m.padding) if not isinstance(m.padding, str) else m.padding)
            out.append(LayerGeometry(fqn, rows, cols, groups, math.prod(w.shape[2:]), positions.get(fqn, 0),
                                     corr_u, corr_n, kind, cols.numel(), rows.numel(), config))
        return out

    # -- keep values -> multipliers / masks --
    def extend(self, p: torch.Tensor) -> torch.Tensor:
        """(U,) keep values -> (U + 1,) with the always-kept slot."""
        return torch.cat([p, p.new_ones(1)])

    def multipliers(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{param FQN: multiplier}`` broadcasting against each gated parameter."""
        q = self.extend(p)
        out = {}
        for n, idx in self.row_units.items():
            idx = idx.to(q.device)
            out[n] = q[idx].view(-1, *([1] * (len(self.shapes[n]) - 1)))  # (out, 1, ..., 1)
        for n, idx in self.extra_units.items():
            out[n] = q[idx.to(q.device)]
        return out

    def mask(self, keep: torch.Tensor) -> Mask:
        """The weight mask of 0/1 unit keeps (whole rows)."""
        q = self.extend(keep.to(torch.bool).cpu())
        return Mask({n: q[idx].view(-1, *([1] * (len(self.shapes[n]) - 1))).expand(self.shapes[n]).clone()
                     for n, idx in self.row_units.items()})

    def unit_scores(self, row_scores: dict[str, torch.Tensor]) -> torch.Tensor:
        """(U,) mean of per-row scores over each unit's rows."""
        return torch.tensor([sum(float(row_scores[n][r]) for n, r in rows) / len(rows)
                             for rows in self.units.units], dtype=torch.float64)


def _same_unit_pairs(rows: torch.Tensor, cols: torch.Tensor, groups: int, U: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Units that appear as an output row and an input channel of the same group, with pair counts."""
    g_rows = torch.arange(rows.numel()) // max(rows.numel() // groups, 1)
    g_cols = torch.arange(cols.numel()) // max(cols.numel() // groups, 1)
    ko, no = torch.unique(g_rows * (U + 1) + rows, return_counts=True)
    ki, ni = torch.unique(g_cols * (U + 1) + cols, return_counts=True)
    common, io, ii = _intersect(ko, ki)
    units = common % (U + 1)
    keep = units != U
    counts = (no[io] * ni[ii]).to(torch.float64)
    # one entry per unit (summed over groups)
    uniq, inv = torch.unique(units[keep], return_inverse=True)
    total = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inv, counts[keep])
    return uniq, total


def _intersect(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted unique tensors a, b -> (common values, their positions in a, in b)."""
    ia = torch.isin(a, b)
    common = a[ia]
    pos_a = torch.nonzero(ia).flatten()
    pos_b = torch.searchsorted(b, common)
    return common, pos_a, pos_b


# ---------------------------------------------------------------------------------------------------
# costs


class CostModel:
    """Cost of the network left by unit keeps: ``exact(keep)`` for 0/1, ``expected(p)`` for
    probabilities (differentiable), ``dense`` for the full model. Subclasses set ``kind``/``unit``."""

    kind = ""
    unit = ""
    #: each unit's keep enters the cost affinely (``_put_back`` prices candidates by the gradient)
    multilinear = False

    def __init__(self, space: UnitSpace) -> None:
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

    def __init__(self, space: UnitSpace) -> None:
        self._layers = [g for g in space.layers if g.weight in space.row_units]
        super().__init__(space)

    def expected(self, p: torch.Tensor) -> torch.Tensor:
        q = self.space.extend(p)
        return sum((g.kernel * g.pairs(q) for g in self._layers), q.new_zeros(()))


class MacCost(CostModel):
    """Multiply-accumulates per sample of the whole model (non-Conv/Linear MACs: ``constant``)."""

    kind, unit = "macs", "MACs"
    multilinear = True

    def __init__(self, space: UnitSpace, constant: float = 0.0) -> None:
        self.constant = constant
        super().__init__(space)

    def expected(self, p: torch.Tensor) -> torch.Tensor:
        q = self.space.extend(p)
        return sum((g.positions * g.kernel * g.pairs(q) for g in self.space.layers), q.new_zeros(())) + self.constant


def mac_cost(space: UnitSpace, model: nn.Module) -> MacCost:
    """MacCost with the model's non-Conv/Linear MACs (counted by torch's FLOP counter) as the constant."""
    from sparsekit.bench.macs import torch_macs

    layer_macs = MacCost(space).dense
    total = torch_macs(model, space.in_shape)
    return MacCost(space, constant=max(0.0, float(total) - layer_macs))


def cost_for(budget: Any, space: UnitSpace, model: nn.Module, run_dir: Any = None) -> tuple[CostModel, float]:
    """(cost model, absolute budget) of a ``sparsekit.budget.Budget`` over ``space``.

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
        from sparsekit.bench.latency_table import latency_cost

        cost = latency_cost(space, model, budget, run_dir)
        return cost, budget.value
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


# ---------------------------------------------------------------------------------------------------
# selection under a cost budget


def select_by_cost(
    unit_scores: torch.Tensor, space: UnitSpace, cost: CostModel, budget: float, multiple: int = 1,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Keep the highest-scored units whose network costs at most ``budget`` (absolute, cost's unit).

    Units are removed from the lowest score up (ties: earlier unit first), skipping a removal that
    would leave a layer with no channel, until the cost is within the budget. With ``multiple > 1``
    a coupling family of equal-size units is cut in chunks so its kept count stays a multiple of N
    (at least N; CPU GEMM kernels run widths like 16 or 32 much faster than 15 or 31); a chunk's
    score is the mean of its units. Cost only falls as units go, so the shortest prefix of that
    removal order that meets the budget is found by bisection; removed chunks are then put back,
    best score first, wherever the budget still allows: the result is within the budget and putting
    back any removed chunk would exceed it.

    Raises:
        UsageError: when even the smallest allowed widths cost more than ``budget``.
    """
    with step(f"selecting channels within the {cost.kind} budget"):
        return _select_by_cost(unit_scores, space, cost, budget, multiple)


def _select_by_cost(
    unit_scores: torch.Tensor, space: UnitSpace, cost: CostModel, budget: float, multiple: int,
) -> tuple[torch.Tensor, dict[str, Any]]:
    scores = unit_scores.detach().double().cpu()
    chunks = _removal_chunks(scores, space, multiple)
    order = sorted(range(len(chunks)), key=lambda i: (chunks[i][0], i))
    alive: dict[str, int] = {n: s[0] for n, s in space.shapes.items()}
    sequence: list[list[int]] = []
    for i in order:
        members = chunks[i][1]
        per_layer: dict[str, int] = defaultdict(int)
        for u in members:
            for n, _ in space.units.units[u]:
                per_layer[n] += 1
        if any(alive[n] - c < 1 for n, c in per_layer.items()):
            continue
        for n, c in per_layer.items():
            alive[n] -= c
        sequence.append(members)

    def keep_after(k: int) -> torch.Tensor:
        keep = torch.ones(space.size, dtype=torch.bool)
        for members in sequence[:k]:
            keep[members] = False
        return keep

    if cost.exact(keep_after(len(sequence))) > budget * (1 + 1e-12):
        floor = cost.exact(keep_after(len(sequence)))
        raise UsageError(f"a {cost.kind} budget of {_fmt(budget, cost)} is below what the smallest allowed widths "
                         f"reach ({_fmt(floor, cost)}, {floor / cost.dense:.1%} of the dense "
                         f"{_fmt(cost.dense, cost)}); ask for more")
    lo, hi = 0, len(sequence)  # cost(keep_after(hi)) <= budget
    while lo < hi:
        mid = (lo + hi) // 2
        if cost.exact(keep_after(mid)) <= budget * (1 + 1e-12):
            hi = mid
        else:
            lo = mid + 1
    keep = keep_after(hi)
    # chunks are coarse with --channel-multiple (8 channels of a residual stream is a lot of MACs):
    # put back removed chunks, best score first, while the budget still holds
    back = [mem for mem in sorted(sequence[:hi], key=lambda mem: -float(scores[mem].mean()))
            if multiple <= 1 or len(mem) == multiple]  # a family's partial first chunk breaks the multiple
    keep = _put_back(keep, back, cost, budget * (1 + 1e-12))
    achieved = cost.exact(keep)
    stats = {
        "budget_kind": cost.kind,
        "budget_asked": budget,
        "budget_achieved": achieved,
        "budget_dense": cost.dense,
        "budget_fraction_asked": budget / cost.dense if cost.dense else 1.0,
        "budget_fraction_achieved": achieved / cost.dense if cost.dense else 1.0,
        "units_removed": int((~keep).sum()),
        "units": space.size,
    }
    return keep, stats


def _put_back(keep: torch.Tensor, chunks: list[list[int]], cost: CostModel, limit: float) -> torch.Tensor:
    """Put back each chunk, in order, whose return keeps the cost within ``limit``.

    A ``multilinear`` cost (channels, params, MACs: each unit enters affinely) has its gradient at a
    0/1 keep equal to the exact cost of putting back each single unit, and the gradient sum is a lower
    bound for a chunk (cross terms are products of kept widths, never negative). So one backward
    pass prices every candidate, only candidates that may fit are costed exactly, and the gradient is
    recomputed after each accepted chunk: a few passes instead of one full evaluation per removed
    unit (19,000 units of ResNeXt-50 took minutes that way).
    """
    if not getattr(cost, "multilinear", False):
        for members in chunks:
            trial = keep.clone()
            trial[members] = True
            if cost.exact(trial) <= limit:
                keep = trial
        return keep

    def price(k: torch.Tensor) -> tuple[float, torch.Tensor]:
        p = k.to(torch.float64).requires_grad_(True)
        with torch.enable_grad():
            total = cost.expected(p)
            (grad,) = torch.autograd.grad(total, p)
        return float(total.detach()), grad

    current, grad = price(keep)
    for members in chunks:
        if current + float(grad[members].sum()) > limit + 1e-9 * abs(limit):
            continue  # even the lower bound does not fit
        trial = keep.clone()
        trial[members] = True
        if cost.exact(trial) <= limit:
            keep = trial
            current, grad = price(keep)
    return keep


def _fmt(value: float, cost: CostModel) -> str:
    return f"{value:.4g} ms" if cost.kind == "latency" else f"{value:,.0f} {cost.unit}"


def _removal_chunks(scores: torch.Tensor, space: UnitSpace, multiple: int) -> list[tuple[float, list[int]]]:
    """(mean score, units) removal chunks: single units, or per-family chunks of ``multiple``."""
    if multiple <= 1:
        return [(float(scores[u]), [u]) for u in range(space.size)]
    families: dict[int, list[int]] = defaultdict(list)
    for u, fam in enumerate(space.units.families):
        families[fam].append(u)
    chunks: list[tuple[float, list[int]]] = []
    for members in families.values():
        sizes = {len(space.units.units[u]) for u in members}
        ranked = sorted(members, key=lambda u: (float(scores[u]), u))
        if len(sizes) != 1:  # mixed unit sizes: no width to round, units one by one
            chunks += [(float(scores[u]), [u]) for u in ranked]
            continue
        if len(ranked) <= multiple:
            continue  # already at most N wide: left as it is
        removable = ranked[: len(ranked) - multiple]  # at least N stay
        first = len(removable) % multiple
        parts = ([removable[:first]] if first else []) + [
            removable[i : i + multiple] for i in range(first, len(removable), multiple)]
        # the partial first chunk brings the width down to a multiple of N; every later one keeps it there
        chunks += [(float(scores[part].mean()), part) for part in parts]
    return chunks
