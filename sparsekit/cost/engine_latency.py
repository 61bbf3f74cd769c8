"""Latency of an unstructured ticket on sparse-cpu: a per-layer table of measured time vs layer density.

Each distinct prunable Conv/Linear layer of a model (same kind, widths, kernel, stride, padding,
groups and input size = same time) is timed ALONE on the engine, as a one-node ONNX graph, with the
sparse kernel at a grid of densities (random masks of exactly that many non-zeros) and with the dense
kernel once (its time does not depend on the zeros). At load the engine runs each layer with the faster
of its two kernels, so a layer at density d costs

    T(d) = min(sparse_ms(d) interpolated piecewise-linearly, dense_ms)

and the model ``scale * sum_l T_l(d_l) + overhead``, calibrated on the measured model: ``scale`` and
``overhead`` map the table's sums at the floor (every layer at the lowest grid density) and at dense
onto the model measured both ways (the call, activations and fusion are in that map; one dense
measurement alone gives an overhead, or a scale when the model is faster than the table). With
expected densities d_l = mean keep probability of layer l this is differentiable in the keep probabilities (``EngineLatency.expected``); ``allocate``
spends a latency budget greedily where the table turns removed weights into time (score methods), and
``allocate_by_rank`` keeps one global ranking's largest prefix that fits (CTS, whose keep probabilities
already priced the latency during the search).

The table is measured (and cached per CPU model, engine ISA, batch, threads and density grid) by
sparsekit/bench/engine_table.py; this module is the model a search spends a budget with.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparsekit.errors import UsageError

#: densities the sparse kernel is timed at (1.0 included: the sparse kernel on a dense layer)
DENSITIES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
RUNTIME = "sparse-cpu"


@dataclass(frozen=True)
class Layer:
    """A prunable layer as the engine sees it."""

    name: str  # weight FQN
    key: str  # what makes two layers time the same
    numel: int
    spec: dict[str, Any]


def model_layers(model: nn.Module, names: list[str], in_shape: tuple[int, ...]) -> list[Layer]:
    """The Conv2d/Linear layers whose weights are in ``names``, with their input sizes (one probe forward)."""
    wanted = {n.rsplit(".", 1)[0]: n for n in names if n.endswith("weight")}
    sizes: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out, name=name: sizes.__setitem__(name, tuple(inp[0].shape[1:]))
        )
        for name, m in model.named_modules()
        if name in wanted and isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    modes = {m: m.training for m in model.modules()}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *in_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():  # a search may hold the model in its own mode
            m.training = mode
    out = []
    for name, m in model.named_modules():
        if name not in sizes:
            continue
        if isinstance(m, nn.Linear):
            if len(sizes[name]) != 1:
                continue  # Linear over sequences: not a Gemm the engine plans per layer
            spec = {"kind": "linear", "in": m.in_features, "out": m.out_features}
        else:
            if not isinstance(m.padding, tuple):
                continue  # padding="same"/"valid" strings: not timed (left to the overhead)
            spec = {
                "kind": "conv",
                "in": m.in_channels,
                "out": m.out_channels,
                "kernel": list(m.kernel_size),
                "stride": list(m.stride),
                "padding": list(m.padding),
                "dilation": list(m.dilation),
                "groups": m.groups,
                "in_size": list(sizes[name][1:]),
            }
        out.append(Layer(wanted[name], json.dumps(spec, sort_keys=True), m.weight.numel(), spec))
    return out


# -- the model ------------------------------------------------------------------------------------


def layer_ms(entry: dict[str, Any], density: torch.Tensor) -> torch.Tensor:
    """T(d) = min(sparse kernel interpolated at d, dense kernel): differentiable in d (float64 scalar).
    The sparse points are made non-decreasing in d first (timing noise under load)."""
    grid = torch.tensor(entry["density"], dtype=torch.float64)
    # a sparser layer is never slower: a noisy point above a denser one is read as the denser one's time
    ms = torch.tensor(entry["sparse_ms"], dtype=torch.float64).flip(0).cummin(0).values.flip(0)
    d = density.to(torch.float64).clamp(float(grid[0]), 1.0)
    if len(grid) == 1:
        sparse = ms[0] * d / grid[0]
    else:
        i = torch.clamp(
            torch.searchsorted(grid, d.detach().reshape(1)).reshape(()) - 1, 0, len(grid) - 2
        )
        t = (d - grid[i]) / (grid[i + 1] - grid[i])
        sparse = ms[i] + t * (ms[i + 1] - ms[i])
    return torch.minimum(sparse, torch.tensor(float(entry["dense_ms"]), dtype=torch.float64))


class EngineLatency:
    """Expected sparse-cpu milliseconds of a ticket from its per-layer densities or keep probabilities."""

    def __init__(
        self,
        layers: list[Layer],
        table: dict[str, Any],
        overhead: float = 0.0,
        scale: float = 1.0,
        measure: Callable[[dict[str, torch.Tensor]], float] | None = None,
    ) -> None:
        self.layers, self.table, self.overhead, self.scale = layers, table, overhead, scale
        #: measured ms of the model under a weight mask ({FQN: bool tensor}) on the engine, when known
        self.measure = measure

    def calibrate(self, measured_dense_ms: float, measured_floor_ms: float | None = None) -> None:
        """Match the measured dense model: additive overhead if it is slower than the table, else a scale.

        With ``measured_floor_ms`` (the model measured with every layer at the grid's lowest density)
        both ends are matched: ``scale`` and ``overhead`` of the affine map from the table's floor and
        dense sums to the two measurements (falls back to the dense match when noise makes the floor
        measure no faster than the dense model).
        """
        self.overhead, self.scale = 0.0, 1.0
        table_dense, table_floor = self.dense_ms(), self.floor_ms()
        if measured_floor_ms is not None and measured_floor_ms < measured_dense_ms and table_floor < table_dense:
            self.scale = (measured_dense_ms - measured_floor_ms) / (table_dense - table_floor)
            self.overhead = measured_dense_ms - self.scale * table_dense
            return
        if measured_dense_ms >= table_dense or table_dense <= 0:
            self.overhead = measured_dense_ms - table_dense
        else:
            self.scale = measured_dense_ms / table_dense

    def of_densities(self, densities: dict[str, Any]) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float64)
        for layer in self.layers:
            d = densities.get(layer.name, 1.0)
            total = total + layer_ms(self.table[layer.key], torch.as_tensor(d, dtype=torch.float64))
        return (self.scale * total + self.overhead).clamp_min(0.0)

    def floor_densities(self) -> dict[str, float]:
        """Every layer at its table's lowest density (what ``floor_ms`` prices)."""
        return {layer.name: self.table[layer.key]["density"][0] for layer in self.layers}

    def expected(self, keep_probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Expected latency with keep probabilities per weight (a layer's density = their mean)."""
        return self.of_densities({n: p.to(torch.float64).mean() for n, p in keep_probs.items()})

    def dense_ms(self) -> float:
        return float(self.of_densities({}))

    def floor_ms(self) -> float:
        """The fastest the table allows: every layer at its fastest grid density."""
        return float(self.of_densities(self.floor_densities()))

    def uniform_density(self, budget_ms: float) -> float:
        """The one density of every layer whose expected latency is ``budget_ms`` (bisection; clamped
        to the table's grid): the nominal density of a latency budget."""
        grid0 = min((self.table[layer.key]["density"][0] for layer in self.layers), default=1.0)
        lo, hi = grid0, 1.0
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            if float(self.of_densities({layer.name: mid for layer in self.layers})) < budget_ms:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    def check(self, budget_ms: float) -> None:
        """Refuse, with one line, a budget the engine cannot reach or the dense model already meets."""
        dense, floor = self.dense_ms(), self.floor_ms()
        if budget_ms >= dense:
            raise UsageError(
                f"--budget latency={budget_ms:g} ms: the dense model already runs in {dense:.4g} ms "
                f"on {RUNTIME} (table); ask for less"
            )
        if budget_ms < floor:
            lowest = self.table[self.layers[0].key]["density"][0] if self.layers else 0.0
            raise UsageError(
                f"--budget latency={budget_ms:g} ms: {RUNTIME} cannot run this model below "
                f"{floor:.4g} ms (every layer at density {lowest:g}); ask for at least that"
            )

    def allocate(
        self, scores: dict[str, torch.Tensor], budget_ms: float, fill: bool = False
    ) -> dict[str, int]:
        """Per-layer kept-weight counts within ``budget_ms`` that keep the most score (greedy).

        ``scores``: higher = keep (as for top-k); -inf (weights a method already removed) counts as
        the lowest finite score. Starting dense, repeatedly move ONE layer down to a lower grid
        density, choosing the move that loses the least score (sum of the lowest-scored weights given
        up) per millisecond saved, until the expected latency fits. A move that saves no time (the
        dense kernel's flat region) is only taken as part of a deeper move that does. Refuses budgets
        the engine cannot reach or the dense model already meets, with one line (``check``). With
        ``fill`` the layer of the last move then gets back the weights the budget still allows (the
        table is piecewise linear between grid densities): the expected latency lands on the budget.
        """
        self.check(budget_ms)
        ranked = {
            layer.name: torch.sort(_finite(scores[layer.name]), descending=True).values.cumsum(0)
            for layer in self.layers
        }
        level = {layer.name: len(self.table[layer.key]["density"]) - 1 for layer in self.layers}

        def kept(layer: Layer, lvl: int) -> int:
            return max(1, round(self.table[layer.key]["density"][lvl] * layer.numel))

        def t(layer: Layer, lvl: int) -> float:
            return float(
                layer_ms(self.table[layer.key], torch.tensor(self.table[layer.key]["density"][lvl]))
            )

        current, last = self.dense_ms(), None
        while current > budget_ms:
            best = None
            for layer in self.layers:
                cum, lv = ranked[layer.name], level[layer.name]
                for target in range(lv - 1, -1, -1):
                    saved = t(layer, lv) - t(layer, target)
                    if saved <= 1e-12:
                        continue
                    lost = float(cum[kept(layer, lv) - 1] - cum[kept(layer, target) - 1])
                    ratio = lost / saved
                    if best is None or ratio < best[0]:
                        best = (ratio, layer, target, saved)
            if best is None:
                break
            _, layer, target, saved = best
            last = (layer, level[layer.name], target)
            level[layer.name] = target
            current -= self.scale * saved
        counts = {layer.name: kept(layer, level[layer.name]) for layer in self.layers}
        if fill and last is not None:  # the last move overshoots: give its layer back what the budget allows
            layer, above, below = last
            grid = self.table[layer.key]["density"]
            dens = {n.name: counts[n.name] / n.numel for n in self.layers}
            lo, hi = grid[below], grid[above]
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                if float(self.of_densities({**dens, layer.name: mid})) <= budget_ms:
                    lo = mid
                else:
                    hi = mid
            counts[layer.name] = max(counts[layer.name], min(layer.numel, int(lo * layer.numel)))
        return counts

    def allocate_by_rank(self, scores: dict[str, torch.Tensor], budget_ms: float) -> dict[str, int]:
        """Per-layer kept-weight counts of the GLOBALLY highest-scored weights whose table latency fits
        ``budget_ms``: the largest such prefix of one ranking over all layers (bisection on its length;
        at least one weight per layer), so each layer's density is what the scores themselves give it.

        For scores that already priced latency - CTS keep probabilities learned while GradBalance held
        the expected engine latency - this keeps the search's own per-layer allocation, where ``allocate``
        (greedy by score lost per ms saved) would trade accuracy for time a second time: on resnet20 it
        emptied the large-map stage-1 layers to the grid's 1 % floor (docs/benchmarks.md, latency budget).
        Refuses unreachable or trivial budgets with one line (``check``).
        """
        self.check(budget_ms)
        flat = [_finite(scores[layer.name]) for layer in self.layers]
        owner = torch.cat([torch.full((f.numel(),), i, dtype=torch.long) for i, f in enumerate(flat)])
        order = torch.sort(torch.cat(flat), descending=True, stable=True).indices  # earlier layer first on ties
        ranked_owner = owner[order]  # (N,) layer index of the k-th best weight

        def counts_at(k: int) -> dict[str, int]:
            per = torch.bincount(ranked_owner[:k], minlength=len(self.layers))
            return {layer.name: max(1, int(per[i])) for i, layer in enumerate(self.layers)}

        def fits(k: int) -> bool:
            counts = counts_at(k)
            return float(self.of_densities({n.name: counts[n.name] / n.numel for n in self.layers})) <= budget_ms

        lo, hi = 0, int(ranked_owner.numel())  # fits(lo) assumed (the floor is below the budget: check)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid - 1
        return counts_at(lo)


class FlatLatency:
    """An EngineLatency over one flat vector of per-weight keep values (layer ``n`` at ``offsets[n]``):
    the cost interface of a weight-level learned search (``dense``, ``expected(p)``, ``fraction(keep)``)."""

    kind, unit = "latency", "ms"

    def __init__(self, cost: EngineLatency, offsets: dict[str, tuple[int, int]]) -> None:
        self.cost, self.offsets = cost, offsets
        self.dense = cost.dense_ms()

    def expected(self, p: torch.Tensor) -> torch.Tensor:
        return self.cost.expected({n: p[s:e] for n, (s, e) in self.offsets.items()})

    def fraction(self, keep: torch.Tensor) -> float:
        return float(self.expected(keep.to(torch.float64))) / self.dense if self.dense else 1.0


def _finite(score: torch.Tensor) -> torch.Tensor:
    """Flat float64 scores with -inf/+inf replaced by one below/above the finite range."""
    flat = score.detach().reshape(-1).to(torch.float64).cpu()
    if torch.isnan(flat).any():
        raise UsageError("scores contain NaN; cannot allocate a latency budget")
    finite = flat[torch.isfinite(flat)]
    lo = float(finite.min()) - 1.0 if finite.numel() else 0.0
    hi = float(finite.max()) + 1.0 if finite.numel() else 0.0
    return flat.nan_to_num(posinf=hi, neginf=lo)
