"""Tiny networks shared by the search-method tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsekit.models.registry import ModelSpec, build_model


def bn_net(seed: int) -> nn.Module:
    """Two conv+BN blocks and a classifier: the smallest net that exercises BatchNorm handling."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )


def lenet(data) -> nn.Module:
    return build_model(ModelSpec("lenet300", data.in_shape, 10), seed=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread is faster and does not fight other jobs for the 2 shared cores.
    Import it into a test module to apply it there (autouse)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
