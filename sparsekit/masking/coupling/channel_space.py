"""The channel decision space: one keep variable per coupled channel unit, and what the network costs.

``UnitSpace`` maps U unit keep values (probabilities during a channel-level search, 0/1 at the end)
to

* multipliers for every parameter a unit gates: the weight rows of all its coupled layers, their
  bias entries and the BatchNorm affine that follows them (so a closed unit emits exactly 0 during
  the search too, as it will after structured removal);
* the geometry the cost of the network that remains is computed from (``sparsekit.cost.models``:
  candidate channels, prunable parameters, MACs; latency from a measured table,
  sparsekit/bench/latency_table.py). Costs are exact for 0/1 keeps and expectations under
  independent Bernoulli keeps for probabilities, differentiable in them, so GradBalance can hold a
  MAC or latency budget instead of a count.

MACs of a Conv/Linear layer after removal = positions x kernel x (kept output rows x kept input
channels, per group); a layer's input channels belong to the units of the layers that produce them
(Torch-Pruning's dependency graph, ``coupled_channel_groups``), so removing a unit shrinks its own
layers and every consumer. Layers that are not prunable keep their rows but still lose input
columns; MACs outside Conv/Linear layers (attention's matrix products) are a constant.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sparsekit.binary_mask import Mask
from sparsekit.masking.coupling.channel_groups import (
    _LAYERS,
    _example,
    channel_units,
    layer_bn_pairs,
    probe_forward,
)
from sparsekit.progress import step


@dataclass
class LayerGeometry:
    """One Conv/Linear layer in unit terms (index U = "always kept": the image, classes, fixed rows)."""

    weight: str
    out_idx: torch.Tensor  # (out,) unit of each output row
    in_idx: torch.Tensor  # (in,) unit of each input channel / feature
    groups: int
    kernel: int  # weights per (output row, input channel) pair: prod(kernel size)
    positions: int  # output positions per sample (H_out * W_out; tokens for a Linear on sequences)
    corr_units: torch.Tensor  # units that are both an output row and an input channel of one group
    corr_counts: torch.Tensor  # how many (row, channel) pairs of that unit (float64)
    kind: str  # "conv", "depthwise" or "linear"
    in_width: int
    out_width: int
    #: what a latency table needs to rebuild the layer alone: input spatial size (or token count),
    #: kernel size, stride, padding, dilation
    config: dict[str, Any] = field(default_factory=dict)

    def pairs(self, q: torch.Tensor) -> torch.Tensor:
        """Expected kept (row, channel) pairs for unit keep values ``q`` of shape (U + 1,), q[U] = 1.

        E[keep_o * keep_c] = q_o * q_c for different units and q_u for the same unit (a depthwise
        conv's channel is its own input), hence the correction term; exact for 0/1 keeps.
        """
        po = q[self.out_idx].view(self.groups, -1).sum(1)  # (G,)
        pi = q[self.in_idx].view(self.groups, -1).sum(1)  # (G,)
        c = q[self.corr_units]
        return (po * pi).sum() + (self.corr_counts.to(q.dtype) * (c - c * c)).sum()

    def widths(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected kept (input, output) widths."""
        return q[self.in_idx].sum(), q[self.out_idx].sum()


class UnitSpace:
    """Units of a model restricted to the prunable weights ``names`` (see module docstring)."""

    def __init__(self, model: nn.Module, names: list[str], in_shape: tuple[int, ...]) -> None:
        with step("tracing channel couplings"):
            self._build(model, names, in_shape)

    def _build(self, model: nn.Module, names: list[str], in_shape: tuple[int, ...]) -> None:
        self.names = list(names)
        self.in_shape = tuple(in_shape)
        self.units = channel_units(model, self.names, self.in_shape)
        self.size = len(self.units.units)
        U = self.size
        params = dict(model.named_parameters())
        self.shapes = {n: tuple(params[n].shape) for n in self.names}
        unit_of: dict[tuple[str, int], int] = {}
        for u, rows in enumerate(self.units.units):
            for row in rows:
                unit_of[row] = u
        self.unit_sizes = torch.tensor([len(rows) for rows in self.units.units], dtype=torch.float64)
        # (out,) unit of every output row of each prunable weight (U for the classifier's rows)
        self.row_units = {n: torch.tensor([unit_of.get((n, r), U) for r in range(self.shapes[n][0])])
                          for n in self.names}
        example = _example(model, self.in_shape)
        mod_name = {m: n for n, m in model.named_modules()}
        # multipliers for the parameters that make a closed channel emit a constant otherwise
        self.extra_units: dict[str, torch.Tensor] = {}
        for mod in model.modules():
            fqn = f"{mod_name[mod]}.weight"
            if isinstance(mod, _LAYERS) and fqn in self.row_units and getattr(mod, "bias", None) is not None:
                self.extra_units[f"{mod_name[mod]}.bias"] = self.row_units[fqn]
        for layer, bn in layer_bn_pairs(model, example):
            fqn = f"{mod_name[layer]}.weight"
            if fqn in self.row_units and bn.weight is not None and bn.weight.shape[0] == self.shapes[fqn][0]:
                self.extra_units[f"{mod_name[bn]}.weight"] = self.row_units[fqn]
                self.extra_units[f"{mod_name[bn]}.bias"] = self.row_units[fqn]
        self.layers = self._geometry(model, example, unit_of)

    # -- construction --
    def _geometry(self, model: nn.Module, example: torch.Tensor, unit_of: dict) -> list[LayerGeometry]:
        U = self.size
        mod_name = {m: n for n, m in model.named_modules()}
        in_idx: dict[str, torch.Tensor] = {}
        layers = [m for m in model.modules() if isinstance(m, _LAYERS)]
        for m in layers:
            width = m.in_channels if not isinstance(m, nn.Linear) else m.in_features
            in_idx[f"{mod_name[m]}.weight"] = torch.full((width,), U, dtype=torch.long)
        for g in self.units.groups:
            root_unit = [U] * g["channels"]
            for j in range(g["channels"]):
                for member in g["members"]:
                    u = unit_of.get((member["weight"], member["rows"][j]))
                    if u is not None:
                        root_unit[j] = u
                        break
            for item in g.get("inputs", []):
                idx = in_idx.get(item["weight"])
                if idx is None:
                    continue
                for j, cols in enumerate(item["cols"]):
                    for c in cols:
                        if 0 <= c < idx.numel():
                            idx[c] = root_unit[j]
        positions: dict[str, int] = defaultdict(int)
        in_sizes: dict[str, list[int]] = {}

        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            ch = out.shape[-1] if isinstance(mod, nn.Linear) else out.shape[1]
            positions[f"{mod_name[mod]}.weight"] += out.numel() // max(ch, 1) // out.shape[0]
            x = inp[0]
            in_sizes.setdefault(f"{mod_name[mod]}.weight",
                                list(x.shape[1:-1]) if isinstance(mod, nn.Linear) else list(x.shape[2:]))

        probe_forward(model, example, [m.register_forward_hook(hook) for m in layers])
        out = []
        for m in layers:
            fqn = f"{mod_name[m]}.weight"
            w = m.weight
            rows = self.row_units.get(fqn, torch.full((w.shape[0],), U, dtype=torch.long))
            cols = in_idx[fqn]
            groups = getattr(m, "groups", 1)
            depthwise = groups > 1 and groups == cols.numel() == rows.numel()
            if depthwise and bool((cols == U).all()):
                cols = rows.clone()  # a depthwise conv's input channel c is coupled to its output c
            kind = "linear" if isinstance(m, nn.Linear) else ("depthwise" if depthwise else "conv")
            corr_u, corr_n = _same_unit_pairs(rows, cols, groups, U)
            config: dict[str, Any] = {"in_size": in_sizes.get(fqn, [])}
            if not isinstance(m, nn.Linear):
                config.update(kernel=list(m.kernel_size), stride=list(m.stride), dilation=list(m.dilation),
                              padding=list(m.padding) if not isinstance(m.padding, str) else m.padding)
            out.append(LayerGeometry(fqn, rows, cols, groups, math.prod(w.shape[2:]), positions.get(fqn, 0),
                                     corr_u, corr_n, kind, cols.numel(), rows.numel(), config))
        return out

    # -- keep values -> multipliers / masks --
    def extend(self, p: torch.Tensor) -> torch.Tensor:
        """(U,) keep values -> (U + 1,) with the always-kept slot."""
        return torch.cat([p, p.new_ones(1)])

    def multipliers(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{param FQN: multiplier}`` broadcasting against each gated parameter."""
        q = self.extend(p)
        out = {}
        for n, idx in self.row_units.items():
            idx = idx.to(q.device)
            out[n] = q[idx].view(-1, *([1] * (len(self.shapes[n]) - 1)))  # (out, 1, ..., 1)
        for n, idx in self.extra_units.items():
            out[n] = q[idx.to(q.device)]
        return out

    def mask(self, keep: torch.Tensor) -> Mask:
        """The weight mask of 0/1 unit keeps (whole rows)."""
        q = self.extend(keep.to(torch.bool).cpu())
        return Mask({n: q[idx].view(-1, *([1] * (len(self.shapes[n]) - 1))).expand(self.shapes[n]).clone()
                     for n, idx in self.row_units.items()})

    def unit_scores(self, row_scores: dict[str, torch.Tensor]) -> torch.Tensor:
        """(U,) mean of per-row scores over each unit's rows."""
        return torch.tensor([sum(float(row_scores[n][r]) for n, r in rows) / len(rows)
                             for rows in self.units.units], dtype=torch.float64)


def _same_unit_pairs(rows: torch.Tensor, cols: torch.Tensor, groups: int, U: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Units that appear as an output row and an input channel of the same group, with pair counts."""
    g_rows = torch.arange(rows.numel()) // max(rows.numel() // groups, 1)
    g_cols = torch.arange(cols.numel()) // max(cols.numel() // groups, 1)
    ko, no = torch.unique(g_rows * (U + 1) + rows, return_counts=True)
    ki, ni = torch.unique(g_cols * (U + 1) + cols, return_counts=True)
    common, io, ii = _intersect(ko, ki)
    units = common % (U + 1)
    keep = units != U
    counts = (no[io] * ni[ii]).to(torch.float64)
    # one entry per unit (summed over groups)
    uniq, inv = torch.unique(units[keep], return_inverse=True)
    total = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inv, counts[keep])
    return uniq, total


def _intersect(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted unique tensors a, b -> (common values, their positions in a, in b)."""
    ia = torch.isin(a, b)
    common = a[ia]
    pos_a = torch.nonzero(ia).flatten()
    pos_b = torch.searchsorted(b, common)
    return common, pos_a, pos_b


# ---------------------------------------------------------------------------------------------------
# costs and selection under a cost budget live in sparsekit.cost (re-exported: old imports keep working)

from sparsekit.cost.models import (  # noqa: E402,F401
    ChannelCost,
    CostModel,
    MacCost,
    ParamCost,
    cost_for,
    mac_cost,
    uniform_keep,
)
from sparsekit.cost.select import select_by_cost  # noqa: E402,F401
