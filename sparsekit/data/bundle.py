"""DataBundle: train/test splits with their input shape and class count, and fast batch iteration."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from sparsekit.errors import UsageError
from sparsekit.registry import Registry

DATASETS: Registry = Registry("dataset")

SYSTEM_DATA_DIRS = (Path("/usr/share/datasets"),)


@dataclass
class DataBundle:
    """A dataset split into train and test, with (C, H, W) input shape and number of classes."""

    name: str
    train: Dataset
    test: Dataset
    in_shape: tuple[int, int, int]
    num_classes: int
    #: DataLoader worker processes that decode samples of file-backed datasets (image folders);
    #: 0 = decode in the calling process. In-memory datasets are sliced and never use workers.
    workers: int = 0

    def batches(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        limit: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) batches; x is (B, C, H, W) float32, y is (B,) int64.

        In-memory datasets are sliced directly (much faster than per-sample indexing). With
        ``world_size > 1`` each rank sees a disjoint 1/world_size share of the (shuffled) indices,
        like ``DistributedSampler``.
        """
        if batch_size <= 0:
            raise UsageError(f"batch size must be positive, got {batch_size}")
        ds = self.train if split == "train" else self.test
        n = len(ds)
        if shuffle:
            g = torch.Generator().manual_seed(seed)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if limit is not None:
            order = order[:limit]
        if world_size > 1:
            usable = (len(order) // world_size) * world_size
            order = order[rank:usable:world_size]
        if isinstance(ds, TensorDataset):
            x_all, y_all = ds.tensors
            for i in range(0, len(order), batch_size):
                idx = order[i : i + batch_size]
                yield x_all[idx], y_all[idx]
            return
        subset = torch.utils.data.Subset(ds, order.tolist())
        # the order is fixed above, so batches are identical for any worker count
        yield from DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=self.workers,
                              prefetch_factor=4 if self.workers else None)

    def num_batches(self, split: str, batch_size: int, limit: int | None = None, world_size: int = 1) -> int:
        n = len(self.train if split == "train" else self.test)
        if limit is not None:
            n = min(n, limit)
        n = n // world_size
        return (n + batch_size - 1) // batch_size


def split_spec(spec: str) -> tuple[str, str | None]:
    name, sep, arg = spec.partition(":")
    return name, (arg if sep else None)


def load_dataset(spec: str, data_dir: Path | str | None = None, download: bool = False) -> DataBundle:
    """Load a dataset by spec ("fashion-mnist", "imagefolder:PATH", "synthetic", ...)."""
    name, arg = split_spec(spec)
    loader = DATASETS.get(name)
    if data_dir and not Path(data_dir).is_dir() and not download:
        # never fall back silently to $SPARSEKIT_DATA or the system copy when the user named a place
        what = "is not a directory" if Path(data_dir).exists() else "does not exist"
        raise UsageError(f"--data-dir {data_dir} {what}")
    return loader(arg, Path(data_dir) if data_dir else None, download)


def candidate_dirs(data_dir: Path | None, names: tuple[str, ...]) -> list[Path]:
    """Places searched for a dataset, in order: --data-dir, $SPARSEKIT_DATA, system dirs."""
    roots: list[Path] = []
    if data_dir:
        roots.append(data_dir)
    if os.environ.get("SPARSEKIT_DATA"):
        roots.append(Path(os.environ["SPARSEKIT_DATA"]))
    roots += list(SYSTEM_DATA_DIRS)
    out: list[Path] = []
    for r in roots:
        out.append(r)
        for n in names:
            out += [r / n, r / n / "raw"]
    return out


def standardize(train_x: torch.Tensor, test_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel standardization with train statistics. x: (N, C, H, W)."""
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (train_x - mean) / std, (test_x - mean) / std
