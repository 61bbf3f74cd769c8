"""Torch-Pruning's group importance criteria as channel scores of our coupled units.

Torch-Pruning scores each dependency group (the layers coupled to one root layer) per root channel;
every root channel maps to one of our units (sparsekit.masking.channel_space), so a criterion's
scores rank exactly the units the structured converter removes. Selection is ours (exact budgets,
``--channel-multiple``), so tp-* methods and our searches differ only in how channels are scored.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sparsekit.masking.coupling.channel_groups import (
    _LAYERS,
    _example,
    _graph,
    _ignored_output_layers,
)
from sparsekit.masking.coupling.channel_space import UnitSpace
from sparsekit.methods.base import SearchContext, SearchResult, select_unit_scores


def accumulate_gradients(ctx: SearchContext, batches: int, batch_size: int) -> None:
    """Sum of the training loss gradients over ``batches`` mini-batches into the model's ``.grad``
    (what Taylor importance multiplies with the weights); BN normalizes with batch statistics."""
    model = ctx.model
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None
    model.train()
    device = torch.device(ctx.device)
    for i, (x, y) in enumerate(ctx.data.batches("train", batch_size, shuffle=True, seed=ctx.seed * 31 + 5)):
        if i >= batches:
            break
        F.cross_entropy(model(x.to(device)), y.to(device)).backward()


def unit_scores(ctx: SearchContext, space: UnitSpace, importance: Any) -> torch.Tensor:
    """(U,) mean of the criterion's root-channel scores over the groups that reach each unit."""
    model = ctx.model
    was_training = model.training
    model.eval()
    example = _example(model, tuple(ctx.data.in_shape))
    names = {m: n for n, m in model.named_modules()}
    unit_of = {row: u for u, rows in enumerate(space.units.units) for row in rows}
    total = torch.zeros(space.size, dtype=torch.float64)
    count = torch.zeros(space.size, dtype=torch.float64)
    dg = _graph(model, example)
    for group in dg.get_all_groups(ignored_layers=_ignored_output_layers(model, example), root_module_types=_LAYERS):
        imp = importance(group)
        if imp is None:
            continue
        imp = imp.detach().double().cpu()
        for item in group.items:
            mod = item.dep.target.module
            if not (isinstance(mod, _LAYERS) and dg.is_out_channel_pruning_fn(item.dep.handler)):
                continue
            for i, r in zip(item.idxs, item.root_idxs, strict=True):
                u = unit_of.get((f"{names[mod]}.weight", int(i)))
                if u is not None:
                    total[u] += float(imp[r])
                    count[u] += 1
    model.train(was_training)
    # a unit no group reached (an untraceable model) has no score: it goes first
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("-inf")))


def tp_search(ctx: SearchContext, importance: Any) -> SearchResult:
    space = UnitSpace(ctx.model, ctx.names, tuple(ctx.data.in_shape))
    scores = unit_scores(ctx, space, importance)
    mask, info = select_unit_scores(scores, space, ctx)
    return SearchResult(mask, {**info, "scored_units": int(torch.isfinite(scores).sum())})
