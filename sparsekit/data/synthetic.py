"""Seeded, learnable synthetic data for tests: class prototypes plus Gaussian noise."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from sparsekit.data.bundle import DATASETS, DataBundle
from sparsekit.errors import UsageError

DEFAULT_SHAPE = (1, 16, 16)


def make_synthetic(
    in_shape: tuple[int, int, int] = DEFAULT_SHAPE,
    num_classes: int = 10,
    n_train: int = 2048,
    n_test: int = 512,
    seed: int = 1234,
    noise: float = 4.0,
) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(num_classes, *in_shape, generator=g)

    def split(n: int) -> TensorDataset:
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = protos[y] + noise * torch.randn(n, *in_shape, generator=g)
        return TensorDataset(x, y)

    return DataBundle("synthetic", split(n_train), split(n_test), in_shape, num_classes)


@DATASETS.register("synthetic", help="seeded learnable data; 'synthetic:CxHxW' sets the shape")
def synthetic(arg: str | None, data_dir: Path | None, download: bool) -> DataBundle:
    shape = DEFAULT_SHAPE
    if arg:
        try:
            shape = tuple(int(v) for v in arg.lower().split("x"))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) <= 0:
            raise UsageError(f"synthetic shape must look like 1x16x16, got {arg!r}")
    return make_synthetic(shape)
