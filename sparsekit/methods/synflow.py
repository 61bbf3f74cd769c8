"""SynFlow (Tanaka et al. 2020): iterative data-free synaptic-flow scores (docs/algorithms.md §4.5).

On a float64 copy with every parameter and buffer replaced by its absolute value and BatchNorm in eval
mode (running statistics), R = sum(f(1)) for one all-ones input of the data's shape; the score of a
weight is |theta * dR/dtheta| under the current mask. Over ``rounds`` rounds (100) the density follows
the exponential schedule kappa^(t / rounds), each round rescoring the already-masked network with a
global (or --layerwise) exact top-k. The returned scores are those of the last round, with every weight
pruned in an earlier round at -inf so the shared final top-k can never revive it.

``invert=True`` keeps the lowest-scoring survivors in every round (score-inversion sanity check).
Only weight granularity: the rounds select individual weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch.func import functional_call

from sparsekit.errors import SettingError
from sparsekit.masking.select.topk import budget_keep
from sparsekit.methods.base import METHODS, ScoreMethod, SearchContext


@dataclass(frozen=True)
class Options:
    rounds: int = field(default=100, metadata={"help": "pruning rounds (exponential density schedule)"})
    invert: bool = field(default=False, metadata={"help": "keep the lowest scores (sanity check)"})

    def __post_init__(self) -> None:
        if self.rounds <= 0:
            raise SettingError(f"{{method}} synflow: rounds must be > 0, got {self.rounds}", "method")


@METHODS.register("synflow", help="SynFlow: iterative (100 rounds) data-free synaptic-flow scores")
class SynFlowMethod(ScoreMethod):
    Options = Options
    uses_data = False
    granularities = ("weight",)

    def score(self, ctx: SearchContext) -> dict[str, torch.Tensor]:
        o: Options = self.options
        net = copy.deepcopy(ctx.model).to(ctx.device).double().eval()
        with torch.no_grad():
            for t in net.state_dict().values():
                if t.is_floating_point():
                    t.abs_()
        for p in net.parameters():
            p.requires_grad_(False)
        weights = {n: net.get_parameter(n).detach() for n in ctx.names}
        ones = torch.ones(1, *ctx.data.in_shape, dtype=torch.float64, device=ctx.device)
        keep = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
        sign = -1.0 if o.invert else 1.0
        density = 1.0 - ctx.sparsity
        for t in range(1, o.rounds + 1):
            scores = self._round_scores(net, weights, keep, ones)
            ranked = {n: torch.where(keep[n], sign * s, torch.tensor(float("-inf"), dtype=s.dtype, device=s.device))
                      for n, s in scores.items()}
            if t == o.rounds:
                return {n: s.cpu() for n, s in ranked.items()}
            keep = _fast_topk(ranked, 1.0 - density ** (t / o.rounds), ctx.layerwise)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _round_scores(net, weights, keep, ones) -> dict[str, torch.Tensor]:
        masked = {n: (w * keep[n]).requires_grad_(True) for n, w in weights.items()}
        r = functional_call(net, masked, (ones,)).sum()
        grads = torch.autograd.grad(r, list(masked.values()))
        # dR/d(w*m) * (w*m): masked weights score exactly 0
        return {n: (g * masked[n].detach()).abs() for (n, _), g in zip(masked.items(), grads, strict=True)}


def _fast_topk(scores: dict[str, torch.Tensor], sparsity: float, layerwise: bool) -> dict[str, torch.Tensor]:
    """Exact-count top-k for the intermediate rounds via ``torch.topk`` (~20x faster than the shared
    stable sort on 100 rounds; tie order is deterministic but not by index). The final round uses
    the shared ``select`` with its index tie-break."""

    def keep_of(flat: torch.Tensor, k: int) -> torch.Tensor:
        keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        keep[torch.topk(flat, k, sorted=False).indices] = True
        return keep

    if layerwise:
        return {n: keep_of(s.reshape(-1), budget_keep(s.numel(), sparsity)).reshape(s.shape) for n, s in scores.items()}
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    keep = keep_of(flat, budget_keep(flat.numel(), sparsity))
    out, pos = {}, 0
    for n, s in scores.items():
        out[n] = keep[pos : pos + s.numel()].reshape(s.shape)
        pos += s.numel()
    return out
