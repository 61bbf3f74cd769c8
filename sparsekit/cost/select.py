"""Selection under a cost budget: the best-scored channel units whose network fits (``select_by_cost``)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from sparsekit.cost.models import CostModel
from sparsekit.errors import UsageError
from sparsekit.progress import step


def select_by_cost(
    unit_scores: torch.Tensor, space: Any, cost: CostModel, budget: float, multiple: int = 1,
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
    unit_scores: torch.Tensor, space: Any, cost: CostModel, budget: float, multiple: int,
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


def _removal_chunks(scores: torch.Tensor, space: Any, multiple: int) -> list[tuple[float, list[int]]]:
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
