"""Tiny complete runs for the deployment tests (export, bench, formats, check, advise), cached per session."""

from __future__ import annotations

from pathlib import Path

import torch

from sparsekit.binary_mask import Mask
from sparsekit.masking.prunable import prunable_tensors

_CACHE: dict[tuple, Path] = {}


def make_run(root_factory, model: str, data: str = "synthetic:1x16x16", sparsity: float = 0.9,
             granularity: str = "weight", finetune_epochs: int = 0) -> Path:
    """A complete run (0 pretrain epochs) built through the real pipeline; cached by its config."""
    from sparsekit.pipeline import PruneConfig, prune

    key = (model, data, sparsity, granularity, finetune_epochs)
    if key not in _CACHE:
        out = root_factory.mktemp("deploy") / model.replace(":", "_")
        prune(PruneConfig(model, data, "magnitude", sparsity, str(out), pretrain_epochs=0,
                          finetune_epochs=finetune_epochs, granularity=granularity))
        _CACHE[key] = out
    return _CACHE[key]


def channel_mask(model: torch.nn.Module, fraction: float = 0.5, seed: int = 0, skip_last: bool = True) -> Mask:
    """Randomly mask whole output channels of every prunable weight (the classifier head kept)."""
    g = torch.Generator().manual_seed(seed)
    weights = prunable_tensors(model)
    names = list(weights)
    out = {}
    for i, (n, w) in enumerate(weights.items()):
        keep = torch.ones(w.shape[0], dtype=torch.bool)
        if not (skip_last and i == len(names) - 1):
            keep[torch.randperm(w.shape[0], generator=g)[: int(w.shape[0] * fraction)]] = False
        out[n] = keep.reshape(-1, *([1] * (w.dim() - 1))).expand_as(w).clone()
    return Mask(out)
