"""CIFAR-10 from torchvision's on-disk layout, without unpickling arbitrary objects.

Preferred: the binary version (``cifar-10-batches-bin``, raw bytes). The Python version
(``cifar-10-batches-py``) is a pickle; we read it with a restricted unpickler that only allows
the numpy array-reconstruction globals, never arbitrary classes or callables.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from sparsekit.data.bundle import DATASETS, DataBundle, candidate_dirs, standardize
from sparsekit.errors import DataNotFoundError, UsageError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _read_bin(d: Path) -> tuple[np.ndarray, ...]:
    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        raw = np.concatenate([np.fromfile(d / f, dtype=np.uint8) for f in files]).reshape(-1, 3073)
        return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)

    tx, ty = read([f"data_batch_{i}.bin" for i in range(1, 6)])
    vx, vy = read(["test_batch.bin"])
    return tx, ty, vx, vy


def _read_py(d: Path) -> tuple[np.ndarray, ...]:
    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            with open(d / f, "rb") as fh:
                batch = _ArrayOnlyUnpickler(fh, encoding="bytes").load()
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    tx, ty = read([f"data_batch_{i}" for i in range(1, 6)])
    vx, vy = read(["test_batch"])
    return tx, ty, vx, vy


@DATASETS.register("cifar10", help="CIFAR-10 (torchvision layout: cifar-10-batches-bin or -py)")
def cifar10(arg: str | None, data_dir: Path | None, download: bool) -> DataBundle:
    if arg:
        raise UsageError("cifar10 takes no argument; use --data-dir for its location")
    dirs = candidate_dirs(data_dir, ("cifar10", "cifar-10"))
    arrays = None
    for base in dirs:
        if (base / "cifar-10-batches-bin" / "test_batch.bin").is_file():
            arrays = _read_bin(base / "cifar-10-batches-bin")
            break
        if (base / "cifar-10-batches-py" / "test_batch").is_file():
            try:
                arrays = _read_py(base / "cifar-10-batches-py")
            except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
                raise DataNotFoundError(f"corrupt CIFAR-10 batch in {base}: {exc}") from None
            break
    if arrays is None and download:
        import torchvision

        root = data_dir or Path.home() / ".cache" / "sparsekit"
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        return cifar10(None, root, False)
    if arrays is None:
        raise DataNotFoundError(
            "cifar10 not found: looked for cifar-10-batches-bin/ or cifar-10-batches-py/ under --data-dir, "
            "$SPARSEKIT_DATA and /usr/share/datasets; pass --download to fetch it with torchvision"
        )
    tx, ty, vx, vy = arrays
    txt = torch.from_numpy(tx.astype(np.float32) / 255)
    vxt = torch.from_numpy(vx.astype(np.float32) / 255)
    txt, vxt = standardize(txt, vxt)
    return DataBundle(
        "cifar10",
        TensorDataset(txt, torch.from_numpy(ty)),
        TensorDataset(vxt, torch.from_numpy(vy)),
        (3, 32, 32),
        10,
    )
