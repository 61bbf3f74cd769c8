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

import dataclasses
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsekit import paths
from sparsekit._io import load_tensors, read_json, save_tensors, write_json
from sparsekit.binary_mask import Mask
from sparsekit.cost.budget import Budget, parse_budget, search_budget
from sparsekit.errors import ArtifactError
from sparsekit.models.registry import ModelSpec, build_model
from sparsekit.train.loop import TrainConfig, resolve_augment

SCHEMA_VERSION = 1

#: config keys added after run.json's first schema, with the value that reproduces what runs written
#: before them did. ``PruneConfig.identity`` leaves a key out when it has that value (so old runs
#: still resume); ``RunRecord.config`` fills missing keys of an old run.json with it (so old runs
#: stay loadable).
LEGACY_CONFIG: dict[str, Any] = {
    "channel_multiple": 1, "search_steps": None, "schedule": "constant", "budget": None,
    "budget_runtime": "ort-cpu", "budget_batch": 1, "budget_threads": 1, "warmup_epochs": 0.0,
    "augment": "none", "grad_clip": 0.0, "label_smoothing": 0.0, "bn_recalibrate": False,
}
#: the config keys of the training recipe (runs that predate run.json's ``recipe`` rebuild it)
RECIPE_KEYS = ("lr", "momentum", "weight_decay", "batch_size", "grad_clip", "schedule",
               "warmup_epochs", "label_smoothing")


def library_versions() -> dict[str, str]:
    """Versions of the libraries a run depends on, from the installed distributions' metadata: importing
    torchvision / onnxruntime just to read ``__version__`` cost ~5 s per run on this machine."""
    from importlib import metadata

    import sparsekit

    def version(dist: str) -> str:
        loaded = sys.modules.get(dist)
        if loaded is not None and hasattr(loaded, "__version__"):
            return str(loaded.__version__)  # keeps the local label (e.g. +cu130) when it is loaded anyway
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "sparsekit": sparsekit.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        **{name: version(name) for name in ("torchvision", "onnx", "onnxruntime", "numpy")},
    }


@dataclass
class RunRecord:
    """run.json of one run, loaded once: typed accessors over the stored JSON, and its one writer.

    ``raw`` is the JSON object itself (keys exactly as stored; a key this version does not know is
    kept on rewrite). Runs written before a config key existed read its ``LEGACY_CONFIG`` value.

    Example:
        >>> r = RunRecord({"schema_version": 1, "seed": 3, "config": {"pretrain_epochs": 1},
        ...                "recipe": {"lr": 0.05, "schedule": "cosine"}})
        >>> r.seed, r.config["augment"], r.train_config(epochs=2)  # doctest: +ELLIPSIS
        (3, 'none', TrainConfig(lr=0.05, ..., schedule='cosine', ..., horizon_epochs=3, ...))
    """

    raw: dict[str, Any]

    @classmethod
    def load(cls, run_dir: Path | str, require_complete: bool = True) -> RunRecord:
        """Read ``run_dir``/run.json (ArtifactError: missing, not a run, newer schema,
        incomplete)."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ArtifactError(f"run directory not found: {run_dir}")
        raw = read_json(paths.run_json(run_dir))
        if not isinstance(raw, dict) or "schema_version" not in raw:
            raise ArtifactError(f"{paths.run_json(run_dir)} is not a sparsekit run "
                                "(no schema_version)")
        if raw["schema_version"] > SCHEMA_VERSION:
            raise ArtifactError(f"{run_dir} has schema_version {raw['schema_version']}; "
                                f"this sparsekit reads <= {SCHEMA_VERSION}")
        record = cls(raw)
        if require_complete and not record.complete:
            raise ArtifactError(f"run {run_dir} is incomplete (interrupted?); "
                                "rerun the prune command to resume")
        return record

    @staticmethod
    def exists(run_dir: Path | str) -> bool:
        return paths.run_json(Path(run_dir)).exists()

    def save(self, run_dir: Path | str) -> None:
        """Write run.json (temp file + rename: a reader never sees half of it)."""
        write_json(paths.run_json(Path(run_dir)), self.raw)

    # --- identity -------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return bool(self.raw.get("complete"))

    @property
    def model_spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.raw["model"])

    @property
    def model_name(self) -> str:
        return str(self.raw["model"]["name"])

    @property
    def data_name(self) -> str:
        return str(self.raw["data"]["name"])

    @property
    def method_name(self) -> str:
        return str(self.raw["method"]["name"])

    @property
    def method_options(self) -> dict[str, Any]:
        """The method's options as given (a copy)."""
        return dict(self.raw.get("method", {}).get("options") or {})

    @property
    def method_info(self) -> dict[str, Any]:
        """What the search reported (``method.info``; {} before the search)."""
        return self.raw.get("method", {}).get("info") or {}

    @property
    def seed(self) -> int:
        return int(self.raw.get("seed", 0))

    @property
    def config(self) -> dict[str, Any]:
        """The run's ``config``, keys it predates filled with their legacy values (a copy)."""
        return {**LEGACY_CONFIG, **self.raw.get("config", {})}

    @property
    def pretrain_epochs(self) -> int:
        return int(self.config.get("pretrain_epochs", 0))

    @property
    def granularity(self) -> str:
        return str(self.config.get("granularity") or "weight")

    # --- stages and results ---------------------------------------------------------------------
    @property
    def stages(self) -> dict[str, Any]:
        return self.raw.setdefault("stages", {})

    def stage_done(self, name: str) -> bool:
        return bool(self.stages.get(name, {}).get("complete"))

    def stage_epochs(self, name: str) -> int | None:
        """Epochs a completed stage trained (None: the stage has not run or records none)."""
        epochs = self.stages.get(name, {}).get("epochs")
        return None if epochs is None else int(epochs)

    @property
    def finetune_epochs(self) -> int:
        """Epochs of the ticket's fine-tune (the run's training budget)."""
        epochs = self.stage_epochs("finetune")
        if epochs is None:
            raise ArtifactError("run.json records no fine-tune stage")
        return epochs

    @property
    def timings(self) -> dict[str, float]:
        return self.raw.setdefault("timings", {})

    @property
    def metrics(self) -> dict[str, Any]:
        return self.raw.setdefault("metrics", {})

    @property
    def accuracy(self) -> float | None:
        acc = self.metrics.get("accuracy")
        return None if acc is None else float(acc)

    @property
    def sparsity(self) -> float | None:
        """The measured sparsity of the ticket (None before the run completed)."""
        s = self.raw.get("sparsity")
        return None if s is None else float(s)

    @property
    def mask_sha256(self) -> str | None:
        return self.raw.get("mask_sha256")

    @property
    def layers(self) -> list[dict[str, Any]]:
        return self.raw.get("layers", [])

    @property
    def result(self) -> dict[str, Any]:
        """The result summary ``prune`` returned ({} before the run completed)."""
        return self.raw.setdefault("result", {})

    # --- the stored configs as objects ----------------------------------------------------------
    def recipe(self) -> dict[str, Any]:
        """The training recipe as run.json stores it (``recipe``; runs before it: constant LR, no
        augmentation, rebuilt from ``config``)."""
        recipe = dict(self.raw.get("recipe") or {})
        if not recipe:
            cfg = self.config
            recipe = {k: cfg[k] for k in RECIPE_KEYS}
            in_shape = tuple(self.raw.get("model", {}).get("in_shape") or ())
            recipe["augment"] = resolve_augment(cfg["augment"], in_shape)
        return recipe

    def train_config(self, epochs: int | None = None, device: str = "cpu",
                     first_epoch_count: int | None = None) -> TrainConfig:
        """The training recipe the run used, with the schedule horizon set for training ``epochs``
        (default: the run's fine-tune epochs) after ``first_epoch_count`` (default: its pretrain
        epochs)."""
        first = self.pretrain_epochs if first_epoch_count is None else first_epoch_count
        epochs = self.finetune_epochs if epochs is None else epochs
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        recipe = {k: v for k, v in self.recipe().items() if k in known}
        recipe.update(device=device, horizon_epochs=first + epochs)
        return TrainConfig(**recipe)

    def _budget_settings(self) -> tuple[str, int, int]:
        cfg = self.config
        return cfg["budget_runtime"], int(cfg["budget_batch"]), int(cfg["budget_threads"])

    def budget(self) -> Budget | None:
        """The run's ``--budget`` as its config stores it (None: a plain ``--sparsity`` run)."""
        text = self.config["budget"]
        return None if text is None else parse_budget(text, *self._budget_settings())

    def measured_budget(self) -> dict[str, Any] | None:
        """What the selection measured against the budget (``result.budget``; None without one)."""
        return self.result.get("budget")

    def search_context(self) -> dict[str, Any]:
        """The run's part of its search's ``SearchContext``, as keyword arguments (the caller adds
        the model, data, names, recipe, device and theta_K it built): target sparsity, granularity,
        seed, search length, channel rounding and the cost budget the search selected against.
        (A dict, not a SearchContext: ``sparsekit.methods`` and the ticket are independent
        layers.)"""
        cfg = self.config
        granularity = self.granularity
        return {
            "sparsity": float(cfg["sparsity"]),
            "layerwise": bool(cfg.get("layerwise", False)),
            "granularity": granularity,
            "seed": self.seed,
            "search_epochs": cfg.get("search_epochs"),
            "search_steps": cfg.get("search_steps"),
            "channel_multiple": int(cfg["channel_multiple"]),
            "budget": search_budget(cfg["budget"], granularity, *self._budget_settings()),
        }


def stored_config(meta: dict[str, Any]) -> dict[str, Any]:
    """A run's ``config`` with the keys it predates filled with their legacy values."""
    return RunRecord(meta).config


def stored_train_config(meta: dict[str, Any], first_epoch_count: int, epochs: int,
                        device: str = "cpu") -> TrainConfig:
    """``RunRecord(meta).train_config``: the training recipe a run used, the schedule horizon set
    for retraining ``epochs`` after ``first_epoch_count``."""
    return RunRecord(meta).train_config(epochs, device=device, first_epoch_count=first_epoch_count)


@dataclass
class Ticket:
    """A loaded run directory: its record (run.json) and its tensors.

    Example:
        >>> t = Ticket.load("runs/lenet")          # doctest: +SKIP
        >>> model = t.materialize("final")         # doctest: +SKIP
    """

    run_dir: Path
    record: RunRecord

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        if isinstance(self.record, dict):  # Ticket(run_dir, meta) as before the record
            self.record = RunRecord(self.record)

    @classmethod
    def load(cls, run_dir: Path | str, require_complete: bool = True) -> Ticket:
        return cls(Path(run_dir), RunRecord.load(run_dir, require_complete))

    @property
    def meta(self) -> dict[str, Any]:
        """run.json as the JSON object it is (prefer the typed ``record``)."""
        return self.record.raw

    @property
    def spec(self) -> ModelSpec:
        return self.record.model_spec

    @property
    def data_spec(self) -> str:
        return self.record.data_name

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


def write_meta(run_dir: Path, meta: dict[str, Any] | RunRecord) -> None:
    """Write run.json (atomic) from a record or its JSON object."""
    (meta if isinstance(meta, RunRecord) else RunRecord(meta)).save(run_dir)
