"""SNIP (Lee et al. 2019; docs/algorithms.md §4.3): sensitivity |w * dL/dw| at theta_K, exact top-k.

Data: ``per_class * num_classes`` shuffled training images (Synaptic-Flow's sampler, not stratified),
gradients accumulated in batches of 256. BatchNorm uses batch statistics and every buffer is restored
(see sparsekit.methods._search_mode); ``bn="running"`` scores in plain eval mode instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sparsekit.errors import SettingError
from sparsekit.methods._samples import draw_samples
from sparsekit.methods._search_mode import check_bn_mode, search_mode
from sparsekit.methods.base import METHODS, ScoreMethod, SearchContext

SCORE_BATCH = 256


@dataclass(frozen=True)
class Options:
    per_class: int = field(default=10, metadata={"help": "scoring images per class (x num_classes in total)"})
    bn: str = field(default="batch", metadata={"help": "batch or running BatchNorm statistics while scoring"})

    def __post_init__(self) -> None:
        if self.per_class <= 0:
            raise SettingError(f"{{method}} snip: per_class must be > 0, got {self.per_class}", "method")
        check_bn_mode(self.bn, "{method} snip")


@METHODS.register("snip", help="SNIP connection sensitivity |w * dL/dw| at the rewind point")
class SnipMethod(ScoreMethod):
    Options = Options

    def score(self, ctx: SearchContext) -> dict[str, torch.Tensor]:
        x_all, y_all = draw_samples(ctx.data, self.options.per_class, ctx.seed + 31, stratified=False)
        model = ctx.model.to(ctx.device)
        weights = ctx.params()
        grads = {n: torch.zeros_like(w) for n, w in weights.items()}
        with search_mode(model, bn=self.options.bn, freeze=False):
            for i in range(0, len(y_all), SCORE_BATCH):
                x, y = x_all[i : i + SCORE_BATCH].to(ctx.device), y_all[i : i + SCORE_BATCH].to(ctx.device)
                # sum reduction so that micro-batching gives the gradient of the whole sample's loss
                loss = F.cross_entropy(model(x), y, reduction="sum") / len(y_all)
                for n, g in zip(weights, torch.autograd.grad(loss, list(weights.values())), strict=True):
                    grads[n] += g
        scores = {n: (w.detach() * grads[n]).abs() for n, w in weights.items()}
        total = sum(float(s.sum()) for s in scores.values()) or 1.0
        return {n: (s / total).cpu() for n, s in scores.items()}
