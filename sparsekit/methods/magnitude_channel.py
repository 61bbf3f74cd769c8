"""L1-norm filter pruning (Li et al., 2017) at theta_K: whole output channels by the L1 norm of their filters.

A unit (channels coupled by residual adds, concatenations, depthwise convs) is scored by the mean of
its filters' L1 norms, each divided by its layer's mean filter norm so layers of different fan-in
compare (the paper ranks within a layer; a global budget needs the normalization). Selection is the
shared channel selection: ``--sparsity`` of the channels, or a ``--budget params/macs/latency``.
"""

from __future__ import annotations

import torch

from sparsekit.methods.base import METHODS, ScoreMethod, SearchContext


@METHODS.register("magnitude-channel", help="L1-norm filter pruning: channels by filter L1 norm (channel only)")
class MagnitudeChannelMethod(ScoreMethod):
    uses_data = False
    granularities = ("channel",)

    def score(self, ctx: SearchContext) -> dict[str, torch.Tensor]:
        return {n: p.detach().abs().cpu() for n, p in ctx.params().items()}  # row mean of |w| = L1 / fan-in
