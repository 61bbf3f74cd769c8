"""Latency budgets: a per-layer table of measured milliseconds by kept width, interpolated.

For every distinct Conv/Linear layer shape of a model, the layer alone is timed on the budget's
runtime (ONNX Runtime built straight from an ONNX graph, or torch) at a grid of kept input and
output widths (1/8, 1/4, 1/2, 3/4 and all of each), at the budget's batch and thread count. The
ticket's latency is then

    overhead + sum over layers of T_layer(kept input width, kept output width)

with T interpolated piecewise-linearly (bilinear in the two widths; depthwise convs have one), so
with expected widths from keep probabilities it is a differentiable function a search can hold at
a budget. ``overhead`` = the measured dense model minus the table's dense sum (pooling, adds,
activations; fusion makes it negative sometimes). Selection then measures the converted candidate
and corrects the table target by the ratio (``measure``), so the final number is a measurement.

The table is built once per search and cached in the run directory (``latency_table.json``),
keyed by the runtime, batch, threads, CPU model and runtime version; a rerun reuses it.
``ChannelLatencySource`` is what the pipeline hands a channel search for a latency budget
(sparsekit.cost.latency).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsekit._io import write_json
from sparsekit.cost.budget import CHANNEL_LATENCY_RUNTIMES
from sparsekit.cost.models import CostModel
from sparsekit.errors import UsageError
from sparsekit.masking.coupling.channel_space import LayerGeometry, UnitSpace

log = logging.getLogger("sparsekit")

GRID = (0.125, 0.25, 0.5, 0.75, 1.0)
RUNTIMES = CHANNEL_LATENCY_RUNTIMES
TABLE_FILE = "latency_table.json"
#: timing of one table point: warm-up runs, then blocks of at least BLOCK_S seconds, median of blocks
WARMUP, BLOCKS, BLOCK_S = 3, 5, 0.01


def grid_widths(full: int) -> list[int]:
    """Kept widths the table measures for a layer of ``full`` channels (at least 1, ascending)."""
    return sorted({max(1, round(f * full)) for f in GRID})


def layer_key(g: LayerGeometry) -> str:
    """What makes two layers time the same: kind, widths, groups and the spatial configuration."""
    return json.dumps({"kind": g.kind, "in": g.in_width, "out": g.out_width, "groups": g.groups, **g.config},
                      sort_keys=True)


# -- timing ---------------------------------------------------------------------------------------


def _onnx_layer(g: LayerGeometry, cin: int, cout: int, batch: int, identity: bool = False) -> bytes:
    """A one-node ONNX graph of the layer at widths (cin, cout) with random weights (``identity``:
    the same input through an Identity node, to measure what a call costs without the layer)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    cfg = g.config
    if identity:
        x_shape = [batch, *cfg["in_size"], cin] if g.kind == "linear" else [batch, cin, *cfg["in_size"]]
        nodes, inits = [helper.make_node("Identity", ["x"], ["y"])], []
    elif g.kind == "linear":
        x_shape = [batch, *cfg["in_size"], cin]
        w = numpy_helper.from_array(rng.standard_normal((cin, cout)).astype(np.float32), "w")
        b = numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b")
        nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])]
        inits = [w, b]
    else:
        groups = cin if g.kind == "depthwise" else g.groups
        k = cfg["kernel"]
        x_shape = [batch, cin, *cfg["in_size"]]
        w = numpy_helper.from_array(rng.standard_normal((cout, cin // groups, *k)).astype(np.float32), "w")
        b = numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b")
        attrs: dict[str, Any] = {"kernel_shape": k, "strides": cfg["stride"], "dilations": cfg["dilation"], "group": groups}
        pad = cfg["padding"]
        if isinstance(pad, str):
            attrs["auto_pad"] = "SAME_UPPER" if pad == "same" else "VALID"
        else:
            attrs["pads"] = list(pad) * 2
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)]
        inits = [w, b]
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime accepts up to 13; 8 is enough for opset 17
    return model.SerializeToString()


def _torch_layer(g: LayerGeometry, cin: int, cout: int) -> nn.Module:
    if g.kind == "linear":
        return nn.Linear(cin, cout)
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(g.config["kernel"])]
    groups = cin if g.kind == "depthwise" else g.groups
    return conv(cin, cout, g.config["kernel"], stride=g.config["stride"], padding=g.config["padding"],
                dilation=g.config["dilation"], groups=groups)


def _median_ms(fn) -> float:
    """Median per-call milliseconds of ``fn`` over BLOCKS blocks of at least BLOCK_S seconds."""
    for _ in range(WARMUP):
        fn()
    blocks = []
    for _ in range(BLOCKS):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= BLOCK_S and n >= 2:
                break
        blocks.append(dt / n * 1e3)
    return statistics.median(blocks)


def _ort_session(proto: bytes, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(proto, opts, providers=["CPUExecutionProvider"])


def _onnx_runner(proto: bytes, runtime: str, threads: int):
    """``fn(x)`` running an ONNX graph on ``runtime`` (ORT straight from bytes, others from a temp file)."""
    if runtime == "ort-cpu":
        sess = _ort_session(proto, threads)
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})
    import tempfile

    from sparsekit.bench.runtimes import RUNTIMES

    rt = RUNTIMES.get(runtime)
    reason = rt.unavailable_reason()
    if reason:
        raise UsageError(f"--budget-runtime {runtime}: {reason}")
    with tempfile.TemporaryDirectory(prefix="sparsekit-latency-") as tmp:
        path = Path(tmp) / "layer.onnx"
        path.write_bytes(proto)
        return rt.load(str(path), threads)


def time_layer(g: LayerGeometry, cin: int, cout: int, runtime: str, batch: int, threads: int) -> float:
    """Measured ms of one forward of the layer alone at widths (cin, cout)."""
    if g.kind == "linear":
        x = np.random.default_rng(1).standard_normal((batch, *g.config["in_size"], cin)).astype(np.float32)
    else:
        x = np.random.default_rng(1).standard_normal((batch, cin, *g.config["in_size"])).astype(np.float32)
    if runtime != "torch-cpu":
        # a standalone call costs a fixed ~tens of microseconds that the layer does not cost
        # inside the whole graph: measured with an Identity graph on the same input and subtracted
        run = _onnx_runner(_onnx_layer(g, cin, cout, batch), runtime, threads)
        empty = _onnx_runner(_onnx_layer(g, cin, cout, batch, identity=True), runtime, threads)
        call = _median_ms(lambda: empty(x))
        return max(0.0, _median_ms(lambda: run(x)) - call)
    return _torch_ms(_torch_layer(g, cin, cout).eval(), torch.from_numpy(x), threads)


def _torch_ms(module: nn.Module, x: torch.Tensor, threads: int) -> float:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            return _median_ms(lambda: module(x))
    finally:
        torch.set_num_threads(before)


def time_model(model: nn.Module, in_shape: tuple[int, ...], runtime: str, batch: int, threads: int) -> float:
    """Measured ms of one forward of a whole model (ONNX export for the ONNX runtimes)."""
    model = model.eval()
    if runtime != "torch-cpu":
        from sparsekit.export.onnx_export import to_onnx_proto

        proto, _ = to_onnx_proto(model, tuple(in_shape), static_batch=batch)
        proto.ir_version = 8
        run = _onnx_runner(proto.SerializeToString(), runtime, threads)
        x = np.random.default_rng(1).standard_normal((batch, *in_shape)).astype(np.float32)
        return _median_ms(lambda: run(x))
    return _torch_ms(model, torch.randn(batch, *in_shape), threads)


# -- table ----------------------------------------------------------------------------------------


def _cache_key(runtime: str, batch: int, threads: int) -> dict[str, Any]:
    from sparsekit.bench.env import cpu_model

    version = torch.__version__
    if runtime == "ort-cpu":
        import onnxruntime

        version = onnxruntime.__version__
    elif runtime != "torch-cpu":
        from sparsekit.bench.runtimes import RUNTIMES

        version = RUNTIMES.get(runtime).version()
    return {"runtime": runtime, "runtime_version": version, "batch": batch, "threads": threads,
            "cpu": cpu_model(), "grid": list(GRID)}


def build_table(space: UnitSpace, runtime: str, batch: int, threads: int, run_dir: Path | None) -> dict[str, Any]:
    """``{layer_key: {"in": [...], "out": [...], "ms": [[...]]}}`` for every distinct layer (cached)."""
    if runtime not in RUNTIMES:
        raise UsageError(f"--budget-runtime must be one of {', '.join(RUNTIMES)} for a latency budget, got {runtime!r}")
    key = _cache_key(runtime, batch, threads)
    path = Path(run_dir) / TABLE_FILE if run_dir is not None else None
    cached: dict[str, Any] = {}
    if path is not None and path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            cached = stored.get("layers", {})
        else:
            log.info("latency table %s was measured under other conditions; measuring again", path)
    layers = dict(cached)
    t0, measured = time.perf_counter(), 0
    for g in space.layers:
        k = layer_key(g)
        if k in layers or g.positions == 0:
            continue
        if g.kind == "conv" and g.groups > 1:  # grouped convs keep their groups: dense time, scaled by MACs
            layers[k] = {"in": [g.in_width], "out": [g.out_width],
                         "ms": [[time_layer(g, g.in_width, g.out_width, runtime, batch, threads)]]}
            measured += 1
            continue
        outs = grid_widths(g.out_width)
        ins = outs if g.kind == "depthwise" else grid_widths(g.in_width)
        if g.kind == "depthwise":
            ms = [[time_layer(g, w, w, runtime, batch, threads) for w in outs]]
        else:
            ms = [[time_layer(g, ci, co, runtime, batch, threads) for co in outs] for ci in ins]
        measured += len(ms) * len(ms[0])
        layers[k] = {"in": ins, "out": outs, "ms": ms}
    if measured:
        log.info("latency table: %d layer shapes, %d points measured in %.1fs (%s, batch %d, %d thread(s))",
                 len(layers), measured, time.perf_counter() - t0, runtime, batch, threads)
        if path is not None:
            write_json(path, {"key": key, "layers": layers})
    return layers


def _interp(xs: list[int], ys: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment index and weight of piecewise-linear interpolation at x (clamped to the grid)."""
    grid = torch.tensor(xs, dtype=torch.float64)
    x = x.clamp(grid[0], grid[-1]) if len(xs) > 1 else x
    if len(xs) == 1:
        return torch.zeros((), dtype=torch.long), x / grid[0]
    i = torch.clamp(torch.searchsorted(grid, x.detach().reshape(1)).reshape(()) - 1, 0, len(xs) - 2)
    t = (x - grid[i]) / (grid[i + 1] - grid[i])
    return i, t


def interpolate(entry: dict[str, Any], kind: str, w_in: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
    """Table ms at expected widths (differentiable in them)."""
    ms = torch.tensor(entry["ms"], dtype=torch.float64)
    if kind == "depthwise":
        j, u = _interp(entry["out"], ms[0], w_out)
        row = ms[0]
        return row[j] + u * (row[j + 1] - row[j]) if len(entry["out"]) > 1 else row[0] * u
    if len(entry["in"]) == 1 and len(entry["out"]) == 1:  # one point (a 1-channel layer): scale it
        return ms[0, 0] * (w_in / entry["in"][0]) * (w_out / entry["out"][0])
    if len(entry["in"]) == 1:  # one input width (the image's channels): 1-D in the output width
        j, u = _interp(entry["out"], ms[0], w_out)
        return (ms[0, j] + u * (ms[0, j + 1] - ms[0, j])) * (w_in / entry["in"][0])
    if len(entry["out"]) == 1:
        i, t = _interp(entry["in"], ms[:, 0], w_in)
        return (ms[i, 0] + t * (ms[i + 1, 0] - ms[i, 0])) * (w_out / entry["out"][0])
    i, t = _interp(entry["in"], ms[:, 0], w_in)
    j, u = _interp(entry["out"], ms[0], w_out)
    a, b = ms[i, j], ms[i, j + 1]
    c, d = ms[i + 1, j], ms[i + 1, j + 1]
    return (1 - t) * ((1 - u) * a + u * b) + t * ((1 - u) * c + u * d)


class LatencyCost(CostModel):
    """Milliseconds per batch from the table (``expected``/``exact``), ``measure`` for the real thing."""

    kind, unit = "latency", "ms"

    def __init__(self, space: UnitSpace, table: dict[str, Any], overhead: float, model: nn.Module,
                 runtime: str, batch: int, threads: int) -> None:
        self.table, self.overhead = table, overhead
        self.model, self.runtime, self.batch, self.threads = model, runtime, batch, threads
        self._layers = [(g, table[layer_key(g)]) for g in space.layers if g.positions > 0]
        super().__init__(space)

    def layer_sum(self, p: torch.Tensor) -> torch.Tensor:
        q = self.space.extend(p.to(torch.float64))
        total = q.new_zeros(())
        for g, entry in self._layers:
            w_in, w_out = g.widths(q)
            if g.kind == "conv" and g.groups > 1:  # both widths scale the grouped conv's MACs
                frac = g.pairs(q) / g.pairs(torch.ones_like(q))
                total = total + torch.tensor(entry["ms"][0][0], dtype=torch.float64) * frac
            else:
                total = total + interpolate(entry, g.kind, w_in, w_out)
        return total

    def expected(self, p: torch.Tensor) -> torch.Tensor:
        return (self.layer_sum(p) + self.overhead).clamp_min(0.0)

    def measure(self, keep: torch.Tensor) -> float:
        """Measured ms of the model with the units not in ``keep`` physically removed."""
        from sparsekit.formats.structured import Structured
        from sparsekit.masking.coupling.channel_groups import training_mask

        ticket = copy.deepcopy(self.model).eval()
        mask = self.space.mask(keep)
        with torch.no_grad():
            training_mask(ticket, mask, self.space.in_shape).apply(ticket)
        example = torch.randn(4, *self.space.in_shape, generator=torch.Generator().manual_seed(0))
        converted = Structured().convert(ticket, mask, example)
        return time_model(converted.module, self.space.in_shape, self.runtime, self.batch, self.threads)


def latency_cost(space: UnitSpace, model: nn.Module, budget: Any, run_dir: Path | None) -> LatencyCost:
    """The LatencyCost of ``budget`` (runtime, batch, threads) for ``model``; refuses a budget the
    dense model already meets."""
    if budget.threads > (os.cpu_count() or 1):
        raise UsageError(f"--budget-threads {budget.threads} exceeds the {os.cpu_count()} CPU cores of this machine")
    table = build_table(space, budget.runtime, budget.batch, budget.threads, run_dir)
    dense_ms = time_model(copy.deepcopy(model), space.in_shape, budget.runtime, budget.batch, budget.threads)
    probe = LatencyCost(space, table, 0.0, model, budget.runtime, budget.batch, budget.threads)
    overhead = dense_ms - float(probe.layer_sum(torch.ones(space.size, dtype=torch.float64)))
    cost = LatencyCost(space, table, overhead, model, budget.runtime, budget.batch, budget.threads)
    log.info("latency budget %.4g ms: dense model measured %.4g ms (%s, batch %d, %d thread(s))",
             budget.value, dense_ms, budget.runtime, budget.batch, budget.threads)
    if budget.value >= dense_ms:
        raise UsageError(f"--budget latency={budget.value:g} ms: the dense model already runs in {dense_ms:.4g} ms "
                         f"({budget.runtime}, batch {budget.batch}); ask for less")
    return cost


class ChannelLatencySource:
    """The ``LatencySource`` of a dense-runtime latency budget (sparsekit.cost.latency): channel tickets."""

    def __init__(self, budget: Any, run_dir: str | Path | None = None) -> None:
        self.budget, self.run_dir = budget, run_dir

    def for_units(self, space: UnitSpace, model: nn.Module) -> LatencyCost:
        return latency_cost(space, model, self.budget, Path(self.run_dir) if self.run_dir is not None else None)

    def for_weights(self, model: nn.Module, names: list[str], in_shape: tuple[int, ...]) -> Any:
        raise UsageError(f"--budget-runtime {self.budget.runtime} times structured tickets: use --granularity "
                         "channel (unstructured tickets: --budget-runtime sparse-cpu)")
