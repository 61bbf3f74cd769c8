"""Default search lengths and defaults of the strong-ticket methods (issue 21)."""

from __future__ import annotations

import pytest

from sparsekit.data.synthetic import make_synthetic
from sparsekit.masking.prunable import prunable_tensors
from sparsekit.methods import SearchContext, get_method
from sparsekit.methods.cts import REFERENCE_MIN_STEPS, default_search_epochs, settle_steps
from sparsekit.train.loop import TrainConfig
from tests.unit._nets import lenet, one_thread  # noqa: F401  (autouse: one torch thread)


def test_cts_default_length_is_the_training_budget_when_that_is_long_enough():
    # 160 epochs of 98 steps (the reference's CIFAR-10 setting) -> r = 1: all 160
    assert default_search_epochs(160, 98, 0.01) == 160


def test_cts_default_length_never_below_the_reference_shortest_search():
    # lenet300 / Fashion-MNIST at batch 512: 118 steps an epoch, training budget 1 + 3 epochs
    epochs = default_search_epochs(4, 118, 0.01)
    assert epochs * 118 >= REFERENCE_MIN_STEPS
    assert (epochs - 1) * 118 < REFERENCE_MIN_STEPS  # rounded up to whole epochs, not more
    # a 5,000-image subset at batch 512: 10 steps an epoch
    assert default_search_epochs(4, 10, 0.01) * 10 == REFERENCE_MIN_STEPS


def test_cts_default_length_never_below_gradbalance_settle_length():
    # a slower EMA needs longer than the reference's 2,000 steps to settle
    ema = 0.001
    assert settle_steps(ema) > REFERENCE_MIN_STEPS
    assert default_search_epochs(4, 100, ema) * 100 >= settle_steps(ema)


# -- progress lines of the learned-mask searches (issue 21 item 3) ----------------------------------


def test_search_progress_line_has_step_budget_objective_and_time_left():
    from sparsekit.methods._search_progress import SearchProgress

    lines: list[str] = []
    p = SearchProgress("cts", 10, lines.append, interval=0.0)
    for step in range(1, 11):
        p.update(step, lambda: {"expected density": "1.0000%", "objective": 0.25})
    assert len(lines) == 10
    assert lines[4].startswith("cts search step 5/10 (50%): expected density 1.0000%, objective 0.25, ")
    assert lines[-1].endswith("0s left")  # nothing left after the last step


def test_search_progress_is_rate_limited_and_computes_fields_only_when_due():
    from sparsekit.methods._search_progress import SearchProgress

    lines: list[str] = []
    calls = []
    p = SearchProgress("gates", 1000, lines.append, interval=3600.0)
    for step in range(1, 1001):
        p.update(step, lambda: calls.append(1) or {})
    assert lines == [] and calls == []


@pytest.mark.parametrize("method", ["cts", "gates", "edge-popup"])
def test_every_learned_mask_search_reports_progress(method, monkeypatch):
    import sparsekit.methods._search_progress as sp

    monkeypatch.setattr(sp, "INTERVAL_S", 0.0)
    data = make_synthetic(n_train=256, n_test=64)
    model = lenet(data)
    lines: list[str] = []
    ctx = SearchContext(model=model, data=data, names=list(prunable_tensors(model)), sparsity=0.9,
                        search_steps=3, train_cfg=TrainConfig(batch_size=64), progress=lines.append)
    get_method(method, {"batch_size": 64}).search(ctx)
    steps = [ln for ln in lines if ln.startswith(f"{method} search step ")]
    assert [ln.split()[3] for ln in steps] == ["1/3", "2/3", "3/3"]
    budget = "density" if method == "edge-popup" else "expected density"
    objective = "objective" if method == "cts" else "loss"
    assert all(f", {budget} " in ln or f": {budget} " in ln for ln in steps)
    assert all(f" {objective} " in ln and ln.endswith(" left") for ln in steps)


# -- inits and frozen-weight options of the strong tickets (issue 21 item 1) -------------------------


def test_uniform_init_is_unscaled_and_kaiming_uniform_is_fan_in_scaled():
    import math

    import torch

    from sparsekit.models.init import WEIGHT_INITS

    g = torch.Generator().manual_seed(0)
    w = torch.empty(300, 784)
    u = WEIGHT_INITS["uniform"](w, g)
    k = WEIGHT_INITS["kaiming-uniform"](w, g)
    assert 0.99 < float(u.abs().max()) <= 1.0  # U(-1, 1) whatever the fan-in
    bound = math.sqrt(6.0 / 784)
    assert 0.99 * bound < float(k.abs().max()) <= bound
    assert abs(float(u.std()) - 1 / math.sqrt(3)) < 0.01


def test_weight_scale_is_validated_and_only_for_strong_tickets():
    from sparsekit.errors import UsageError

    assert get_method("gates").options.weight_scale == "density"
    assert get_method("edge-popup", {"weight_scale": "density"}).options.weight_scale == "density"
    with pytest.raises(UsageError, match="--weight-scale must be one of density, none"):
        get_method("gates", {"weight_scale": "sqrt"})
    with pytest.raises(UsageError, match="no option 'weight_scale'"):
        get_method("cts", {"weight_scale": "density"})


def test_edge_popup_global_topk_keeps_the_exact_global_count():
    from sparsekit.masking.select.topk import budget_keep

    data = make_synthetic(n_train=256, n_test=64)
    model = lenet(data)
    ctx = SearchContext(model=model, data=data, names=list(prunable_tensors(model)), sparsity=0.9,
                        search_steps=8, train_cfg=TrainConfig(batch_size=64))
    res = get_method("edge-popup", {"topk": "global"}).search(ctx)
    total = sum(p.numel() for p in ctx.params().values())
    assert res.mask.kept == budget_keep(total, 0.9) and res.info["layerwise"] is False
    per_layer = [int(t.sum()) for _, t in res.mask.items()]
    sizes = [t.numel() for _, t in res.mask.items()]
    assert per_layer != [budget_keep(n, 0.9) for n in sizes]  # a global ranking, not per-layer quotas
