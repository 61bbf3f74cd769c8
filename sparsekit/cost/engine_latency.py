"""Latency of an unstructured ticket on sparse-cpu: a per-layer table of measured time vs layer density.

Each distinct prunable Conv/Linear layer of a model (same kind, widths, kernel, stride, padding,
groups and input size = same time) is timed ALONE on the engine, as a one-node ONNX graph, with the
sparse kernel at a grid of densities (random masks of exactly that many non-zeros) and with the dense
kernel once (its time does not depend on the zeros). At load the engine runs each layer with the faster
of its two kernels, so a layer at density d costs

    T(d) = min(sparse_ms(d) interpolated piecewise-linearly, dense_ms)

and the model ``scale * sum_l T_l(d_l) + overhead``, calibrated on the measured dense model: when it
is slower than the table's dense sum, ``overhead`` = the difference (pooling, activations, the call);
when it is faster (fusion, layers timed alone cost more than inside the plan), ``scale`` = their ratio. With expected densities d_l = mean keep probability of
layer l this is differentiable in the keep probabilities (``EngineLatency.expected``); ``allocate``
spends a latency budget greedily where the table turns removed weights into time.

The table is cached as JSON per (CPU model, engine ISA, batch, threads, density grid) in ``cache_dir``
(default ``$XDG_CACHE_HOME/sparsekit/engine_latency``); layers already there are reused, new ones are
measured and added.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsekit._io import read_json, write_json
from sparsekit.errors import UsageError

log = logging.getLogger("sparsekit")

#: densities the sparse kernel is timed at (1.0 included: the sparse kernel on a dense layer)
DENSITIES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
WARMUP, BLOCKS, BLOCK_S = 3, 5, 0.01
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
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *in_shape))
    finally:
        for h in hooks:
            h.remove()
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


# -- timing ---------------------------------------------------------------------------------------


def _layer_onnx(spec: dict[str, Any], density: float, batch: int, path: Path) -> np.ndarray:
    """Write the layer as a one-node ONNX graph with exactly round(density * numel) non-zero weights;
    returns an input for it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if spec["kind"] == "linear":
        w_shape, x_shape = (spec["out"], spec["in"]), [batch, spec["in"]]
    else:
        w_shape = (spec["out"], spec["in"] // spec["groups"], *spec["kernel"])
        x_shape = [batch, spec["in"], *spec["in_size"]]
    w = rng.standard_normal(w_shape).astype(np.float32)
    flat = w.reshape(-1)
    keep = max(1, round(density * flat.size))
    flat[rng.permutation(flat.size)[keep:]] = 0.0
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(rng.standard_normal(spec["out"]).astype(np.float32), "b"),
    ]
    if spec["kind"] == "linear":
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    else:
        node = helper.make_node(
            "Conv",
            ["x", "w", "b"],
            ["y"],
            kernel_shape=spec["kernel"],
            strides=spec["stride"],
            dilations=spec["dilation"],
            group=spec["groups"],
            pads=spec["padding"] * 2,
        )
    graph = helper.make_graph(
        [node],
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return rng.standard_normal(x_shape).astype(np.float32)


def median_ms(
    fn: Callable[[], Any], warmup: int = WARMUP, blocks: int = BLOCKS, block_s: float = BLOCK_S
) -> float:
    """Median per-call milliseconds over ``blocks`` blocks of at least ``block_s`` seconds."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(blocks):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= block_s and n >= 2:
                break
        out.append(dt / n * 1e3)
    return statistics.median(out)


def _raw_ms(spec: dict[str, Any], density: float, kernels: str, batch: int, threads: int) -> float:
    from sparsekit import engine

    with tempfile.TemporaryDirectory(prefix="sparsekit-elat-") as tmp:
        path = Path(tmp) / "layer.onnx"
        x = _layer_onnx(spec, density, batch, path)
        sess = engine.load(path, threads=threads, verify=False, cache=False, kernels=kernels)
        return median_ms(lambda: sess.run(x))


#: a 1x1 Gemm: what one ``Session.run`` costs with (almost) no layer in it
CALL_SPEC = {"kind": "linear", "in": 1, "out": 1}


@functools.lru_cache(maxsize=8)
def call_ms(batch: int, threads: int) -> float:
    """Measured ms of a call of the engine on a 1x1 Gemm (per process, batch and threads)."""
    return _raw_ms(CALL_SPEC, 1.0, "dense", batch, threads)


def time_layer(
    spec: dict[str, Any], density: float, kernels: str, batch: int, threads: int
) -> float:
    """Measured ms of the layer alone on sparse-cpu with the ``kernels`` ("sparse" or "dense")
    forced, minus what a call costs without it (a standalone call pays it once per layer, the whole
    model once: the table would count it once per layer otherwise)."""
    return max(0.0, _raw_ms(spec, density, kernels, batch, threads) - call_ms(batch, threads))


def time_onnx(path: str | Path, batch: int, threads: int) -> float:
    """Measured ms of a whole ONNX model on sparse-cpu (kernels chosen by the engine, as deployed)."""
    from sparsekit import engine

    sess = engine.load(path, threads=threads, verify=False)
    x = np.random.default_rng(1).standard_normal((batch, *sess.input_shape)).astype(np.float32)
    return median_ms(lambda: sess.run(x))


# -- table ----------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sparsekit" / "engine_latency"


def cache_key(batch: int, threads: int, densities: tuple[float, ...] = DENSITIES) -> dict[str, Any]:
    from sparsekit import engine
    from sparsekit.bench.env import cpu_model

    isa = os.environ.get("SPARSEKIT_ENGINE_ISA") or (engine.available_isas() or ["?"])[0]
    return {
        "runtime": RUNTIME,
        "cpu": cpu_model(),
        "isa": isa,
        "batch": batch,
        "threads": threads,
        "densities": list(densities),
    }


def cache_path(key: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir or default_cache_dir()) / f"{digest}.json"


def build_table(
    layers: list[Layer],
    batch: int = 1,
    threads: int = 1,
    cache_dir: str | Path | None = None,
    densities: tuple[float, ...] = DENSITIES,
    timer: Callable[[dict[str, Any], float, str, int, int], float] = time_layer,
) -> dict[str, Any]:
    """``{layer key: {"density": [...], "sparse_ms": [...], "dense_ms": float}}``, cached and reused."""
    if batch < 1 or threads < 1:
        raise UsageError(f"batch and threads must be >= 1, got batch {batch}, threads {threads}")
    if threads > (os.cpu_count() or 1):
        raise UsageError(
            f"--budget-threads {threads} exceeds the {os.cpu_count()} CPU cores of this machine"
        )
    grid = tuple(sorted(set(densities)))
    if not grid or grid[0] <= 0 or grid[-1] != 1.0:
        raise UsageError(
            f"the density grid must be in (0, 1] and end at 1.0, got {list(densities)}"
        )
    key = cache_key(batch, threads, grid)
    path = cache_path(key, cache_dir)
    table: dict[str, Any] = {}
    if path.is_file():
        stored = read_json(path)
        if stored.get("key") == key:
            table = dict(stored.get("layers", {}))
    t0, measured = time.perf_counter(), 0
    for layer in layers:
        if layer.key in table:
            continue
        sparse = [timer(layer.spec, d, "sparse", batch, threads) for d in grid]
        dense = timer(layer.spec, 1.0, "dense", batch, threads)
        table[layer.key] = {"density": list(grid), "sparse_ms": sparse, "dense_ms": dense}
        measured += len(grid) + 1
    if measured:
        log.info(
            "engine latency table: %d layer shapes, %d points measured in %.1fs (batch %d, %d thread(s)) -> %s",
            len(table),
            measured,
            time.perf_counter() - t0,
            batch,
            threads,
            path,
        )
        write_json(path, {"key": key, "layers": table})
    return table


def layer_ms(entry: dict[str, Any], density: torch.Tensor) -> torch.Tensor:
    """T(d) = min(sparse kernel interpolated at d, dense kernel): differentiable in d (float64 scalar)."""
    grid = torch.tensor(entry["density"], dtype=torch.float64)
    ms = torch.tensor(entry["sparse_ms"], dtype=torch.float64)
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
        self, layers: list[Layer], table: dict[str, Any], overhead: float = 0.0, scale: float = 1.0
    ) -> None:
        self.layers, self.table, self.overhead, self.scale = layers, table, overhead, scale

    def calibrate(self, measured_dense_ms: float) -> None:
        """Match the measured dense model: additive overhead if it is slower than the table, else a scale."""
        self.overhead, self.scale = 0.0, 1.0
        table_dense = self.dense_ms()
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

    def expected(self, keep_probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Expected latency with keep probabilities per weight (a layer's density = their mean)."""
        return self.of_densities({n: p.to(torch.float64).mean() for n, p in keep_probs.items()})

    def dense_ms(self) -> float:
        return float(self.of_densities({}))

    def floor_ms(self) -> float:
        """The fastest the table allows: every layer at its fastest grid density."""
        return float(
            self.of_densities(
                {layer.name: self.table[layer.key]["density"][0] for layer in self.layers}
            )
        )

    def allocate(self, scores: dict[str, torch.Tensor], budget_ms: float) -> dict[str, int]:
        """Per-layer kept-weight counts within ``budget_ms`` that keep the most score (greedy).

        Starting dense, repeatedly move ONE layer down to a lower grid density, choosing the move that
        loses the least score (sum of the lowest-scored weights given up) per millisecond saved, until
        the expected latency fits. A move that saves no time (the dense kernel's flat region) is only
        taken as part of a deeper move that does. Refuses budgets the engine cannot reach or the dense
        model already meets, with one line.
        """
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
        ranked = {
            layer.name: torch.sort(
                scores[layer.name].detach().reshape(-1).abs().to(torch.float64), descending=True
            ).values.cumsum(0)
            for layer in self.layers
        }
        level = {layer.name: len(self.table[layer.key]["density"]) - 1 for layer in self.layers}

        def kept(layer: Layer, lvl: int) -> int:
            return max(1, round(self.table[layer.key]["density"][lvl] * layer.numel))

        def t(layer: Layer, lvl: int) -> float:
            return float(
                layer_ms(self.table[layer.key], torch.tensor(self.table[layer.key]["density"][lvl]))
            )

        current = dense
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
            level[layer.name] = target
            current -= saved
        return {layer.name: kept(layer, level[layer.name]) for layer in self.layers}


def engine_latency(
    model: nn.Module,
    names: list[str],
    in_shape: tuple[int, ...],
    batch: int = 1,
    threads: int = 1,
    cache_dir: str | Path | None = None,
    dense_onnx: str | Path | None = None,
    densities: tuple[float, ...] = DENSITIES,
) -> EngineLatency:
    """The EngineLatency of ``model``; with ``dense_onnx`` (the dense model exported) calibrated on
    its measured time (``EngineLatency.calibrate``), else the table alone."""
    layers = model_layers(model, names, in_shape)
    table = build_table(layers, batch, threads, cache_dir, densities)
    cost = EngineLatency(layers, table)
    if dense_onnx is not None:
        cost.calibrate(time_onnx(dense_onnx, batch, threads))
    return cost
