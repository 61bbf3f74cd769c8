"""Image folders decode in DataLoader workers (--workers) with batches identical to the main process."""

from __future__ import annotations

import os

import pytest
import torch

from sparsekit.data import load_dataset
from sparsekit.errors import UsageError
from sparsekit.pipeline import PruneConfig


def _write_folder(root, n_per_class=6, size=(10, 8)):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n_per_class):
                px = (torch.rand(size[1], size[0], 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(px, "RGB").save(d / f"{i}.png")


def test_workers_give_the_same_batches_and_really_run_in_other_processes(tmp_path):
    _write_folder(tmp_path)
    data = load_dataset(f"imagefolder:{tmp_path}")
    serial = list(data.batches("train", 5, shuffle=True, seed=3))
    data.workers = 2
    pids: set[int] = set()
    tf = data.train.transform
    data.train.transform = lambda im: (pids.add(os.getpid()), tf(im))[1]
    try:
        parallel = list(data.batches("train", 5, shuffle=True, seed=3))
    finally:
        data.train.transform = tf
    assert len(serial) == len(parallel) == 3
    for (xa, ya), (xb, yb) in zip(serial, parallel, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # pids recorded in the workers are not visible here; the main process must not have decoded
    assert os.getpid() not in pids


def test_negative_workers_is_a_usage_error():
    with pytest.raises(UsageError, match="--workers"):
        PruneConfig(model="lenet300", data="synthetic", method="random", sparsity=0.5, out="x", workers=-1)
