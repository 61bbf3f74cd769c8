"""Magnitude pruning at theta_K: score |w|, exact top-k."""

from __future__ import annotations

import torch

from sparsekit.methods.base import METHODS, ScoreMethod, SearchContext


@METHODS.register("magnitude", help="|w| at the rewind point, exact global (or --layerwise) top-k")
class MagnitudeMethod(ScoreMethod):
    uses_data = False

    def score(self, ctx: SearchContext) -> dict[str, torch.Tensor]:
        return {n: p.detach().abs().cpu() for n, p in ctx.params().items()}
