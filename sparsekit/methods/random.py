"""Random pruning: i.i.d. N(0,1) scores (Synaptic-Flow ``Rand``), exact top-k."""

from __future__ import annotations

import torch

from sparsekit.methods.base import METHODS, ScoreMethod, SearchContext


@METHODS.register("random", help="random scores, exact global (or --layerwise) top-k")
class RandomMethod(ScoreMethod):
    uses_data = False

    def score(self, ctx: SearchContext) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(ctx.seed + 7919)
        return {n: torch.randn(p.shape, generator=g) for n, p in ctx.params().items()}
