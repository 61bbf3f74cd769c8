"""Model registry and the spec that rebuilds a model from JSON."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sparsekit.errors import UsageError
from sparsekit.masking.prunable import PrunePolicy
from sparsekit.registry import Registry

MODELS: Registry = Registry("model")

# FQN patterns a model leaves dense by default (e.g. VGG's classifier, as in open_lth / TLAB).
_DEFAULT_EXCLUDE: dict[str, tuple[str, ...]] = {}


def register_default_exclude(name: str, patterns: tuple[str, ...]) -> None:
    _DEFAULT_EXCLUDE[name] = patterns


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: name, input shape (C, H, W), number of classes."""

    name: str
    in_shape: tuple[int, int, int]
    num_classes: int

    def to_dict(self) -> dict:
        return {"name": self.name, "in_shape": list(self.in_shape), "num_classes": self.num_classes}

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return cls(d["name"], tuple(int(x) for x in d["in_shape"]), int(d["num_classes"]))


def default_policy(name: str) -> PrunePolicy:
    return PrunePolicy(exclude=_DEFAULT_EXCLUDE.get(name, ()))


def build_model(spec: ModelSpec, seed: int | None = None) -> nn.Module:
    """Build a model from its spec with a seeded initialization (random init, never downloads)."""
    if seed is not None:
        torch.manual_seed(seed)
    name = spec.name
    if name.startswith("tv:"):
        from sparsekit.models.torchvision_models import build_torchvision

        return build_torchvision(name[3:], spec.in_shape, spec.num_classes)
    if ":" in name and name not in MODELS:
        return _build_user_model(name, spec.in_shape, spec.num_classes)
    factory = MODELS.get(name)
    return factory(spec.in_shape, spec.num_classes)


def _build_user_model(ref: str, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    target, _, attr = ref.rpartition(":")
    if target.endswith(".py") or "/" in target:
        path = Path(target)
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
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise UsageError(f"{ref} returned {type(model).__name__}, not an nn.Module")
    return model


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
