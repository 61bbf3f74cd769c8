"""sparse-cpu latency tables of unstructured tickets: each distinct layer timed alone vs its density.

The model a search spends the budget with is ``sparsekit.cost.engine_latency`` (see its docstring);
this module measures it on the engine. Each distinct prunable Conv/Linear layer (same kind, widths,
kernel, stride, padding, groups and input size = same time) is timed alone, as a one-node ONNX
graph, with the sparse kernel at a grid of densities (random masks of exactly that many non-zeros)
and with the dense kernel once. The table is cached as JSON per (CPU model, engine ISA, batch,
threads, density grid) in ``cache_dir`` (default ``$XDG_CACHE_HOME/sparsekit/engine_latency``);
layers already there are reused, new ones are measured and added. ``EngineLatencySource`` is what
the pipeline hands a search for ``--budget latency=MS --budget-runtime sparse-cpu``: the table
calibrated on the measured dense model, and ``measure(mask)``: the masked ticket exported to ONNX
and timed on the engine, as deployed.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsekit._io import read_json, write_json
from sparsekit.cost.budget import Budget
from sparsekit.cost.engine_latency import DENSITIES, RUNTIME, EngineLatency, Layer, model_layers
from sparsekit.errors import UsageError

log = logging.getLogger("sparsekit")

WARMUP, BLOCKS, BLOCK_S = 3, 5, 0.01
#: table points and whole models: the FASTEST of many short blocks. On a machine shared with other work
#: a 10 ms block is almost never undisturbed (a sub-0.1 ms call sees every time slice another process
#: takes); some of 50-100 blocks of ~1 ms are, and other work only ever adds time
TABLE_BLOCKS, MODEL_BLOCKS, SHORT_BLOCK_S = 51, 101, 0.001
#: a whole model (the calibration, each correction round: they decide the result) is timed in this many
#: such rounds, this far apart, and the fastest kept
MODEL_ROUNDS, MODEL_PAUSE_S = 3, 0.2


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
    fn: Callable[[], Any], warmup: int = WARMUP, blocks: int = BLOCKS, block_s: float = BLOCK_S,
    stat: Callable[[list[float]], float] | None = None,
) -> float:
    """Per-call milliseconds over ``blocks`` blocks of at least ``block_s`` seconds: the median of the
    blocks, or ``stat`` of them (the table and the whole-model measurements take the fastest block,
    see TABLE_BLOCKS)."""
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
    return (stat or statistics.median)(out)


def _raw_ms(spec: dict[str, Any], density: float, kernels: str, batch: int, threads: int) -> float:
    from sparsekit import engine

    with tempfile.TemporaryDirectory(prefix="sparsekit-elat-") as tmp:
        path = Path(tmp) / "layer.onnx"
        x = _layer_onnx(spec, density, batch, path)
        sess = engine.load(path, threads=threads, verify=False, cache=False, kernels=kernels)
        return median_ms(lambda: sess.run(x), blocks=TABLE_BLOCKS, block_s=SHORT_BLOCK_S, stat=min)


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
    best = float("inf")
    for i in range(MODEL_ROUNDS):  # rounds apart in time: a load spike rarely covers all of them
        if i:
            time.sleep(MODEL_PAUSE_S)
        best = min(best, median_ms(lambda: sess.run(x), blocks=MODEL_BLOCKS, block_s=SHORT_BLOCK_S, stat=min))
    return best


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
        "timing": f"fastest of {TABLE_BLOCKS} blocks of {SHORT_BLOCK_S * 1e3:g} ms",  # how a point is timed
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
    timer: Callable[[dict[str, Any], float, str, int, int], float] | None = None,
) -> dict[str, Any]:
    """``{layer key: {"density": [...], "sparse_ms": [...], "dense_ms": float}}``, cached and reused."""
    timer = timer or time_layer
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

def time_masked(model: nn.Module, mask: dict[str, torch.Tensor], in_shape: tuple[int, ...], batch: int,
                threads: int) -> float:
    """Measured ms of ``model`` with the weights outside ``mask`` zeroed, exported to ONNX and run on
    sparse-cpu (the engine picks each layer's kernel from its zeros, as for a deployed ticket)."""
    from sparsekit.export.onnx_export import to_onnx_proto

    ticket = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        for name, keep in mask.items():
            ticket.get_parameter(name).mul_(keep.cpu().to(torch.float32))
        proto, _ = to_onnx_proto(ticket, tuple(in_shape), static_batch=batch)
    proto.ir_version = 8
    with tempfile.TemporaryDirectory(prefix="sparsekit-elat-") as tmp:
        path = Path(tmp) / "ticket.onnx"
        path.write_bytes(proto.SerializeToString())
        return time_onnx(path, batch, threads)


def floor_mask(model: nn.Module, densities: dict[str, float]) -> dict[str, torch.Tensor]:
    """Random masks of exactly round(d * numel) kept weights (at least 1) per layer (seeded)."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, d in densities.items():
        w = model.get_parameter(name)
        keep = torch.zeros(w.numel(), dtype=torch.bool)
        keep[torch.randperm(w.numel(), generator=g)[: max(1, round(d * w.numel()))]] = True
        out[name] = keep.view_as(w)
    return out


class EngineLatencySource:
    """The ``LatencySource`` of a sparse-cpu budget (sparsekit.cost.latency): weight tickets only."""

    def __init__(self, budget: Budget, run_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None) -> None:
        self.budget, self.run_dir, self.cache_dir = budget, run_dir, cache_dir
        self._made: dict[tuple, EngineLatency] = {}

    def for_units(self, space: Any, model: nn.Module) -> Any:
        raise UsageError(f"--budget-runtime {RUNTIME} times unstructured tickets: use --granularity weight")

    def for_weights(self, model: nn.Module, names: list[str], in_shape: tuple[int, ...]) -> EngineLatency:
        """The table of ``model``'s layers (cached), calibrated on the dense model measured on the engine,
        with ``measure(mask)``; made once per (names, input shape) and reused."""
        key = (tuple(names), tuple(in_shape))
        if key not in self._made:
            b = self.budget
            cost = EngineLatency(model_layers(model, names, in_shape), {})
            cost.table = build_table(cost.layers, b.batch, b.threads, self.cache_dir)
            ref = copy.deepcopy(model).cpu().eval()
            cost.measure = lambda mask: time_masked(ref, mask, in_shape, b.batch, b.threads)
            dense = cost.measure({})
            floor = cost.measure(floor_mask(ref, cost.floor_densities()))
            cost.calibrate(dense, floor)
            log.info("latency budget %.4g ms: model measured %.4g ms dense, %.4g ms with every layer at its "
                     "lowest table density (%s, batch %d, %d thread(s))", b.value, dense, floor, RUNTIME, b.batch,
                     b.threads)
            self._made[key] = cost
        return self._made[key]


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
