"""Random channel pruning: one i.i.d. N(0, 1) score per coupled channel unit (the structured sanity baseline)."""

from __future__ import annotations

import torch

from sparsekit.masking.coupling.channel_space import UnitSpace
from sparsekit.methods.base import (
    METHODS,
    SearchContext,
    SearchMethod,
    SearchResult,
    select_unit_scores,
)


@METHODS.register("random-channel", help="random whole channels (coupled units), channel only")
class RandomChannelMethod(SearchMethod):
    uses_data = False
    granularities = ("channel",)
    cost_budgets = True

    def search(self, ctx: SearchContext) -> SearchResult:
        space = UnitSpace(ctx.model, ctx.names, tuple(ctx.data.in_shape))
        g = torch.Generator().manual_seed(ctx.seed + 7919)
        return SearchResult(*select_unit_scores(torch.randn(space.size, generator=g, dtype=torch.float64), space, ctx))
