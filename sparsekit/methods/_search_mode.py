"""The model state during a mask search: frozen weights, eval mode, chosen BatchNorm statistics.

BatchNorm (docs/algorithms.md §2.8): the CTS reference keeps no BN running statistics, so BN always
normalizes with the current batch. With standard BN we reproduce that by putting BN modules in train
mode (batch statistics) while everything else is in eval mode, and we snapshot every buffer on entry and
restore it on exit, so running statistics (and ``num_batches_tracked``) are never corrupted by a search.
``bn="running"`` instead keeps BN in eval mode (running statistics; SynFlow needs this).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from sparsekit.errors import SettingError

BN_MODES = ("batch", "running")


def check_bn_mode(mode: str, where: str) -> None:
    if mode not in BN_MODES:
        raise SettingError(f"{where}: bn must be one of {', '.join(BN_MODES)}, got {mode!r}", "method")


@contextmanager
def search_mode(model: nn.Module, bn: str = "batch", freeze: bool = True) -> Iterator[nn.Module]:
    """Context manager: eval mode (BN per ``bn``), parameters frozen, buffers restored on exit.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        >>> with search_mode(net):
        ...     _ = net(torch.randn(4, 2))
        >>> float(net[1].running_mean.abs().sum())
        0.0
    """
    check_bn_mode(bn, "search_mode")
    modes = {m: m.training for m in model.modules()}
    grads = {p: p.requires_grad for p in model.parameters()}
    saved = {n: b.detach().clone() for n, b in model.named_buffers()}
    model.eval()
    if bn == "batch":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
    if freeze:
        for p in model.parameters():
            p.requires_grad_(False)
    try:
        yield model
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in saved:
                    b.copy_(saved[n])
        for m, training in modes.items():
            m.train(training)
        for p, flag in grads.items():
            p.requires_grad_(flag)
