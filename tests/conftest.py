"""Shared fixtures: tiny synthetic data and a complete tiny run directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def synthetic():
    from sparsekit.data.synthetic import make_synthetic

    return make_synthetic()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A complete lenet300 magnitude ticket on synthetic data (90% sparsity)."""
    from sparsekit.pipeline import PruneConfig, prune

    out = tmp_path_factory.mktemp("runs") / "tiny"
    prune(PruneConfig("lenet300", "synthetic", "magnitude", 0.9, str(out), pretrain_epochs=1, finetune_epochs=1))
    return out


def has_fashion() -> bool:
    return (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").exists() or (FASHION_DIR / "t10k-labels-idx1-ubyte").exists()
