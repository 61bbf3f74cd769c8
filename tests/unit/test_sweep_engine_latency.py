"""sparse-cpu latency vs layer density: table cached and reused, differentiable cost, greedy allocation,
unreachable budgets refused."""

from __future__ import annotations

import json

import pytest
import torch

from sparsekit.bench.engine_table import build_table
from sparsekit.cost.engine_latency import EngineLatency, Layer, layer_ms, model_layers
from sparsekit.errors import UsageError


def _layer(name: str, fin: int, fout: int) -> Layer:
    spec = {"kind": "linear", "in": fin, "out": fout}
    return Layer(name, json.dumps(spec, sort_keys=True), fin * fout, spec)


class _Timer:
    """Fake engine: sparse time proportional to the non-zeros, dense time fixed; counts calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, spec, density, kernels, batch, threads):
        self.calls.append((spec["in"], spec["out"], density, kernels, batch, threads))
        macs = spec["in"] * spec["out"] * batch / 1e4
        return 0.5 * macs if kernels == "dense" else macs * density


def test_table_is_cached_per_batch_and_reused(tmp_path):
    timer = _Timer()
    layers = [_layer("a.weight", 100, 50), _layer("b.weight", 100, 50), _layer("c.weight", 50, 10)]
    t1 = build_table(
        layers, batch=1, threads=1, cache_dir=tmp_path, densities=(0.1, 0.5, 1.0), timer=timer
    )
    assert len(t1) == 2 and len(timer.calls) == 2 * (3 + 1)  # a and b time the same: measured once
    assert len(list(tmp_path.glob("*.json"))) == 1
    t2 = build_table(
        layers, batch=1, threads=1, cache_dir=tmp_path, densities=(0.1, 0.5, 1.0), timer=timer
    )
    assert t2 == t1 and len(timer.calls) == 8  # reused: nothing measured again
    build_table(
        [*layers, _layer("d.weight", 20, 10)],
        batch=1,
        threads=1,
        cache_dir=tmp_path,
        densities=(0.1, 0.5, 1.0),
        timer=timer,
    )
    assert len(timer.calls) == 12 and {c[:2] for c in timer.calls[8:]} == {
        (20, 10)
    }  # only the new layer
    build_table(
        layers, batch=4, threads=1, cache_dir=tmp_path, densities=(0.1, 0.5, 1.0), timer=timer
    )
    assert len(timer.calls) == 20 and all(
        c[4] == 4 for c in timer.calls[12:]
    )  # another batch: own table
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_expected_latency_is_differentiable_in_keep_probabilities(tmp_path):
    layers = [_layer("a.weight", 100, 50), _layer("c.weight", 50, 10)]
    table = build_table(layers, cache_dir=tmp_path, densities=(0.1, 0.5, 1.0), timer=_Timer())
    cost = EngineLatency(layers, table, overhead=0.01)
    p_a = torch.full(
        (50, 100), 0.3, requires_grad=True
    )  # sparse kernel region: time falls with density
    p_c = torch.full((10, 50), 0.9, requires_grad=True)  # dense kernel region (0.9 > 0.5): flat
    ms = cost.expected({"a.weight": p_a, "c.weight": p_c})
    assert ms.item() == pytest.approx(0.01 + 0.5 * 0.3 + 0.05 * 0.5)
    ms.backward()
    assert p_a.grad.abs().sum() > 0 and torch.all(p_c.grad == 0)
    assert cost.dense_ms() == pytest.approx(0.01 + 0.25 + 0.025)


def test_layer_time_is_the_faster_kernel():
    entry = {"density": [0.1, 0.5, 1.0], "sparse_ms": [1.0, 3.0, 6.0], "dense_ms": 4.0}
    assert float(layer_ms(entry, torch.tensor(0.3))) == pytest.approx(2.0)
    assert float(layer_ms(entry, torch.tensor(0.9))) == pytest.approx(4.0)
    assert float(layer_ms(entry, torch.tensor(0.01))) == pytest.approx(1.0)  # clamped to the grid


def _slow_fast(lowest: float) -> EngineLatency:
    """Two 100x100 layers whose grid starts at ``lowest``: removing weights from "slow" saves 10x the time
    of "fast" (sparse time proportional to density, 10 ms / 1 ms dense)."""
    slow, fast = _layer("slow.weight", 100, 100), _layer("fast.weight", 100, 100)
    fast = Layer("fast.weight", fast.key + "#", fast.numel, fast.spec)
    grid = [lowest, 0.5, 1.0]
    table = {
        slow.key: {"density": grid, "sparse_ms": [10.0 * lowest, 5.0, 10.0], "dense_ms": 10.0},
        fast.key: {"density": grid, "sparse_ms": [lowest, 0.5, 1.0], "dense_ms": 1.0},
    }
    return EngineLatency([slow, fast], table)


def test_greedy_allocation_fits_the_budget_and_spends_it_where_time_is():
    cost = _slow_fast(0.1)
    scores = {
        "slow.weight": torch.rand(100, 100, generator=torch.Generator().manual_seed(0)),
        "fast.weight": torch.rand(100, 100, generator=torch.Generator().manual_seed(1)),
    }
    kept = cost.allocate(scores, budget_ms=6.5)
    assert kept == {"slow.weight": 5000, "fast.weight": 10000}  # 5 + 1 = 6 ms, fast left dense
    got = cost.of_densities({n: k / 10000 for n, k in kept.items()})
    assert float(got) <= 6.5


def test_rank_allocation_keeps_the_largest_global_prefix_that_fits():
    # the same two layers as above: greedy empties "slow" first; rank follows the scores instead
    cost = _slow_fast(0.01)
    gen = torch.Generator().manual_seed(0)
    # "slow" holds the better scores: a global ranking keeps it denser than "fast"
    scores = {"slow.weight": 0.5 + torch.rand(100, 100, generator=gen),
              "fast.weight": torch.rand(100, 100, generator=gen)}
    budget = 6.5
    kept = cost.allocate_by_rank(scores, budget)
    total = sum(kept.values())
    flat = torch.cat([scores["slow.weight"].flatten(), scores["fast.weight"].flatten()])

    def top_counts(k: int) -> dict:  # per-layer counts of the k best weights of the global ranking
        top = torch.topk(flat, k).indices
        return {"slow.weight": int((top < 10000).sum()), "fast.weight": int((top >= 10000).sum())}

    assert kept == top_counts(total)  # exactly a prefix of the global ranking
    assert kept["slow.weight"] > kept["fast.weight"] > 1

    def ms(k: dict) -> float:
        return float(cost.of_densities({n: c / 10000 for n, c in k.items()}))

    # fits, and one more weight of the ranking would not (the largest prefix)
    assert ms(kept) <= budget
    assert ms(top_counts(total + 1)) > budget
    # greedy on the same scores spends the budget elsewhere (that is why CTS does not use it)
    assert cost.allocate(scores, budget) != kept
    with pytest.raises(UsageError, match="cannot run this model below"):
        cost.allocate_by_rank(scores, 0.01)


def test_unreachable_and_trivial_budgets_are_refused_with_one_line():
    layer = _layer("a.weight", 10, 10)
    cost = EngineLatency(
        [layer],
        {layer.key: {"density": [0.1, 1.0], "sparse_ms": [0.2, 2.0], "dense_ms": 1.0}},
        overhead=0.05,
    )
    with pytest.raises(UsageError, match=r"cannot run this model below 0\.25 ms") as e:
        cost.allocate({"a.weight": torch.ones(10, 10)}, budget_ms=0.1)
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="already runs in 1.05 ms"):
        cost.allocate({"a.weight": torch.ones(10, 10)}, budget_ms=2.0)


def test_real_engine_table_for_lenet300(tmp_path):
    from sparsekit.bench.runtimes import RUNTIMES
    from sparsekit.models.registry import ModelSpec, build_model

    if RUNTIMES.get("sparse-cpu").unavailable_reason():
        pytest.skip("sparse-cpu engine not built")
    model = build_model(ModelSpec("lenet300", (1, 28, 28), 10), seed=0)
    names = [n for n, _ in model.named_parameters() if n.endswith("weight")]
    layers = model_layers(model, names, (1, 28, 28))
    assert [(lay.spec["in"], lay.spec["out"]) for lay in layers] == [
        (784, 300),
        (300, 100),
        (100, 10),
    ]
    # the largest layer (784x300): well above the cost of a call, which each point has subtracted
    table = build_table(layers[:1], cache_dir=tmp_path, densities=(0.2, 1.0))
    entry = table[layers[0].key]
    assert len(entry["sparse_ms"]) == 2 and all(v >= 0 for v in entry["sparse_ms"])
    assert entry["dense_ms"] > 0 and entry["sparse_ms"][1] > 0


def test_calibration_adds_an_overhead_or_scales_down():
    layer = _layer("a.weight", 10, 10)
    cost = EngineLatency(
        [layer], {layer.key: {"density": [0.1, 1.0], "sparse_ms": [0.2, 2.0], "dense_ms": 1.0}}
    )
    cost.calibrate(1.5)  # slower than the table: pooling, activations, the call
    assert (cost.overhead, cost.scale) == (pytest.approx(0.5), 1.0)
    assert float(cost.of_densities({"a.weight": 0.1})) == pytest.approx(0.7)
    cost.calibrate(0.5)  # faster than the table: layers timed alone cost more than inside the plan
    assert (cost.overhead, cost.scale) == (0.0, pytest.approx(0.5))
    assert cost.dense_ms() == pytest.approx(0.5) and float(
        cost.of_densities({"a.weight": 0.1})
    ) == pytest.approx(0.1)


def test_two_point_calibration_matches_the_measured_floor_and_dense_model():
    layer = _layer("a.weight", 10, 10)
    cost = EngineLatency(
        [layer], {layer.key: {"density": [0.1, 1.0], "sparse_ms": [0.2, 2.0], "dense_ms": 1.0}}
    )
    cost.calibrate(1.5, 0.6)  # table: floor 0.2, dense 1.0
    assert cost.floor_ms() == pytest.approx(0.6) and cost.dense_ms() == pytest.approx(1.5)
    assert cost.scale == pytest.approx(0.9 / 0.8)
    cost.calibrate(1.5, 1.7)  # noise: the floor measured slower than dense -> the dense match alone
    assert (cost.overhead, cost.scale) == (pytest.approx(0.5), 1.0)

