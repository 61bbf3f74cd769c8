"""Model registry and the spec that rebuilds a model from JSON.

User factories (``pkg.mod:fn``, ``path/file.py:fn``) are code. A spec the user typed (``--model``,
``PruneConfig.model``) is imported as given; a spec read back from a run directory
(``ModelSpec.from_dict``) is imported only when the user trusts model code (``--trust-model-code``,
``SPARSEKIT_TRUST_MODEL_CODE=1`` or ``allow_model_code(ref)``), and only when the factory's source
file still has the sha256 recorded in run.json. Registered and ``tv:`` models never need trust.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsekit.errors import ArtifactError, UsageError
from sparsekit.masking.prunable import PrunePolicy
from sparsekit.registry import Registry

MODELS: Registry = Registry("model")
log = logging.getLogger("sparsekit")

#: environment variable that trusts user model code named by run directories ("1")
TRUST_ENV = "SPARSEKIT_TRUST_MODEL_CODE"
#: factories the user named in this process (e.g. again with --model): trusted like the flag
_ALLOWED: set[str] = set()

# FQN patterns a model leaves dense by default (e.g. VGG's classifier, as in open_lth / TLAB).
_DEFAULT_EXCLUDE: dict[str, tuple[str, ...]] = {}


def register_default_exclude(name: str, patterns: tuple[str, ...]) -> None:
    _DEFAULT_EXCLUDE[name] = patterns


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: name, input shape (C, H, W), number of classes.

    ``factory`` is the record a run directory keeps for a user factory ({"spec", "path",
    "sha256"}); ``from_artifact`` marks specs read from a run directory (their code needs trust).
    Neither takes part in equality.
    """

    name: str
    in_shape: tuple[int, int, int]
    num_classes: int
    factory: dict[str, Any] | None = field(default=None, compare=False)
    from_artifact: bool = field(default=False, compare=False)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"name": self.name, "in_shape": list(self.in_shape), "num_classes": self.num_classes}
        record = self.factory if self.from_artifact else (factory_record(self.name) if is_user_factory(self.name) else None)
        if record is not None:
            d["factory"] = record
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        try:
            return cls(str(d["name"]), tuple(int(x) for x in d["in_shape"]), int(d["num_classes"]),
                       factory=d.get("factory") if isinstance(d.get("factory"), dict) else None,
                       from_artifact=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"run.json has a malformed model spec ({type(exc).__name__}: {exc})") from None


def is_user_factory(name: str) -> bool:
    """``pkg.mod:fn`` or ``file.py:fn`` (code outside sparsekit), not a registered or tv: model."""
    return ":" in name and not name.startswith("tv:") and name not in MODELS


def model_code_trusted() -> bool:
    """Whether the user trusts model code named by run directories (flag or environment)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def allow_model_code(ref: str) -> None:
    """Trust one factory for this process (the user named it themselves, e.g. with --model)."""
    _ALLOWED.add(ref)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _locate(target: str) -> Path | None:
    """The source file of ``file.py`` or of module ``pkg.mod``, found WITHOUT executing any code.

    Module lookup asks the import system's finders component by component (importlib's
    ``find_spec`` would import the parent packages). None when there is no source file.
    """
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        return path.resolve() if path.is_file() else None
    if target in sys.modules and getattr(sys.modules[target], "__file__", None):
        return Path(sys.modules[target].__file__).resolve()
    search: Any = None
    spec = None
    parts = target.split(".")
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            try:
                spec = find(name, search)
            except Exception:  # a finder that cannot answer without importing
                spec = None
            if spec is not None:
                break
        if spec is None:
            return None
        search = spec.submodule_search_locations
    origin = getattr(spec, "origin", None)
    return Path(origin).resolve() if origin and Path(origin).is_file() else None


def factory_record(ref: str) -> dict[str, Any]:
    """What a run directory records about a user factory: spec, source path and its sha256."""
    target = ref.rpartition(":")[0]
    path = _locate(target)
    return {"spec": ref, "path": str(path) if path else None, "sha256": _sha256(path) if path else None}


def _check_trusted(spec: ModelSpec) -> str | None:
    """Refuse a run directory's user factory unless trusted and unchanged; returns the file to import."""
    ref = spec.name
    record = spec.factory or {}
    where = record.get("path") or ref.rpartition(":")[0]
    if not (model_code_trusted() or ref in _ALLOWED):
        raise UsageError(
            f"the run names user model code {ref!r} ({where}); importing it runs that code: pass "
            f"--trust-model-code (or {TRUST_ENV}=1) only if you trust this run directory"
        )
    target = ref.rpartition(":")[0]
    recorded_path = record.get("path")
    is_file = target.endswith(".py") or "/" in target
    if is_file and recorded_path and Path(recorded_path).is_file():
        path: Path | None = Path(recorded_path)
    else:
        path = _locate(target)
    if path is None:
        raise UsageError(f"model code {ref!r} named by the run is not found (recorded at {where})")
    sha = record.get("sha256")
    if not sha:
        log.warning("warning: the run records no sha256 for %s; importing %s unchecked", ref, path)
    elif _sha256(path) != sha:
        raise ArtifactError(
            f"model code {path} changed since the run was written (sha256 {_sha256(path)[:12]} != recorded "
            f"{sha[:12]}); refusing to import it: restore that file or prune again"
        )
    return str(path) if is_file else None


def default_policy(name: str) -> PrunePolicy:
    return PrunePolicy(exclude=_DEFAULT_EXCLUDE.get(name, ()))


def build_model(spec: ModelSpec, seed: int | None = None) -> nn.Module:
    """Build a model from its spec with a seeded initialization (random init, never downloads)."""
    if seed is not None:
        torch.manual_seed(seed)
    from sparsekit.progress import step

    name = spec.name
    if name.startswith("tv:"):
        from sparsekit.models.torchvision_models import build_torchvision

        with step(f"building {name}"):
            return build_torchvision(name[3:], spec.in_shape, spec.num_classes)
    if is_user_factory(name):
        file_override = _check_trusted(spec) if spec.from_artifact else None
        with step(f"building {name}"):
            return _build_user_model(name, spec.in_shape, spec.num_classes, file_override)
    factory = MODELS.get(name)
    return factory(spec.in_shape, spec.num_classes)


def _build_user_model(ref: str, in_shape: tuple[int, int, int], num_classes: int,
                      file_override: str | None = None) -> nn.Module:
    target, _, attr = ref.rpartition(":")
    if target.endswith(".py") or "/" in target:
        path = Path(file_override or target)
        if not path.is_file():
            raise UsageError(f"model file not found: {path}")
        mod_name = f"_sparsekit_user_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot import model file {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise UsageError(f"importing {path} failed: {exc}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(f"cannot import model module {target!r}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"{target!r} has no callable {attr!r}")
    params = inspect.signature(factory).parameters
    kwargs = {}
    if "num_classes" in params:
        kwargs["num_classes"] = num_classes
    if "in_shape" in params:
        kwargs["in_shape"] = in_shape
    if "in_channels" in params:
        kwargs["in_channels"] = in_shape[0]
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise UsageError(f"calling {ref}({', '.join(kwargs)}) failed: {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"{ref} returned {type(model).__name__}, not an nn.Module")
    check_forward(model, ref, in_shape, num_classes)
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def check_forward(model: nn.Module, ref: str, in_shape: tuple[int, ...], num_classes: int) -> None:
    """ONE forward pass (eval, no grad) of a batch of 2 zeros: the model must return a single
    (2, num_classes) logits tensor. Catches wrong class counts, input sizes and tuple outputs before
    anything is written."""
    shape = (2, *in_shape)  # (B, C, H, W)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(shape))
    except Exception as exc:
        raise UsageError(
            f"model {ref} fails on an input of shape {shape} (the data's (C, H, W) is {tuple(in_shape)}): "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise UsageError(
            f"model {ref} returns a {type(out).__name__}; sparsekit needs one logits tensor of shape "
            f"(batch, {num_classes}): return only the logits"
        )
    if tuple(out.shape) != (shape[0], num_classes):
        raise UsageError(
            f"model {ref} outputs shape {tuple(out.shape)} for input {shape}; the data has {num_classes} "
            f"classes, so it must output ({shape[0]}, {num_classes}) (does it take num_classes?)"
        )


def init_weights(model: nn.Module, bn_uniform: bool = False) -> nn.Module:
    """Kaiming-normal Conv/Linear weights, zero biases; BN scale ~ U(0,1) if ``bn_uniform``."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and bn_uniform:
            nn.init.uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def flat_features(features: nn.Module, in_shape: tuple[int, int, int]) -> int:
    """Number of features a conv trunk produces for one input of shape (C, H, W)."""
    with torch.no_grad():
        was_training = features.training
        features.eval()
        out = features(torch.zeros(1, *in_shape))
        features.train(was_training)
    return out.numel()
