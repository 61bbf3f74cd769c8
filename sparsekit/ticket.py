"""The Ticket artifact: a run directory with safetensors tensors and JSON metadata.

Layout (file names spelled in sparsekit.paths):
    run.json            metadata: schema_version, model/data spec, method+config, seed, sparsity, per-layer
                        stats, metrics, timings, versions, and per-stage completion
    theta_k.safetensors starting weights (rewind point) incl. BN buffers
    mask.safetensors    bool mask per prunable FQN
    final.safetensors   fine-tuned ticket (exact zeros where masked)
    dense.safetensors   dense reference trained with the same budget
    metrics.jsonl       per-epoch training metrics;  search.jsonl  per-step search diagnostics

A run is usable only when run.json says ``"complete": true``, which is written last.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsekit import paths
from sparsekit._io import load_tensors, read_json, save_tensors, write_json
from sparsekit.errors import ArtifactError
from sparsekit.mask import Mask
from sparsekit.models.registry import ModelSpec, build_model

SCHEMA_VERSION = 1


def library_versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import torchvision

    import sparsekit

    return {
        "sparsekit": sparsekit.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
    }


@dataclass
class Ticket:
    """A loaded run directory.

    Example:
        >>> t = Ticket.load("runs/lenet")          # doctest: +SKIP
        >>> model = t.materialize("final")         # doctest: +SKIP
    """

    run_dir: Path
    meta: dict[str, Any]

    @classmethod
    def load(cls, run_dir: Path | str, require_complete: bool = True) -> Ticket:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ArtifactError(f"run directory not found: {run_dir}")
        meta = read_json(paths.run_json(run_dir))
        if not isinstance(meta, dict) or "schema_version" not in meta:
            raise ArtifactError(f"{paths.run_json(run_dir)} is not a sparsekit run (no schema_version)")
        if meta["schema_version"] > SCHEMA_VERSION:
            raise ArtifactError(
                f"{run_dir} has schema_version {meta['schema_version']}; this sparsekit reads <= {SCHEMA_VERSION}"
            )
        if require_complete and not meta.get("complete"):
            raise ArtifactError(f"run {run_dir} is incomplete (interrupted?); rerun the prune command to resume")
        return cls(run_dir, meta)

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.meta["model"])

    @property
    def data_spec(self) -> str:
        return self.meta["data"]["name"]

    def mask(self) -> Mask:
        return Mask.load(paths.mask(self.run_dir))

    def state(self, which: str = "final") -> dict[str, torch.Tensor]:
        path = {
            "final": paths.final_weights,
            "theta_k": paths.theta_k,
            "dense": paths.dense_weights,
        }[which](self.run_dir)
        return load_tensors(path)

    def materialize(self, which: str = "final") -> nn.Module:
        """Rebuild the nn.Module from the registry and load ``which`` weights (final|theta_k|dense).

        "theta_k" is the ticket's starting point: theta_K plus any buffers the search set
        (search_state.safetensors, e.g. BN statistics of the masked network).
        """
        model = build_model(self.spec, seed=0)
        load_state(model, self.state(which), where=str(self.run_dir))
        if which == "theta_k" and paths.search_state(self.run_dir).is_file():
            model.load_state_dict(load_tensors(paths.search_state(self.run_dir)), strict=False)
        if which != "dense":
            mask = self.mask()
            mask.validate(model)
            mask.apply(model)
        model.eval()
        return model

    def has_dense(self) -> bool:
        return paths.dense_weights(self.run_dir).is_file()


def load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ArtifactError(
            f"weights in {where} do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ArtifactError(f"weights in {where}: {k} has shape {tuple(v.shape)}, model expects {tuple(expected[k].shape)}")
    model.load_state_dict(state)


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the full state dict (parameters and buffers)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_state(path: Path, model: nn.Module) -> None:
    save_tensors(path, state_of(model))


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    write_json(paths.run_json(run_dir), meta)
