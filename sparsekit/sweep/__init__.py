"""``sparsekit sweep``: the deployment decision in one command.

Pretrain once, search every ticket of a grid (methods x sparsities / MAC budgets) from that rewind point,
export each in the form its runtime needs, bench them all with the dense model in one interleaved session,
and answer: the fastest (artifact, runtime) within the constraint (``run.run_sweep``).
"""

from sparsekit.sweep.frontier import mark_frontier, pareto_flags
from sparsekit.sweep.plan import Cell, SweepConfig
from sparsekit.sweep.recommend import Constraint, Decision, recommend

__all__ = [
    "Cell",
    "Constraint",
    "Decision",
    "SweepConfig",
    "mark_frontier",
    "pareto_flags",
    "recommend",
]
