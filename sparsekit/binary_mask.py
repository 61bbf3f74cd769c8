"""The Mask type: FQN -> bool tensor, validated on construction."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from sparsekit._io import load_tensors, save_tensors
from sparsekit.errors import ArtifactError


class Mask:
    """A binary mask over a model's prunable tensors (True = keep).

    Example:
        >>> m = Mask({"fc.weight": torch.tensor([[True, False]])})
        >>> m.sparsity
        0.5
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        if not tensors:
            raise ArtifactError("a mask needs at least one tensor")
        self._t: dict[str, torch.Tensor] = {}
        for name, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                raise ArtifactError(f"mask entry {name!r} is not a tensor")
            if t.dtype != torch.bool:
                if not bool(((t == 0) | (t == 1)).all()):
                    raise ArtifactError(f"mask entry {name!r} has values other than 0/1")
                t = t.bool()
            self._t[name] = t.detach().cpu()

    # -- stats (counted from the tensors, never assumed) --
    @property
    def names(self) -> list[str]:
        return list(self._t)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._t[name]

    def items(self):
        return self._t.items()

    def __len__(self) -> int:
        return len(self._t)

    @property
    def numel(self) -> int:
        return sum(t.numel() for t in self._t.values())

    @property
    def kept(self) -> int:
        return int(sum(int(t.sum()) for t in self._t.values()))

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.numel

    @property
    def density(self) -> float:
        return self.kept / self.numel

    def layer_stats(self) -> list[dict]:
        return [
            {
                "name": n,
                "shape": list(t.shape),
                "numel": t.numel(),
                "kept": int(t.sum()),
                "sparsity": 1.0 - int(t.sum()) / t.numel(),
            }
            for n, t in self._t.items()
        ]

    def sha256(self) -> str:
        """Hash of names, shapes and bits, stable across runs and machines."""
        h = hashlib.sha256()
        for n in sorted(self._t):
            t = self._t[n]
            h.update(n.encode())
            h.update(str(list(t.shape)).encode())
            h.update(t.reshape(-1).to(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    # -- model interaction --
    def validate(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, t in self._t.items():
            if name not in params:
                raise ArtifactError(f"mask names unknown tensor {name!r}")
            if tuple(params[name].shape) != tuple(t.shape):
                raise ArtifactError(
                    f"mask shape {tuple(t.shape)} != weight shape {tuple(params[name].shape)} for {name!r}"
                )

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero the masked weights in place."""
        params = dict(model.named_parameters())
        for name, t in self._t.items():
            p = params[name]
            p.mul_(t.to(device=p.device, dtype=p.dtype))

    @torch.no_grad()
    def mask_grads(self, model: nn.Module) -> None:
        """Zero the gradients of masked weights (so momentum buffers never grow there)."""
        params = dict(model.named_parameters())
        for name, t in self._t.items():
            g = params[name].grad
            if g is not None:
                g.mul_(t.to(device=g.device, dtype=g.dtype))

    @classmethod
    def ones_like(cls, tensors: Mapping[str, torch.Tensor]) -> Mask:
        return cls({n: torch.ones_like(t, dtype=torch.bool) for n, t in tensors.items()})

    def __and__(self, other: Mask) -> Mask:
        return Mask({n: t & other[n] for n, t in self._t.items()})

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Mask)
            and self.names == other.names
            and all(torch.equal(t, other[n]) for n, t in self._t.items())
        )

    # -- persistence --
    def save(self, path: Path) -> None:
        save_tensors(path, self._t)

    @classmethod
    def load(cls, path: Path) -> Mask:
        return cls(load_tensors(path))

    def to_dict(self) -> dict[str, torch.Tensor]:
        return dict(self._t)


def sparsity_of(model: nn.Module, names: list[str]) -> float:
    """Fraction of exact zeros among the named weights of a model (counted, not assumed)."""
    params = dict(model.named_parameters())
    total = sum(params[n].numel() for n in names)
    zeros = sum(int((params[n] == 0).sum()) for n in names)
    return zeros / total
