"""tp-group-norm: Torch-Pruning's group L2-norm importance (GroupMagnitudeImportance, p = 2), data-free."""

from __future__ import annotations

from sparsekit.methods._tp_importance import tp_search
from sparsekit.methods.base import METHODS, SearchContext, SearchMethod, SearchResult


@METHODS.register("tp-group-norm", help="Torch-Pruning group L2-norm importance over coupled channels (channel only)")
class TPGroupNormMethod(SearchMethod):
    uses_data = False
    granularities = ("channel",)
    cost_budgets = True

    def search(self, ctx: SearchContext) -> SearchResult:
        import torch_pruning as tp

        return tp_search(ctx, tp.importance.GroupMagnitudeImportance(p=2))
