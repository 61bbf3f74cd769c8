"""A seeded random subset of the Fashion-MNIST IDX files, for benchmarks with a CPU-sized budget."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from sparsekit.data.idx import read_idx


def write_subset(src_dir: Path, dst: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write ``n_train`` / ``n_test`` seeded random samples of the IDX files in ``src_dir`` into ``dst``
    (uncompressed; loaded with ``--data fashion-mnist --data-dir dst``). Existing files are kept."""
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = read_idx(src_dir / f"{split}-images-idx3-ubyte.gz")
        y = read_idx(src_dir / f"{split}-labels-idx1-ubyte.gz")
        idx = np.sort(rng.choice(len(y), n, replace=False))
        for arr, stem in ((x[idx], f"{split}-images-idx3-ubyte"), (y[idx], f"{split}-labels-idx1-ubyte")):
            path = dst / stem
            if path.exists():
                continue
            header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
            tmp.replace(path)
    return dst
