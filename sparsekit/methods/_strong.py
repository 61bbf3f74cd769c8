"""Frozen weights of a strong-ticket search (gates, edge-popup): per-layer scale and non-affine BN.

A strong ticket never trains a weight, so the frozen weights' scale is a hyper-parameter of the
search. Two settings act on theta_K before the search and are carried into the ticket through
``SearchResult.state_updates`` (the pipeline loads them after restoring theta_K, so the deployed
ticket is the network the search saw):

* ``weight_scale="density"``: every prunable weight is multiplied by 1 / sqrt(d), d the layer's
  kept fraction (the target density; a channel-level search: the starting keep fraction). A layer
  keeping a fraction d of its inputs then keeps the dense layer's output variance, as in edge-popup's
  scaled init (Ramanujan et al.'s code: std sqrt(2 / (d * fan_in))). For a network without biases
  and BN this changes no mask's predictions, only the softmax temperature the search starts from
  (at 95 % on lenet300 the gated outputs start with std 4e-4, not 1.5; docs/algorithms.md §7.4).
* ``bn_affine=False`` (non-affine BN, the edge-popup reference's choice): BN scale 1 and shift 0.
  The zoo's BN models start with BN scale ~ U(0, 1) (open_lth's init), a random frozen per-channel
  factor a strong ticket cannot train; non-affine BN removes it.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sparsekit.errors import UsageError

WEIGHT_SCALES = ("density", "none")


def check_weight_scale(value: str, where: str) -> None:
    if value not in WEIGHT_SCALES:
        raise UsageError(f"{where}: --weight-scale must be one of {', '.join(WEIGHT_SCALES)}, got {value!r}")


@torch.no_grad()
def prepare_frozen(model: nn.Module, names: list[str], density: float, weight_scale: str,
                   bn_affine: bool) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """(the network the search runs on, the tensors it changed as {FQN: CPU copy} for
    ``SearchResult.state_updates``). ``model`` itself is never modified: when the weights are scaled
    or BN made non-affine, the search runs on a copy."""
    factor = scale_factor(density, weight_scale)
    scale = factor != 1.0
    bns = [] if bn_affine else [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm) and m.affine]
    if not scale and not bns:
        return model, {}
    model = copy.deepcopy(model)
    changed: dict[str, torch.Tensor] = {}
    if scale:
        for n in names:
            p = model.get_parameter(n)
            p.mul_(factor)
            changed[n] = p.detach().cpu().clone()
    for name, _ in bns:
        m = model.get_submodule(name)
        m.weight.fill_(1.0)
        m.bias.zero_()
        changed[f"{name}.weight"] = m.weight.detach().cpu().clone()
        changed[f"{name}.bias"] = m.bias.detach().cpu().clone()
    return model, changed


@torch.no_grad()
def apply_recorded(model: nn.Module, names: list[str], info: dict) -> None:
    """Give ``model`` (any init: sanity ablations) the frozen-weight treatment a strong-ticket search
    recorded in its info (``weight_scale_factor``, ``bn_affine``), in place."""
    factor = float(info.get("weight_scale_factor", 1.0))
    if factor != 1.0:
        for n in names:
            model.get_parameter(n).mul_(factor)
    if info.get("bn_affine") is False:
        for m in model.modules():
            if isinstance(m, _BatchNorm) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()


def scale_factor(density: float, weight_scale: str) -> float:
    """The factor ``prepare_frozen`` multiplies the prunable weights by."""
    return 1.0 / math.sqrt(density) if weight_scale == "density" and 0.0 < density < 1.0 else 1.0
