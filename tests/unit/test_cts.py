"""CTS: exact budgets, frozen weights, GradBalance known answers, KL directions, diagnostics."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from sparsekit import paths
from sparsekit.data.synthetic import make_synthetic
from sparsekit.errors import UsageError
from sparsekit.masking.prunable import prunable_tensors
from sparsekit.masking.relax.concrete import init_logits, logistic_noise, relaxed_mask
from sparsekit.masking.relax.gradbalance import (
    GradBalance,
    LagrangeBalance,
    sparsity_gradient,
    stable_norm,
)
from sparsekit.masking.select.topk import budget_keep
from sparsekit.methods import SearchContext, get_method
from sparsekit.methods.cts_objectives import forward_kl, reverse_kl
from tests.unit import _nets
from tests.unit._nets import lenet


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_train=1024, n_test=128)


def bn_net() -> nn.Module:
    return _nets.bn_net(3)


def ctx_for(model, data, sparsity=0.9, **kw) -> SearchContext:
    return SearchContext(model=model, data=data, names=list(prunable_tensors(model)), sparsity=sparsity,
                         search_epochs=kw.pop("search_epochs", 1), **kw)


def cts(**opts):
    return get_method("cts", {"batch_size": 256, **opts})


# --- exact budgets ---------------------------------------------------------------------------

@pytest.mark.parametrize("objective", ["kl", "ce", "fkl", "msefeature"])
@pytest.mark.parametrize("arch", ["lenet300", "bn"])
def test_exact_sparsity_every_objective(objective, arch, data):
    model = lenet(data) if arch == "lenet300" else bn_net()
    ctx = ctx_for(model, data, sparsity=0.93)
    mask = cts(objective=objective, max_steps=2).search(ctx).mask
    total = sum(p.numel() for p in ctx.params().values())
    assert mask.kept == budget_keep(total, 0.93)


def test_lagrange_and_layerwise_budgets(data):
    model = lenet(data)
    ctx = ctx_for(model, data, sparsity=0.8, layerwise=True)
    res = cts(balance="lagrange", max_steps=3).search(ctx)
    for _n, t in res.mask.items():
        assert int(t.sum()) == budget_keep(t.numel(), 0.8)
    assert res.info["balance"] == "lagrange"


def test_channel_granularity_keeps_whole_channels(data):
    model = bn_net()
    ctx = ctx_for(model, data, sparsity=0.5, granularity="channel")
    mask = cts(max_steps=2).search(ctx).mask
    for _, t in mask.items():
        rows = t.reshape(t.shape[0], -1)
        assert bool(((rows.all(1)) | (~rows.any(1))).all())  # each output channel all-or-nothing


def test_invert_keeps_the_lowest_logits(data):
    model = lenet(data)
    m1 = cts(max_steps=2).search(ctx_for(model, data, sparsity=0.9)).mask
    m2 = cts(max_steps=2, invert=True).search(ctx_for(model, data, sparsity=0.9)).mask
    assert m1.kept == m2.kept and (m1 & m2).kept == 0  # same search, disjoint top / bottom 10 %


# --- frozen weights and BN -------------------------------------------------------------------

def test_weights_and_bn_buffers_bit_identical_after_search(data):
    model = bn_net()
    model.train()
    before = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    cts(max_steps=3).search(ctx_for(model, data, sparsity=0.9))
    after = model.state_dict()
    for k in before:  # weights, biases, running stats and num_batches_tracked
        assert torch.equal(before[k], after[k]), k
    assert [p.requires_grad for p in model.parameters()] == flags
    assert model.training  # modes restored


# --- the relaxation --------------------------------------------------------------------------

def test_binary_concrete_reference_parameterization():
    a = init_logits(4, 0.2)
    assert torch.allclose(torch.sigmoid(a), torch.full((4,), 0.2))
    noise = torch.tensor([0.0, 1.0, -2.0, 0.5])
    tau = 2 / 3
    expected = torch.sigmoid(a + noise / tau)  # sigma(a + l / tau), i.e. log_alpha = tau * a
    assert torch.allclose(relaxed_mask(a, noise, tau), expected)
    g = torch.Generator().manual_seed(0)
    ell = logistic_noise(200_000, g)
    assert torch.isfinite(ell).all()
    # P(m > 1/2) = sigma(tau * a) for this parameterization (docs/algorithms.md §2.2)
    a0 = math.log(0.01 / 0.99)
    p = float((relaxed_mask(torch.full_like(ell, a0), ell, tau) > 0.5).float().mean())
    assert abs(p - 1 / (1 + math.exp(-tau * a0))) < 0.003


# --- GradBalance known answers ---------------------------------------------------------------

def _ratio(g_obj, pi, gb):
    g_sp = sparsity_gradient(pi, gb.target_count, gb.c_s)
    return float(stable_norm(g_obj) / (stable_norm(g_sp) + 1e-12)), g_sp


def test_gradbalance_zero_at_or_below_headroom():
    gb = GradBalance(density=0.1, numel=100)
    g_obj = torch.linspace(-1, 1, 100)
    pi = torch.full((100,), 0.11)  # expected density == 1.1 * kappa exactly -> e == 0, not > 0
    for _ in range(3):
        g = gb.step(g_obj, pi)
        assert gb.lam == 0.0
        assert torch.equal(g, g_obj)


def test_gradbalance_first_step_above_is_the_norm_ratio_then_ema():
    gb = GradBalance(density=0.1, numel=100)
    g1, pi1 = torch.linspace(-1, 1, 100), torch.full((100,), 0.3)
    r1, g_sp1 = _ratio(g1, pi1, gb)
    g = gb.step(g1, pi1)
    assert gb.lam == pytest.approx(r1, rel=1e-12)  # the reference's first-step initialization
    assert torch.allclose(g, g1 + r1 * g_sp1)
    g2, pi2 = 3 * torch.linspace(-1, 1, 100), torch.full((100,), 0.2)
    r2, _ = _ratio(g2, pi2, gb)
    gb.step(g2, pi2)
    assert gb.lam == pytest.approx(0.99 * r1 + 0.01 * r2, rel=1e-12)
    gb.step(g2, torch.full((100,), 0.05))  # back below the headroom: target 0, geometric decay
    assert gb.lam == pytest.approx(0.99 * (0.99 * r1 + 0.01 * r2), rel=1e-12)


def test_gradbalance_crossing_after_zero_steps_follows_the_ema():
    # As in the reference: lambda is initialized only on the very first step (to 0 when the search
    # starts at the target), so the first step above 1.1 kappa gives beta * ratio, not the full ratio.
    gb = GradBalance(density=0.1, numel=100)
    g_obj = torch.linspace(-1, 1, 100)
    gb.step(g_obj, torch.full((100,), 0.1))
    assert gb.lam == 0.0
    pi = torch.full((100,), 0.4)
    r, _ = _ratio(g_obj, pi, gb)
    gb.step(g_obj, pi)
    assert gb.lam == pytest.approx(0.01 * r, rel=1e-12)


def test_gradbalance_reduce_and_stable_norm():
    seen = []
    gb = GradBalance(density=0.1, numel=10)
    gb.step(torch.ones(10), torch.full((10,), 0.5), reduce=lambda r: seen.append(r) or 2.0)
    assert len(seen) == 1 and gb.lam == 2.0
    tiny = torch.full((1000,), 1e-30)
    assert float(stable_norm(tiny)) == pytest.approx(math.sqrt(1000) * 1e-30, rel=1e-5)


def test_lagrange_ascent_on_lambda():
    lb = LagrangeBalance(density=0.1, numel=100, lr=0.5)
    pi = torch.full((100,), 0.2)  # e = 100 * (20 / 10 - 1) = 100
    g = lb.step(torch.zeros(100), pi)
    assert torch.equal(g, torch.zeros(100)) and lb.lam == pytest.approx(50.0)
    g = lb.step(torch.zeros(100), pi)
    assert torch.allclose(g, 50.0 * sparsity_gradient(pi, 10.0, 100.0))


# --- objectives ------------------------------------------------------------------------------

def test_kl_directions_hand_computed():
    ps, pd = [0.9, 0.1], [0.5, 0.5]
    s = torch.log(torch.tensor([ps]))  # logits whose softmax is ps
    d = torch.log(torch.tensor([pd]))
    rev = sum(a * math.log(a / b) for a, b in zip(ps, pd, strict=True))  # KL(sparse || dense) = 0.368064
    fwd = sum(b * math.log(b / a) for a, b in zip(ps, pd, strict=True))  # KL(dense || sparse) = 0.510826
    assert float(reverse_kl(s, d)) == pytest.approx(rev, abs=1e-6)
    assert float(forward_kl(s, d)) == pytest.approx(fwd, abs=1e-6)
    assert rev == pytest.approx(0.368064, abs=1e-6) and fwd == pytest.approx(0.510826, abs=1e-6)


# --- diagnostics, options, distributed -------------------------------------------------------

def test_search_log_info_and_lr_drop(data, tmp_path):
    ctx = ctx_for(lenet(data), data, sparsity=0.9, run_dir=tmp_path, search_epochs=2)
    res = cts().search(ctx)  # 2 epochs x 4 batches of 256 = 8 steps
    lines = [json.loads(x) for x in paths.search_log(tmp_path).read_text().splitlines()]
    assert len(lines) == res.info["steps"] == 8
    assert {"expected_density", "true_density", "lambda", "objective", "lr"} <= set(lines[0])
    assert [r["lr"] for r in lines] == [0.1] * 7 + [pytest.approx(0.01)]  # last ceil(12 %) of steps
    assert res.info["expected_density"] == pytest.approx(lines[-1]["expected_density"])
    assert lines[0]["expected_density"] > 0.09  # starts at the target density 0.1


def test_options_validation():
    with pytest.raises(UsageError, match="objective"):
        get_method("cts", {"objective": "nope"})
    with pytest.raises(UsageError, match="balance"):
        get_method("cts", {"balance": "nope"})
    with pytest.raises(UsageError, match="no option"):
        get_method("cts", {"nope": 1})
    assert get_method("cts", {"lr": "0.05"}).options.lr == 0.05


def test_distributed_hooks_are_used(data):
    class FakeDist:
        rank, world_size = 0, 1
        calls = 0

        def all_reduce_mean(self, t):
            FakeDist.calls += 1
            return t

    ctx = ctx_for(lenet(data), data, sparsity=0.9, dist=FakeDist())
    cts(max_steps=2).search(ctx)
    assert FakeDist.calls == 4  # lambda* and the gradient, per step
