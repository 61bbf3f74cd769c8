"""The SparseFormat interface and its registry.

A format converts a masked-dense model (dense weights with exact zeros, plus its ``Mask``) into a
module that stores/executes the sparsity differently. Every format must compute the masked-dense
function of ``Converted.reference_mask`` on the ORIGINAL architecture within its ``atol``; the
contract test (tests/unit/test_formats.py) checks this for every registered format.

Adding a format = one new file with ``@FORMATS.register("name")`` + one import line in __init__.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from sparsekit.binary_mask import Mask
from sparsekit.errors import UsageError, VerificationError
from sparsekit.registry import Registry

FORMATS: Registry = Registry("format")


@dataclass
class Converted:
    """Result of a conversion.

    Attributes:
        module: the converted model (eval mode).
        mask: mask over ``module``'s own weights (None when weights are not plain tensors).
        reference_mask: mask over the original architecture whose masked-dense function ``module``
            computes (the input mask, or its projection for nm/block).
        report: JSON-serializable facts (per-layer changes, MACs, storage bytes).
        plan: JSON-serializable recipe that rebuilds ``module`` from a fresh model (no pickle).
    """

    module: nn.Module
    mask: Mask | None
    reference_mask: Mask
    report: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)


class SparseFormat:
    """Base of every format. Subclasses set ``atol`` and implement ``convert`` and ``rebuild``."""

    #: max |converted - masked-dense| of the logits, relative to max(1, max |logits|)
    atol: ClassVar[float] = 1e-5

    def __init__(self, **options: Any) -> None:
        self.options = options

    def convert(self, model: nn.Module, mask: Mask, example: torch.Tensor) -> Converted:  # pragma: no cover
        """Convert ``model`` (masked-dense, not modified) using a probe batch ``example`` (B, C, H, W)."""
        raise NotImplementedError

    def rebuild(self, model: nn.Module, plan: dict[str, Any], example: torch.Tensor) -> nn.Module:
        """Re-create the converted architecture from a fresh ``model`` and a saved ``plan``.

        The default keeps the architecture (formats that only change weights); weights are loaded
        by the caller afterwards.
        """
        return model

    def save_state(self, converted: Converted) -> dict[str, torch.Tensor]:
        """Plain (dense) tensors to store; ``rebuild`` + ``load_state`` must restore the module."""
        return {k: v.detach().clone() for k, v in converted.module.state_dict().items()}

    def load_state(self, module: nn.Module, state: dict[str, torch.Tensor], plan: dict[str, Any]) -> nn.Module:
        module.load_state_dict(state)
        return module.eval()


def get_format(name: str, **options: Any) -> SparseFormat:
    """Instantiate a registered format (unknown names raise UsageError with "did you mean")."""
    return FORMATS.get(name)(**options)


def check_equal(converted: Converted, model: nn.Module, example: torch.Tensor, atol: float, what: str) -> float:
    """Assert the converted module equals masked-dense(reference_mask) on ``example``; returns max |diff|."""
    import copy

    ref_model = copy.deepcopy(model).eval()
    converted.reference_mask.apply(ref_model)
    with torch.no_grad():
        ref = ref_model(example)
        got = converted.module.eval()(example)
    if got.shape != ref.shape:
        raise VerificationError(f"{what}: output shape {tuple(got.shape)} != masked-dense {tuple(ref.shape)}")
    diff = float((got - ref).abs().max()) if ref.numel() else 0.0
    allowed = atol * max(1.0, float(ref.abs().max()) if ref.numel() else 1.0)
    if not diff <= allowed:
        raise VerificationError(f"{what}: output differs from masked-dense by {diff:.3g} > {allowed:.3g}")
    return diff


def check_equal_float64(converted: Converted, model: nn.Module, example: torch.Tensor, atol: float,
                        what: str) -> float:
    """``check_equal`` on float64 copies: the same function check for a badly conditioned net whose
    float32 rounding alone exceeds ``atol`` (random init: logits ~1e4, wrong by ~10 in float32)."""
    import copy

    wide = Converted(copy.deepcopy(converted.module).double(), converted.mask, converted.reference_mask)
    return check_equal(wide, copy.deepcopy(model).double(), example.double(), atol, f"{what} (float64)")


def parse_block(value: str) -> tuple[int, int]:
    """'4x4' -> (4, 4)."""
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise UsageError(f"--block must look like 4x4, got {value!r}") from None
    if h <= 0 or w <= 0:
        raise UsageError(f"--block sizes must be positive, got {value!r}")
    return h, w
