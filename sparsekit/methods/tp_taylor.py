"""tp-taylor: Torch-Pruning's GroupTaylorImportance (|w * dL/dw| summed over each coupled group)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sparsekit.errors import SettingError
from sparsekit.methods._tp_importance import accumulate_gradients, tp_search
from sparsekit.methods.base import METHODS, SearchContext, SearchMethod, SearchResult


@dataclass(frozen=True)
class Options:
    batches: int = field(default=8, metadata={"help": "training mini-batches whose loss gradients are summed"})
    batch_size: int = field(default=128, metadata={"help": "their batch size"})

    def __post_init__(self) -> None:
        if self.batches < 1 or self.batch_size < 1:
            raise SettingError("{method} tp-taylor: batches and batch_size must be >= 1", "method")


@METHODS.register("tp-taylor", help="Torch-Pruning group Taylor importance over coupled channels (channel only)")
class TPTaylorMethod(SearchMethod):
    Options = Options
    granularities = ("channel",)
    cost_budgets = True

    def search(self, ctx: SearchContext) -> SearchResult:
        import torch_pruning as tp

        accumulate_gradients(ctx, self.options.batches, self.options.batch_size)
        return tp_search(ctx, tp.importance.GroupTaylorImportance())
