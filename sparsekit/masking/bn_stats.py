"""BatchNorm running statistics for a masked network.

A strong-ticket search changes which weights are active but never the weights, so the BN running
statistics stored at theta_K describe the *dense* network. Evaluated in eval mode, the ticket needs
statistics of the *masked* network: ``recalibrate`` recomputes them as an exact average over a
number of training batches (momentum=None) and returns them, so the pipeline can load them into the
ticket (``SearchResult.state_updates``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sparsekit.masking.masked_forward import binary_multipliers, masked_call
from sparsekit.progress import step, track


def bn_modules(model: nn.Module) -> dict[str, _BatchNorm]:
    """{module FQN: BN module} for BN layers that track running statistics."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats
    }


def set_bn_train(model: nn.Module) -> None:
    """Eval mode everywhere (no dropout) except BN, which normalizes with batch statistics."""
    model.eval()
    for m in bn_modules(model).values():
        m.train()


@torch.no_grad()
def recalibrate(
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor],
    dist: Any = None,
) -> dict[str, torch.Tensor]:
    """Recompute BN running statistics of ``forward`` (the masked network) over ``batches``.

    Returns {buffer FQN: tensor} (CPU copies of running_mean, running_var, num_batches_tracked);
    empty when the model has no BN. With ``dist`` the statistics are averaged across ranks.
    """
    bns = bn_modules(model)
    if not bns:
        return {}
    was_training = model.training
    momenta = {n: m.momentum for n, m in bns.items()}
    set_bn_train(model)
    for m in bns.values():
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts equally
    with step("BN statistics of the masked network"):
        for x in track(batches, None, "BN statistics of the masked network, batch"):
            forward(x)
    for n, m in bns.items():
        m.momentum = momenta[n]
        if dist is not None:
            for buf in (m.running_mean, m.running_var):
                avg = dist.all_reduce_mean(buf)
                if avg is not None:
                    buf.copy_(avg)
    model.train(was_training)
    out: dict[str, torch.Tensor] = {}
    for n, m in bns.items():
        for b in ("running_mean", "running_var", "num_batches_tracked"):
            out[f"{n}.{b}"] = getattr(m, b).detach().cpu().clone()
    return out


def recalibrate_for_mask(model: nn.Module, mask: Any, ctx: Any, batch_size: int, num_batches: int) -> dict[str, torch.Tensor]:
    """``recalibrate`` for ``model`` with a binary ``Mask`` over ``num_batches`` training batches of a
    search context ``ctx`` (sharded by rank when distributed). Empty when there is no BN."""
    if num_batches <= 0 or not bn_modules(model):
        return {}
    device = torch.device(ctx.device)
    mult = binary_multipliers(mask, device)
    batches = ctx.data.batches(
        "train", batch_size, shuffle=True, seed=ctx.seed * 100_003 + 97, limit=num_batches * batch_size,
        rank=getattr(ctx.dist, "rank", 0), world_size=getattr(ctx.dist, "world_size", 1),
    )
    return recalibrate(model, lambda x: masked_call(model, mult, x.to(device)), (x for x, _ in batches), ctx.dist)


#: the training batches BN statistics are recomputed over (pipeline: before and after fine-tuning)
RECAL_BATCHES, RECAL_BATCH_SIZE = 20, 256


def recalibrate_on_data(model: nn.Module, data: Any, seed: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    """``recalibrate`` for an already masked (or dense) ``model`` over ``RECAL_BATCHES`` shuffled training
    batches of ``RECAL_BATCH_SIZE`` of a DataBundle, in the order ``seed`` gives. Empty without BN."""
    if not bn_modules(model):
        return {}
    batches = data.batches("train", RECAL_BATCH_SIZE, shuffle=True, seed=seed, limit=RECAL_BATCH_SIZE * RECAL_BATCHES)
    return recalibrate(model, model, (x.to(device) for x, _ in batches))
