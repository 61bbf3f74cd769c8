"""MNIST and Fashion-MNIST from IDX files (plain or .gz), e.g. Debian's dataset-fashion-mnist."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from sparsekit.data.bundle import DATASETS, DataBundle, candidate_dirs, standardize
from sparsekit.errors import DataNotFoundError, UsageError

_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (big-endian header: magic, dims) into a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DataNotFoundError(f"cannot read IDX file {path}: {exc}") from None
    if len(data) < 4:
        raise DataNotFoundError(f"corrupt IDX file {path}: too short")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataNotFoundError(f"corrupt IDX file {path}: bad magic")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataNotFoundError(f"corrupt IDX file {path}: size mismatch")
    return arr.reshape(dims)


def _find(dirs: list[Path]) -> dict[str, Path] | None:
    for d in dirs:
        found = {}
        for key, stem in _FILES.items():
            for cand in (d / stem, d / f"{stem}.gz"):
                if cand.is_file():
                    found[key] = cand
                    break
        if len(found) == len(_FILES):
            return found
    return None


def _load(name: str, tv_name: str, data_dir: Path | None, download: bool) -> DataBundle:
    dirs = candidate_dirs(data_dir, (name, tv_name))
    files = _find(dirs)
    if files is None and download:
        import torchvision

        root = data_dir or Path.home() / ".cache" / "sparsekit"
        cls = torchvision.datasets.FashionMNIST if name == "fashion-mnist" else torchvision.datasets.MNIST
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
        files = _find(candidate_dirs(root, (name, tv_name)))
    if files is None:
        searched = ", ".join(str(d) for d in dirs[:3] + [dirs[-1]])
        hint = (
            "sudo apt-get install dataset-fashion-mnist"
            if name == "fashion-mnist"
            else "put the IDX files in --data-dir"
        )
        raise DataNotFoundError(
            f"{name} IDX files not found (searched --data-dir, $SPARSEKIT_DATA and /usr/share/datasets, "
            f"e.g. {searched}); get them with `{hint}` or pass --download"
        )
    arrays = {k: read_idx(p) for k, p in files.items()}
    tx = torch.from_numpy(arrays["train_x"].copy()).float().div_(255).unsqueeze(1)  # (N, 1, 28, 28)
    vx = torch.from_numpy(arrays["test_x"].copy()).float().div_(255).unsqueeze(1)
    ty = torch.from_numpy(arrays["train_y"].astype(np.int64))
    vy = torch.from_numpy(arrays["test_y"].astype(np.int64))
    if len(tx) != len(ty) or len(vx) != len(vy):
        raise DataNotFoundError(f"{name}: image and label counts differ in {files['train_x'].parent}")
    tx, vx = standardize(tx, vx)
    return DataBundle(name, TensorDataset(tx, ty), TensorDataset(vx, vy), tuple(tx.shape[1:]), 10)


@DATASETS.register("fashion-mnist", help="Fashion-MNIST (IDX files; Debian dataset-fashion-mnist)")
def fashion_mnist(arg: str | None, data_dir: Path | None, download: bool) -> DataBundle:
    if arg:
        raise UsageError("fashion-mnist takes no argument; use --data-dir for its location")
    return _load("fashion-mnist", "FashionMNIST", data_dir, download)


@DATASETS.register("mnist", help="MNIST (IDX files)")
def mnist(arg: str | None, data_dir: Path | None, download: bool) -> DataBundle:
    if arg:
        raise UsageError("mnist takes no argument; use --data-dir for its location")
    return _load("mnist", "MNIST", data_dir, download)
