"""GraSP (Wang et al. 2020) and GraSP-magnitude (Frankle et al. 2021) (docs/algorithms.md §4.4).

S = -theta * (H g), H the Hessian and g the gradient of CE(f(x) / T, y) w.r.t. the prunable weights,
T = 200, ``per_class`` images per class (stratified). GraSP removes the weights with the *largest* S,
i.e. keeps the smallest S; we hand ``-S = theta * Hg`` to the shared top-k so "keep top" is GraSP
(the same ordering as Synaptic-Flow's re-implementation). Hg is never passed through abs() — that
is the sign bug of TLAB's later GraSP. GraSP-magnitude ranks by |S| and keeps the largest.

Deviation: the original scores a copy whose Linear layers are re-initialized with Xavier-normal
(``reinit=True``); at a rewind point theta_K that would discard trained weights, so it is off by
default (``reinit_linear=true`` restores it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sparsekit.errors import SettingError
from sparsekit.methods._samples import draw_samples
from sparsekit.methods._search_mode import check_bn_mode, search_mode
from sparsekit.methods.base import METHODS, ScoreMethod, SearchContext

SCORE_BATCH = 256


@dataclass(frozen=True)
class Options:
    per_class: int = field(default=10, metadata={"help": "scoring images per class"})
    temperature: float = field(default=200.0, metadata={"help": "logits are divided by T before the loss"})
    reinit_linear: bool = field(default=False, metadata={"help": "score a copy with Xavier-normal Linear layers"})
    bn: str = field(default="batch", metadata={"help": "batch or running BatchNorm statistics while scoring"})

    def __post_init__(self) -> None:
        if self.per_class <= 0 or not self.temperature > 0:
            raise SettingError("{method} grasp: per_class and temperature must be > 0", "method")
        check_bn_mode(self.bn, "{method} grasp")


def grasp_hg(model: nn.Module, weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             temperature: float) -> dict[str, torch.Tensor]:
    """Hessian-gradient product H g over ``weights`` (parameters of ``model``), micro-batched.

    g = dL/dw of the whole sample (detached); Hg = d(g_stop . dL/dw)/dw (double backprop).
    """
    params = list(weights.values())
    n = len(y)

    def loss_of(i: int) -> torch.Tensor:
        xb, yb = x[i : i + SCORE_BATCH], y[i : i + SCORE_BATCH]
        return F.cross_entropy(model(xb) / temperature, yb, reduction="sum") / n

    g = [torch.zeros_like(p) for p in params]
    for i in range(0, n, SCORE_BATCH):
        for acc, gi in zip(g, torch.autograd.grad(loss_of(i), params), strict=True):
            acc += gi
    hg = [torch.zeros_like(p) for p in params]
    for i in range(0, n, SCORE_BATCH):
        gi = torch.autograd.grad(loss_of(i), params, create_graph=True)
        z = sum((a.detach() * b).sum() for a, b in zip(g, gi, strict=True))
        for acc, h in zip(hg, torch.autograd.grad(z, params), strict=True):
            acc += h
    return dict(zip(weights, hg, strict=True))


class _GraspBase(ScoreMethod):
    Options = Options

    def grasp_scores(self, ctx: SearchContext) -> dict[str, torch.Tensor]:
        """S = -theta * Hg per prunable tensor, normalized by |sum S| (sign kept)."""
        o: Options = self.options
        x, y = draw_samples(ctx.data, o.per_class, ctx.seed + 37, stratified=True)
        model = ctx.model.to(ctx.device)
        if o.reinit_linear:
            model = copy.deepcopy(model)
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_normal_(m.weight)
        params = dict(model.named_parameters())
        weights = {n: params[n] for n in ctx.names}
        with search_mode(model, bn=o.bn, freeze=False):
            hg = grasp_hg(model, weights, x.to(ctx.device), y.to(ctx.device), o.temperature)
        s = {n: -(w.detach() * hg[n]) for n, w in weights.items()}
        norm = abs(sum(float(v.sum()) for v in s.values())) + 1e-10
        return {n: (v / norm).cpu() for n, v in s.items()}


@METHODS.register("grasp", help="GraSP: remove the largest -theta*Hg (gradient-flow preservation)")
class GraspMethod(_GraspBase):
    # signed scores: the base's channel aggregation (mean of |score|) would destroy the sign
    granularities = ("weight",)

    def score(self, ctx: SearchContext) -> dict[str, torch.Tensor]:
        # keep the smallest S  <=>  keep the largest -S
        return {n: -s for n, s in self.grasp_scores(ctx).items()}


@METHODS.register("grasp-magnitude", help="GraSP-magnitude: keep the largest |theta*Hg| (Frankle et al. 2021)")
class GraspMagnitudeMethod(_GraspBase):
    def score(self, ctx: SearchContext) -> dict[str, torch.Tensor]:
        return {n: s.abs() for n, s in self.grasp_scores(ctx).items()}
