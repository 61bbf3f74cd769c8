"""edge-popup (Ramanujan et al., CVPR 2020; docs/algorithms.md §4.7): strong tickets by score top-k.

Every prunable weight gets a real score s; each forward keeps, per layer, the top-k fraction of |s|
(exactly ``budget_keep(d_l, sparsity)`` weights) and the backward pass sends the gradient w.r.t. the
binary mask straight through to the scores. Weights stay frozen; SGD (lr 0.1, cosine, momentum 0.9,
weight decay 1e-4) trains the scores only. Intended with ``--weight-init signed-kaiming-constant``.

Deviations from the reference code: the cosine schedule is per step rather than per epoch (short
searches still anneal); BN is non-affine as in the reference (scale 1, shift 0; ``bn_affine=true``
keeps theta_K's) and normalizes with batch statistics during the search, its running statistics are
recomputed for the final mask (returned in ``state_updates``), exactly as for ``gates``; the final
mask is re-selected with the toolkit's exact, deterministic per-layer top-k (``select`` with
layerwise forced). Options beyond the reference: ``topk=global`` (one top-k over all layers) and
``weight_scale=density`` (frozen weights x 1 / sqrt(layer density), the reference's scaled init
applied to whatever init the run has; sparsekit.methods._strong).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sparsekit import paths
from sparsekit.errors import TrainingDivergedError, UsageError
from sparsekit.masking.bn_stats import recalibrate_for_mask, set_bn_train
from sparsekit.masking.masked_forward import freeze, masked_call
from sparsekit.masking.select.topk import budget_keep
from sparsekit.methods._search_loop import (
    SCORE_INIT_SALT,
    cosine,
    derived_seed,
    plan_search,
    run_search,
)
from sparsekit.methods._strong import check_weight_scale, prepare_frozen, scale_factor
from sparsekit.methods.base import (
    METHODS,
    SearchContext,
    SearchMethod,
    SearchResult,
    select,
)

DEFAULT_SEARCH_EPOCHS = 10


@dataclass(frozen=True)
class Options:
    """Options of ``--method edge-popup`` (defaults = the reference small-scale config)."""

    lr: float = field(default=0.1, metadata={"help": "SGD learning rate of the scores (cosine to 0)"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=1e-4, metadata={"help": "weight decay on the scores"})
    batch_size: int = field(default=0, metadata={"help": "search batch size (0 = the run's --batch-size)"})
    bn_batches: int = field(default=50, metadata={"help": "batches used to recompute BN statistics"})
    log_every: int = field(default=10, metadata={"help": "steps between search.jsonl records"})
    weight_scale: str = field(default="none", metadata={"help": "density (frozen weights x 1/sqrt(layer density)) or none"})
    bn_affine: bool = field(default=False, metadata={"help": "keep theta_K's BN scale/shift (false: non-affine BN, as the reference)"})
    topk: str = field(default="layer", metadata={"help": "layer (the reference: top-k of |scores| in every layer) or global (one top-k over all layers)"})

    def __post_init__(self) -> None:
        check_weight_scale(self.weight_scale, "--method edge-popup")
        if self.topk not in ("layer", "global"):
            raise UsageError(f"edge-popup option topk must be layer or global, got {self.topk!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"edge-popup option lr must be a positive number, got {self.lr}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise UsageError("edge-popup options momentum and weight_decay must be >= 0")
        if self.batch_size < 0 or self.bn_batches < 0 or self.log_every <= 0:
            raise UsageError("edge-popup options batch_size, bn_batches must be >= 0 and log_every > 0")


class _TopKStraightThrough(torch.autograd.Function):
    """Forward: 0/1 mask of the k largest entries. Backward: identity (straight-through)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int) -> torch.Tensor:  # noqa: ARG004
        out = torch.zeros_like(scores)
        flat = out.view(-1)
        if k > 0:
            flat[torch.topk(scores.reshape(-1), k, sorted=False).indices] = 1.0
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ARG004
        return grad, None


def _init_scores(w: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """kaiming_uniform(a=sqrt(5)) of the weight's shape (PyTorch's default layer init)."""
    s = torch.empty(w.shape, dtype=torch.float32)
    nn.init.kaiming_uniform_(s, a=math.sqrt(5), generator=g)
    return s


def _global_masks(scores: dict[str, nn.Parameter], k: int) -> dict[str, torch.Tensor]:
    """0/1 masks of the k largest |scores| over all layers, straight-through to every score."""
    names = list(scores)
    flat = torch.cat([scores[n].abs().reshape(-1) for n in names])
    m = _TopKStraightThrough.apply(flat, k)
    out, pos = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = m[pos:pos + size].view_as(scores[n])
        pos += size
    return out


class _EdgePopupSearch:
    """One edge-popup search: the frozen network, one score per weight, SGD on the scores."""

    def __init__(self, ctx: SearchContext, o: Options) -> None:
        self.ctx, self.o = ctx, o
        model = ctx.model.to(torch.device(ctx.device))
        freeze(model)
        set_bn_train(model)
        self.model, self.frozen = prepare_frozen(model, ctx.names, 1.0 - ctx.sparsity, o.weight_scale,
                                                 o.bn_affine)
        g = torch.Generator().manual_seed(derived_seed(ctx.seed, SCORE_INIT_SALT))
        params = ctx.params()
        self.scores = {n: nn.Parameter(_init_scores(w, g).to(ctx.device)) for n, w in params.items()}
        self.keep = {n: budget_keep(w.numel(), ctx.sparsity) for n, w in params.items()}
        self.total_keep = sum(self.keep.values())
        self.opt = torch.optim.SGD(self.scores.values(), lr=o.lr, momentum=o.momentum,
                                   weight_decay=o.weight_decay)

    def step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> float:
        """One step: CE through the top-k masks, straight-through to the scores, SGD."""
        scores = self.scores
        if self.o.topk == "global":
            masks = _global_masks(scores, self.total_keep)
        else:
            masks = {n: _TopKStraightThrough.apply(s.abs(), self.keep[n]) for n, s in scores.items()}
        loss = F.cross_entropy(masked_call(self.model, masks, x), y)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(f"edge-popup search loss became {loss.item()} at step {step}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.ctx.dist is not None:
            for s in scores.values():
                avg = self.ctx.dist.all_reduce_mean(s.grad)
                if avg is not None:
                    s.grad = avg
        self.opt.step()
        return loss.detach().item()


@METHODS.register("edge-popup", help="strong tickets: per-layer top-k of learned scores over frozen weights")
class EdgePopupMethod(SearchMethod):
    """Train scores over frozen weights; the per-layer top-k of |scores| is the mask."""

    Options = Options
    learned_search = True
    default_finetune_epochs = 0
    #: the mask is per-layer top-k whatever --layerwise says (read by the contract tests)
    always_layerwise = True

    def search(self, ctx: SearchContext) -> SearchResult:
        o: Options = self.options
        s = _EdgePopupSearch(ctx, o)
        plan = plan_search(ctx, "edge-popup", o.batch_size or ctx.train_cfg.batch_size,
                           lambda per_epoch: DEFAULT_SEARCH_EPOCHS)
        # per step, to 0 (the record's lr is the one the next step uses, as torch's LambdaLR reported it)
        lr_at = cosine(o.lr, plan.total, torch_rounding=True)
        density = f"{1.0 - ctx.sparsity:.4%} (exact top-k)"
        loop = run_search(
            ctx, plan, s.step, opt=s.opt, lr_at=lr_at,
            log_path=paths.search_log(ctx.run_dir) if ctx.run_dir is not None else None,
            record=lambda step, epoch, loss: {"step": step, "epoch": epoch + 1, "loss": loss,
                                              "lr": lr_at(step)},
            progress_fields=lambda loss: {"density": density, "loss": loss}, log_every=o.log_every,
        )
        # the reference is per-layer: force layerwise whatever the run asked (topk=global: one ranking)
        final = {n: p.detach().abs().cpu() for n, p in s.scores.items()}
        mask = select(final, dataclasses.replace(ctx, layerwise=o.topk == "layer", granularity="weight"))
        recalibrated = recalibrate_for_mask(s.model, mask, ctx, plan.batch_size, o.bn_batches)
        state_updates = {**s.frozen, **recalibrated}
        info = {
            "search_epochs": plan.epochs,
            "steps": loop.steps,
            "batch_size": plan.batch_size,
            "search_s": loop.seconds,
            "sparsity": mask.sparsity,
            "layerwise": o.topk == "layer",
            "weight_scale": o.weight_scale,
            "weight_scale_factor": scale_factor(1.0 - ctx.sparsity, o.weight_scale),
            "bn_affine": o.bn_affine,
            "bn_recalibrated": sorted({k.rsplit(".", 1)[0] for k in state_updates}),
        }
        return SearchResult(mask, info, state_updates=state_updates)
