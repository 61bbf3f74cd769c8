"""The latency-correction loop: a table predicts, the measurement decides.

A selection against a latency table lands near, not at, the measured latency of the converted ticket
(fusion, caches, the call itself). ``correct`` measures the candidate and re-selects against a
corrected table target until the measurement is within ``TOLERANCE`` of the budget (at most
``ROUNDS`` selections): the target is rescaled by budget / measured until the budget is bracketed,
then interpolated linearly between the bracketing (table target, measured) pairs. The candidate
measured closest to the budget wins. Channel tickets (structured, on a dense runtime) and weight
tickets (masked, on sparse-cpu) share it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sparsekit.errors import UsageError

#: a measured latency within this fraction of the budget ends the correction loop
TOLERANCE = 0.05
ROUNDS = 6


def correct(
    select: Callable[[float], tuple[Any, dict[str, Any]]],
    measure: Callable[[Any], float],
    budget: float,
    first: tuple[Any, dict[str, Any]],
    max_target: float,
    tolerance: float = TOLERANCE,
    rounds: int = ROUNDS,
) -> tuple[Any, dict[str, Any]]:
    """(selection, stats) measured closest to ``budget`` ms.

    ``select(target_ms)`` returns (selection, stats) for a table target, with the table's view of it in
    ``stats["budget_achieved"]``, and raises UsageError when the target is unreachable; ``first`` is its
    result at ``budget``; ``measure(selection)`` the measured ms; ``max_target`` caps a corrected target
    (the dense cost). The stats returned add ``budget_asked``, ``budget_measured_ms``,
    ``budget_measured_fraction`` and ``budget_rounds`` (one record per measurement).
    """
    keep, stats = first
    target, log = budget, []
    best = None
    below: tuple[float, float] | None = None  # (table target, measured) pairs around the budget
    above: tuple[float, float] | None = None
    for _ in range(rounds):
        ms = measure(keep)
        log.append({"table_target_ms": target, "table_ms": stats["budget_achieved"], "measured_ms": ms})
        if best is None or abs(ms - budget) < abs(best[2] - budget):
            best = (keep, stats, ms)
        if abs(ms - budget) <= tolerance * budget:
            break
        if ms < budget and (below is None or target > below[0]):
            below = (target, ms)
        if ms > budget and (above is None or target < above[0]):
            above = (target, ms)
        if below is not None and above is not None and above[1] > below[1]:
            w = (budget - below[1]) / (above[1] - below[1])
            target = below[0] + w * (above[0] - below[0])
        else:
            target = target * budget / ms
        target = min(target, max_target)
        try:
            keep, stats = select(target)
        except UsageError:  # the corrected target is below what the selection can reach: keep the best so far
            break
    keep, stats, ms = best
    return keep, {**stats, "budget_asked": budget, "budget_measured_ms": ms,
                  "budget_measured_fraction": ms / budget, "budget_rounds": log}
