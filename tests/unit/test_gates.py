"""Strong-ticket methods: gates (hard-concrete / gaussian relaxations) and edge-popup."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from sparsekit import paths
from sparsekit.data.synthetic import make_synthetic
from sparsekit.errors import UsageError
from sparsekit.masking.masked_forward import masked_call
from sparsekit.masking.prunable import prunable_tensors
from sparsekit.masking.relax.gaussian_gate import GaussianGate
from sparsekit.masking.relax.gradbalance import GradBalance
from sparsekit.masking.relax.hard_concrete import HardConcrete
from sparsekit.masking.select.topk import budget_keep
from sparsekit.methods import SearchContext, get_method
from sparsekit.models.registry import ModelSpec, build_model
from sparsekit.train.loop import TrainConfig
from tests.unit._nets import one_thread  # noqa: F401  (autouse: one torch thread)

MC_SAMPLES = 200_000
# 4 standard errors of a Bernoulli mean estimated from MC_SAMPLES draws (p = 1/2, the worst case)
MC_ATOL = 4 * math.sqrt(0.25 / MC_SAMPLES)
RELAXATIONS = [HardConcrete(), GaussianGate(sigma=0.5), GaussianGate(sigma=1.0)]



@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_train=512, n_test=128)


class TinyBNNet(nn.Module):
    """Conv + BN + Linear: small enough for unit tests, with BN running statistics to recalibrate."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        h = nn.functional.max_pool2d(h, 2)  # (B, 8, 8, 8)
        return self.fc(h.flatten(1))


def _ctx(model: nn.Module, data, sparsity: float, **kw) -> SearchContext:
    names = list(prunable_tensors(model))
    kw.setdefault("search_epochs", 1)
    kw.setdefault("train_cfg", TrainConfig(batch_size=64))
    return SearchContext(model=model, data=data, names=names, sparsity=sparsity, seed=3, **kw)


def _lenet(data) -> nn.Module:
    return build_model(ModelSpec("lenet300", data.in_shape, data.num_classes), seed=0)


# -- relaxations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("relax", RELAXATIONS, ids=["hard-concrete", "gaussian-0.5", "gaussian-1.0"])
def test_closed_form_keep_probability_matches_monte_carlo(relax):
    g = torch.Generator().manual_seed(0)
    for density in (0.05, 0.3, 0.5, 0.9):
        theta = torch.full((MC_SAMPLES,), relax.init_param(density), dtype=torch.float64)
        theta = theta + torch.linspace(-0.5, 0.5, MC_SAMPLES, dtype=torch.float64)
        z = relax.sample(theta, g)
        assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0
        mc = float((z > 0).double().mean())
        closed = float(relax.keep_prob(theta).mean())
        assert abs(mc - closed) < MC_ATOL, (density, mc, closed)


def test_hard_concrete_reference_value():
    # docs/algorithms.md §3.2: log_alpha = 0 -> P(z != 0) = 0.8318
    assert float(HardConcrete().keep_prob(torch.zeros(1))) == pytest.approx(0.8318, abs=1e-4)


@pytest.mark.parametrize("relax", RELAXATIONS, ids=["hard-concrete", "gaussian-0.5", "gaussian-1.0"])
def test_init_param_gives_target_density_and_exact_derivative(relax):
    for density in (0.01, 0.1, 0.5, 0.95):
        theta = torch.tensor([relax.init_param(density)], dtype=torch.float64, requires_grad=True)
        pi = relax.keep_prob(theta)
        assert float(pi.detach()) == pytest.approx(density, rel=1e-9)
        pi.sum().backward()
        assert float(theta.grad) == pytest.approx(float(relax.keep_prob_grad(theta.detach())), rel=1e-9)


@pytest.mark.parametrize("relax", RELAXATIONS, ids=["hard-concrete", "gaussian-0.5", "gaussian-1.0"])
def test_test_gate_is_deterministic(relax):
    theta = torch.linspace(-4, 4, 101)
    torch.manual_seed(0)
    a = relax.test_gate(theta)
    state = torch.get_rng_state()
    b = relax.test_gate(theta)
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())  # draws no randomness
    assert float(a.min()) == 0.0 and float(a.max()) == 1.0  # exact zeros / ones exist


def test_test_gate_formulas():
    la = torch.tensor([-5.0, 0.0, 5.0])
    expected = (torch.sigmoid(la) * 1.2 - 0.1).clamp(0, 1)
    assert torch.equal(HardConcrete().test_gate(la), expected)
    mu = torch.tensor([-1.0, 0.0, 0.7])
    assert torch.equal(GaussianGate().test_gate(mu), torch.tensor([0.0, 0.5, 1.0]))


def test_gradbalance_dpi_default_is_unchanged():
    g_obj = torch.randn(50, generator=torch.Generator().manual_seed(1))
    pi = torch.linspace(0.2, 0.9, 50)
    a, b = GradBalance(0.1, 50), GradBalance(0.1, 50)
    torch.testing.assert_close(a.step(g_obj, pi), b.step(g_obj, pi, dpi=pi * (1 - pi)))
    assert a.lam == pytest.approx(b.lam, rel=1e-6)


# -- gates method --------------------------------------------------------------------------------


def test_options_are_validated():
    with pytest.raises(UsageError, match="relaxation"):
        get_method("gates", {"relaxation": "gumbel"})
    with pytest.raises(UsageError, match="no option"):
        get_method("gates", {"tau": "1"})
    assert get_method("gates", {"lr": "0.05"}).options.lr == 0.05


@pytest.mark.parametrize("relaxation", ["hard-concrete", "gaussian"])
def test_gates_weights_frozen_and_exact_sparsity(data, relaxation, tmp_path):
    model = _lenet(data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = _ctx(model, data, 0.9, run_dir=tmp_path)
    result = get_method("gates", {"relaxation": relaxation}).search(ctx)
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k  # bit-identical: the search never changes the model
    factor = 1.0 / math.sqrt(0.1)  # default weight_scale=density: frozen weights x 1/sqrt(density)
    assert set(result.state_updates) == set(ctx.names)  # the scaled weights the ticket carries; no BN
    for k in ctx.names:
        assert torch.allclose(result.state_updates[k], before[k] * factor, rtol=1e-6, atol=0), k
    numel = sum(p.numel() for p in ctx.params().values())
    assert result.mask.kept == budget_keep(numel, 0.9)
    assert result.info["sparsity"] == result.mask.sparsity
    assert 0.0 <= result.info["gate_sparsity_before_topk"] <= 1.0
    records = [json.loads(line) for line in paths.search_log(tmp_path).read_text().splitlines()]
    assert records and all(0 < r["expected_density"] < 1 for r in records)
    assert records[-1]["step"] == result.info["steps"]


def test_gates_start_at_target_density(data, tmp_path):
    model = _lenet(data)
    ctx = _ctx(model, data, 0.8, run_dir=tmp_path)
    get_method("gates", {"log_every": 1, "lr": 1e-6}).search(ctx)
    first = json.loads(paths.search_log(tmp_path).read_text().splitlines()[0])
    assert first["expected_density"] == pytest.approx(0.2, abs=1e-3)


def test_gates_layerwise_exact_per_layer(data):
    model = _lenet(data)
    ctx = _ctx(model, data, 0.75, layerwise=True)
    result = get_method("gates").search(ctx)
    for n, t in result.mask.items():
        assert int(t.sum()) == budget_keep(t.numel(), 0.75), n


@pytest.mark.parametrize("relaxation", ["hard-concrete", "gaussian"])
def test_gates_learn_better_than_chance(relaxation):
    # gates start nearly closed (expected density = target); GradBalance settles in 4 / ema = 400 steps
    data = make_synthetic(n_train=2048, n_test=256)
    model = _lenet(data)
    ctx = _ctx(model, data, 0.8, search_epochs=7, train_cfg=TrainConfig(batch_size=32))  # 448 >= 400 steps
    mask = get_method("gates", {"relaxation": relaxation}).search(ctx).mask
    mask.apply(model)
    x, y = data.test.tensors
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).double().mean())
    assert acc > 0.4  # 10 classes: chance is 0.1


def test_channel_gates_remove_whole_output_channels(data):
    model = TinyBNNet()
    before = {k: v.clone() for k, v in model.named_parameters()}
    ctx = _ctx(model, data, 0.5, granularity="channel")
    result = get_method("gates").search(ctx)
    for n, t in result.mask.items():
        rows = t.reshape(t.shape[0], -1)
        assert torch.equal(rows.all(1), rows.any(1)), n  # each output channel all kept or all removed
    kept = {n: int(t.reshape(t.shape[0], -1)[:, 0].sum()) for n, t in result.mask.items()}
    # group-aware selection: the classifier's output rows are the classes (never candidates), the
    # channel budget applies to the conv's 8 channels
    assert kept["fc.weight"] == 10
    assert kept["conv.weight"] == budget_keep(8, 0.5)
    for k, v in model.named_parameters():
        assert torch.equal(v, before[k]), k


def test_bn_statistics_recalibrated_for_the_mask(data):
    model = TinyBNNet()
    ctx = _ctx(model, data, 0.7, train_cfg=TrainConfig(batch_size=64))
    # 8 batches of 64 = the whole synthetic train split, so the statistics are exact averages
    result = get_method("gates", {"bn_batches": 8}).search(ctx)
    # BN statistics of the masked network, plus what the search ran on: weights x 1/sqrt(0.3) and
    # non-affine BN (scale 1, shift 0)
    assert set(result.state_updates) == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked",
                                         "bn.weight", "bn.bias", "conv.weight", "fc.weight"}
    assert torch.equal(result.state_updates["bn.weight"], torch.ones(8))
    assert torch.equal(result.state_updates["bn.bias"], torch.zeros(8))
    x, _ = data.train.tensors
    with torch.no_grad():
        w = result.state_updates["conv.weight"] * result.mask["conv.weight"]
        torch.testing.assert_close(result.state_updates["conv.weight"], model.conv.weight / math.sqrt(0.3))
        h = nn.functional.conv2d(x, w, padding=1)  # (N, 8, 16, 16)
    batch_means = torch.stack([h[i : i + 64].mean((0, 2, 3)) for i in range(0, 512, 64)])
    torch.testing.assert_close(result.state_updates["bn.running_mean"], batch_means.mean(0), rtol=1e-4, atol=1e-5)


# -- edge-popup ----------------------------------------------------------------------------------


def test_edge_popup_exact_per_layer_sparsity_and_frozen_weights(data, tmp_path):
    model = _lenet(data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = _ctx(model, data, 0.8, layerwise=False, run_dir=tmp_path)  # layerwise is forced anyway
    result = get_method("edge-popup").search(ctx)
    for n, t in result.mask.items():
        assert int(t.sum()) == budget_keep(t.numel(), 0.8), n
    for k, v in before.items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert paths.search_log(tmp_path).exists()


def test_edge_popup_scores_are_learned(data):
    model = _lenet(data)
    ctx = _ctx(model, data, 0.5, search_epochs=2)
    mask = get_method("edge-popup").search(ctx).mask
    x, y = data.test.tensors
    with torch.no_grad():
        acc = float((masked_call(model, {n: t.float() for n, t in mask.items()}, x).argmax(1) == y).double().mean())
    assert acc > 0.3


# -- pipeline integration --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gates", "edge-popup"])
def test_pipeline_loads_recalibrated_bn_statistics(method, tmp_path):
    from sparsekit._io import load_tensors
    from sparsekit.pipeline import PruneConfig, prune

    data = make_synthetic(n_train=128, n_test=64)
    cfg = PruneConfig("resnet20", "synthetic", method, 0.8, str(tmp_path), pretrain_epochs=0,
                      search_epochs=1, finetune_epochs=0, batch_size=64, dense_reference=False,
                      method_options={"bn_batches": 2})
    result = prune(cfg, data=data)
    assert result["sparsity"] == pytest.approx(0.8, abs=1e-3)
    theta_k, final = load_tensors(paths.theta_k(tmp_path)), load_tensors(paths.final_weights(tmp_path))
    mask = load_tensors(paths.mask(tmp_path))
    searched = load_tensors(paths.search_state(tmp_path))
    # gates scale the frozen weights by 1/sqrt(density) by default, edge-popup does not
    factor = 1.0 / math.sqrt(0.2) if method == "gates" else 1.0
    for name, keep in mask.items():  # no weight training: the ticket is (scaled) theta_K under the mask
        start = searched.get(name, theta_k[name])
        torch.testing.assert_close(start, theta_k[name] * factor)
        assert torch.equal(final[name], start * keep), name
    for name in [k for k in final if k.endswith(".weight") and k.replace(".weight", ".running_mean") in final]:
        assert torch.equal(final[name], torch.ones_like(final[name])), name  # non-affine BN
    assert "bn1" in result["search_info"]["bn_recalibrated"]
    assert not torch.equal(final["bn1.running_var"], theta_k["bn1.running_var"])
    assert int(final["bn1.num_batches_tracked"]) == 2
