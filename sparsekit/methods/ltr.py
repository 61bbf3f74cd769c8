"""Lottery Ticket Rewinding (IMP with rewinding to theta_K) (docs/algorithms.md §4.6).

Round i: rewind every weight and BN buffer to theta_K, train ``ctx.finetune_epochs`` epochs from there
with the current mask (sparsekit.train.loop.train_epochs, the run's recipe, fresh optimizer), then
remove ``prune_fraction`` (20 %) of the surviving weights with the smallest |w| globally (or per layer
with --layerwise). The round that would cross the target instead lands exactly on it via the shared
exact top-k. The final mask is returned untrained: the pipeline's fine-tune stage trains it, so the
ticket's wall time (search + fine-tune) covers every round, as in the reference's cumulative timing.

Every round's mask is written under ``rounds/round_XX/`` (safetensors + round.json with its sparsity
and the test accuracy reached by training it). Deviation from open_lth/TLAB: the last round keeps
exactly the budget (no off-by-one) instead of a plain 20 % step.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from sparsekit import paths
from sparsekit._io import write_json
from sparsekit.binary_mask import Mask
from sparsekit.errors import SettingError
from sparsekit.masking.select.topk import topk_mask
from sparsekit.methods.base import METHODS, SearchContext, SearchMethod, SearchResult, select
from sparsekit.train.loop import evaluate, train_epochs

#: file name of a round's metadata inside paths.round_dir(...)


@dataclass(frozen=True)
class Options:
    prune_fraction: float = field(default=0.2, metadata={"help": "fraction of survivors removed per round"})
    eval_rounds: bool = field(default=True, metadata={"help": "record each round's test accuracy"})

    def __post_init__(self) -> None:
        if not 0.0 < self.prune_fraction < 1.0:
            raise SettingError(f"{{method}} ltr: prune_fraction must be in (0, 1), got {self.prune_fraction}", "method")


def round_densities(target_density: float, prune_fraction: float) -> list[float]:
    """Densities of the masks trained in rounds 1..n (round 0 is dense); the last equals the target.

    Example:
        >>> [round(d, 3) for d in round_densities(0.6, 0.2)]
        [0.8, 0.6]
    """
    keep = 1.0 - prune_fraction
    # the tolerance absorbs float error when the target is exactly keep**j (e.g. 1 - 0.8**22)
    n = max(1, math.ceil(math.log(target_density) / math.log(keep) - 1e-6))
    return [keep**i for i in range(1, n)] + [target_density]


@METHODS.register("ltr", help="lottery ticket rewinding: IMP, 20% global magnitude per round, rewind to theta_K")
class LTRMethod(SearchMethod):
    Options = Options

    def search(self, ctx: SearchContext) -> SearchResult:
        o: Options = self.options
        if ctx.sparsity <= 0.0:
            raise SettingError("{method} ltr needs sparsity > 0", "method")
        # train a copy so ctx.model keeps theta_K (the contract for methods is "weights untouched")
        model = copy.deepcopy(ctx.model)
        theta_k = ctx.theta_k if ctx.theta_k is not None else ctx.model.state_dict()
        theta_k = {k: v.detach().clone() for k, v in theta_k.items()}
        densities = round_densities(1.0 - ctx.sparsity, o.prune_fraction)
        mask: Mask | None = None
        rounds: list[dict[str, Any]] = []
        t_start = time.perf_counter()
        for i, density in enumerate(densities):
            t0 = time.perf_counter()
            model.load_state_dict(theta_k)  # rewind weights and BN buffers
            train_epochs(model, ctx.data, ctx.train_cfg, ctx.finetune_epochs, mask=mask, seed=ctx.seed,
                         first_epoch=ctx.pretrain_epochs, stage=f"ltr-round-{i}", ddp=ctx.dist)
            acc = evaluate(model, ctx.data, device=ctx.device)["accuracy"] if o.eval_rounds else None
            rounds.append(self._save_round(ctx, i, mask, acc, time.perf_counter() - t0, time.perf_counter() - t_start))
            ctx.progress(f"ltr round {i}: density {1.0 if mask is None else mask.density:.4%}, accuracy {acc}")
            mask = self._prune(ctx, model, mask, density, last=i == len(densities) - 1)
        final = self._save_round(ctx, len(densities), mask, None, 0.0, time.perf_counter() - t_start)
        rounds.append(final)
        info = {
            "rounds": len(densities),
            "trained_rounds": len(densities),
            "epochs_per_round": ctx.finetune_epochs,
            "cumulative_train_s": time.perf_counter() - t_start,
            "round_densities": [r["density"] for r in rounds],
            "round_accuracies": [r["accuracy"] for r in rounds],
        }
        return SearchResult(mask, info)

    @staticmethod
    def _prune(ctx: SearchContext, model: torch.nn.Module, mask: Mask | None, density: float, last: bool) -> Mask:
        # |w| of survivors; pruned weights at -inf so a later round can never revive them
        scores = {}
        for n in ctx.names:
            w = model.get_parameter(n).detach().abs().double().cpu()
            scores[n] = w if mask is None else torch.where(mask[n], w, torch.tensor(float("-inf"), dtype=w.dtype))
        if last:
            return select(scores, ctx)  # exact target budget (global or layerwise)
        return Mask(topk_mask(scores, 1.0 - density, layerwise=ctx.layerwise))

    @staticmethod
    def _save_round(ctx: SearchContext, i: int, mask: Mask | None, acc: float | None, secs: float,
                    cumulative: float) -> dict[str, Any]:
        if mask is None:
            numel = sum(ctx.model.get_parameter(n).numel() for n in ctx.names)
            mask = Mask({n: torch.ones(ctx.model.get_parameter(n).shape, dtype=torch.bool) for n in ctx.names})
        else:
            numel = mask.numel
        rec = {
            "round": i,
            "sparsity": mask.sparsity,
            "density": mask.density,
            "kept": mask.kept,
            "numel": numel,
            "accuracy": acc,  # None for the final mask: the pipeline's fine-tune stage trains it
            "train_s": secs,
            "cumulative_s": cumulative,
        }
        if ctx.run_dir is not None:
            rd = paths.round_dir(ctx.run_dir, i)
            mask.save(paths.mask(rd))
            write_json(paths.round_json(ctx.run_dir, i), rec)
        return rec
