"""Latency budgets: the per-layer table is measured once, cached in the run directory and reused;
interpolation is exact at the measured widths; unreachable budgets fail with one clear line."""

from __future__ import annotations

import pytest
import torch

from sparsekit.bench import latency_table as lt
from sparsekit.budget import Budget
from sparsekit.errors import UsageError
from sparsekit.masking.coupling.channel_space import UnitSpace, select_by_cost
from sparsekit.masking.prunable import prunable_tensors
from tests.unit._nets import one_thread  # noqa: F401 (autouse fixture)
from tests.unit.test_channel_budget import IN_SHAPE, UserNet


@pytest.fixture()
def fake_timer(monkeypatch):
    """Layer time = MACs / 1e6 ms (deterministic), model time = the sum of its layers' MACs / 1e6."""
    calls = {"layer": 0, "model": 0}

    def time_layer(g, cin, cout, runtime, batch, threads):
        calls["layer"] += 1
        groups = cin if g.kind == "depthwise" else g.groups
        return batch * g.positions * g.kernel * cout * (cin // groups) / 1e6

    def time_model(model, in_shape, runtime, batch, threads):
        from sparsekit.bench.macs import torch_macs

        calls["model"] += 1
        return batch * torch_macs(model, in_shape) / 1e6

    monkeypatch.setattr(lt, "time_layer", time_layer)
    monkeypatch.setattr(lt, "time_model", time_model)
    return calls


def _space():
    torch.manual_seed(0)
    model = UserNet().eval()
    return model, UnitSpace(model, list(prunable_tensors(model)), IN_SHAPE)


def test_table_is_cached_in_the_run_dir_and_reused(tmp_path, fake_timer):
    model, space = _space()
    first = lt.build_table(space, "ort-cpu", 1, 1, tmp_path)
    measured = fake_timer["layer"]
    assert measured > 0 and (tmp_path / lt.TABLE_FILE).is_file()
    again = lt.build_table(space, "ort-cpu", 1, 1, tmp_path)
    assert fake_timer["layer"] == measured  # nothing measured the second time
    assert again == first
    lt.build_table(space, "ort-cpu", 8, 1, tmp_path)  # another batch: other conditions, measured again
    assert fake_timer["layer"] > measured


def test_interpolation_is_exact_at_measured_widths_and_differentiable(tmp_path, fake_timer):
    model, space = _space()
    table = lt.build_table(space, "ort-cpu", 1, 1, None)
    g = next(g for g in space.layers if g.kind == "conv" and g.in_width > 1)
    entry = table[lt.layer_key(g)]
    for a, ci in enumerate(entry["in"]):
        for b, co in enumerate(entry["out"]):
            got = lt.interpolate(entry, g.kind, torch.tensor(float(ci), dtype=torch.float64),
                                 torch.tensor(float(co), dtype=torch.float64))
            assert float(got) == pytest.approx(entry["ms"][a][b])
    w = torch.tensor(float(entry["out"][-1]) - 0.5, dtype=torch.float64, requires_grad=True)
    lt.interpolate(entry, g.kind, torch.tensor(float(entry["in"][-1]), dtype=torch.float64), w).backward()
    assert float(w.grad) > 0  # fewer kept channels, less time


def test_latency_budget_selection_and_clear_failures(tmp_path, fake_timer):
    model, space = _space()
    dense_ms = lt.time_model(model, IN_SHAPE, "ort-cpu", 1, 1)
    cost = lt.latency_cost(space, model, Budget("latency", dense_ms / 3), tmp_path)
    assert cost.dense == pytest.approx(dense_ms)  # overhead calibrates the table to the whole model
    keep, stats = select_by_cost(torch.rand(space.size, generator=torch.Generator().manual_seed(0)), space, cost,
                                 dense_ms / 3)
    assert stats["budget_achieved"] <= dense_ms / 3
    with pytest.raises(UsageError, match="below what the smallest allowed widths reach") as exc:
        select_by_cost(torch.zeros(space.size), space, cost, dense_ms / 1e4)
    assert "\n" not in str(exc.value)
    with pytest.raises(UsageError, match="already runs in"):
        lt.latency_cost(space, model, Budget("latency", dense_ms * 2), tmp_path)
    with pytest.raises(UsageError, match="--budget-runtime"):
        lt.build_table(space, "tensorrt", 1, 1, None)


def test_real_ort_timing_of_each_layer_kind():
    """One real ONNX Runtime point per layer kind: positive, finite milliseconds."""
    model, space = _space()
    kinds = {}
    for g in space.layers:
        kinds.setdefault(g.kind, g)
    assert set(kinds) == {"conv", "depthwise", "linear"}
    for g in kinds.values():
        ms = lt.time_layer(g, g.in_width, g.out_width, "ort-cpu", 1, 1)
        assert 0 <= ms < 1000
