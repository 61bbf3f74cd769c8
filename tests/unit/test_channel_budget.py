"""Channel-level budgets: exact MAC accounting, coupled units kept whole, every channel method in budget."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparsekit.budget import Budget, parse_budget
from sparsekit.data.synthetic import make_synthetic
from sparsekit.errors import UsageError
from sparsekit.formats.structured import Structured
from sparsekit.masking.coupling.channel_groups import training_mask
from sparsekit.masking.coupling.channel_space import (
    MacCost,
    ParamCost,
    UnitSpace,
    mac_cost,
    select_by_cost,
)
from sparsekit.masking.masked_forward import freeze
from sparsekit.masking.prunable import prunable_tensors
from sparsekit.methods import METHODS, SearchContext, get_method
from sparsekit.models import ModelSpec, build_model
from sparsekit.train.loop import TrainConfig
from tests.unit._nets import one_thread  # noqa: F401 (autouse fixture)


class UserNet(nn.Module):
    """A user model with a depthwise block, a residual add and a concat (none of our zoo's shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU())
        self.pw = nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))
        self.left = nn.Sequential(nn.Conv2d(16, 12, 3, stride=2, padding=1), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(16, 20, 1, stride=2), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(32, 24, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.pw(self.dw(x)))  # residual add around a depthwise-separable block
        x = torch.cat([self.left(x), self.right(x)], 1)
        return self.head(self.mix(x))


class NeXtBlock(nn.Module):
    """ResNeXt's bottleneck: 1x1 -> grouped 3x3 -> 1x1 around a residual add (projection if needed)."""

    def __init__(self, c_in: int, width: int, c_out: int, groups: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.short = (nn.Identity() if stride == 1 and c_in == c_out else
                      nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


class TinyNeXt(nn.Module):
    """Two ResNeXt stages (4 and 8 conv groups) on a 16-channel stem."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(NeXtBlock(16, 16, 16, 4), NeXtBlock(16, 16, 16, 4),
                                    NeXtBlock(16, 32, 32, 8, stride=2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class GroupedBranch(nn.Module):
    """A grouped conv in one branch of a concat (the other branch is a plain conv)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.plain = nn.Sequential(nn.Conv2d(16, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1, groups=4), nn.BatchNorm2d(24), nn.ReLU(),
                                     nn.Conv2d(24, 16, 1, groups=2), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(28, 24, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(self.mix(torch.cat([self.plain(x), self.grouped(x)], 1)))


IN_SHAPE = (3, 16, 16)
MODELS = ["resnet20", "usernet", "resnext", "grouped-concat"]


def _models():
    torch.manual_seed(0)
    return {
        "resnet20": (build_model(ModelSpec("resnet20", (1, 28, 28), 10), seed=0), (1, 28, 28)),
        "usernet": (UserNet(), IN_SHAPE),
        "resnext": (TinyNeXt(), IN_SHAPE),
        "grouped-concat": (GroupedBranch(), IN_SHAPE),
    }


@pytest.fixture(scope="module")
def spaces():
    out = {}
    for name, (model, shape) in _models().items():
        model.eval()
        out[name] = (model, shape, UnitSpace(model, list(prunable_tensors(model)), shape))
    return out


def _convert(model: nn.Module, space: UnitSpace, keep: torch.Tensor, shape):
    """Structured conversion of a channel ticket as the pipeline holds it: the weight mask plus the
    biases and BN affine of dead channels at zero (training_mask), so removed channels emit 0."""
    ticket = copy.deepcopy(model)
    mask = space.mask(keep)
    training_mask(ticket, mask, shape).apply(ticket)
    return Structured().convert(ticket, mask, torch.randn(4, *shape))


def _marginal(cost, keep: torch.Tensor) -> float:
    """Largest cost increase of putting back one removed unit."""
    base = cost.exact(keep)
    best = 0.0
    for u in torch.nonzero(~keep).flatten().tolist():
        k = keep.clone()
        k[u] = True
        best = max(best, cost.exact(k) - base)
    return best


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_mac_budget_is_exact_and_matches_the_converted_model(spaces, name, fraction):
    model, shape, space = spaces[name]
    cost = mac_cost(space, model)
    scores = torch.rand(space.size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    keep, stats = select_by_cost(scores, space, cost, fraction * cost.dense)
    achieved = cost.exact(keep)
    assert achieved <= fraction * cost.dense
    assert fraction * cost.dense - achieved < _marginal(cost, keep)  # the last unit removed did not fit
    converted = _convert(model, space, keep, shape)
    assert converted.report["channels_not_removed"] == 0
    assert converted.report["macs_before"] == cost.dense
    assert converted.report["macs_after"] == achieved  # the cost model is the converted model's MACs
    assert stats["budget_fraction_achieved"] == pytest.approx(achieved / cost.dense)


@pytest.mark.parametrize("name", MODELS)
def test_coupled_units_are_never_split(spaces, name):
    model, shape, space = spaces[name]
    assert space.units.coupled
    assert any(len(u) > 1 for u in space.units.units)  # residual / concat / depthwise couplings found
    keep = torch.rand(space.size, generator=torch.Generator().manual_seed(0)) > 0.5
    mask = space.mask(keep)
    for u, rows in enumerate(space.units.units):
        states = {bool(mask[n][r].any()) for n, r in rows}
        assert states == {bool(keep[u])}


def test_expected_cost_is_the_mean_of_sampled_exact_costs(spaces):
    """E[MACs] under independent keeps (incl. the depthwise same-unit pairs) is what sampling gives."""
    model, shape, space = spaces["usernet"]
    cost = mac_cost(space, model)
    p = torch.rand(space.size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    samples = [cost.exact(torch.rand(space.size, generator=g, dtype=torch.float64) < p) for _ in range(4000)]
    mean = sum(samples) / len(samples)
    assert float(cost.expected(p)) == pytest.approx(mean, rel=0.01)


def test_channel_multiple_keeps_family_widths_multiples(spaces):
    model, shape, space = spaces["resnet20"]
    cost = mac_cost(space, model)
    scores = torch.rand(space.size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    keep, _ = select_by_cost(scores, space, cost, 0.25 * cost.dense, multiple=8)
    assert cost.exact(keep) <= 0.25 * cost.dense
    kept: dict[int, int] = {}
    for u, fam in enumerate(space.units.families):
        kept[fam] = kept.get(fam, 0) + int(keep[u])
    assert all(k % 8 == 0 and k >= 8 for k in kept.values()), kept


def test_budget_below_the_smallest_widths_is_a_clear_usage_error(spaces):
    model, shape, space = spaces["resnet20"]
    cost = mac_cost(space, model)
    with pytest.raises(UsageError, match="below what the smallest allowed widths reach") as exc:
        select_by_cost(torch.zeros(space.size), space, cost, 0.001 * cost.dense, multiple=8)
    assert "\n" not in str(exc.value)


def test_frozen_models_keep_their_couplings():
    """Strong-ticket searches freeze every parameter; the dependency trace must still see the couplings."""
    model = build_model(ModelSpec("resnet20", (1, 28, 28), 10), seed=0)
    freeze(model)
    space = UnitSpace(model, list(prunable_tensors(model)), (1, 28, 28))
    assert space.units.coupled and len(set(space.units.families)) == 12
    assert all(not p.requires_grad for p in model.parameters())


def test_param_budget_counts_weights_after_removal(spaces):
    model, shape, space = spaces["usernet"]
    cost = ParamCost(space)
    names = list(space.row_units)
    assert cost.dense == sum(model.get_parameter(n).numel() for n in names)
    keep = torch.rand(space.size, generator=torch.Generator().manual_seed(4)) > 0.4
    converted = _convert(model, space, keep, shape)
    after = dict(converted.module.named_parameters())
    assert cost.exact(keep) == sum(after[n].numel() for n in names)


def test_budget_parsing():
    assert parse_budget("macs=0.25") == Budget("macs", 0.25)
    assert parse_budget("latency=3.5", batch=64).batch == 64
    for bad in ("macs", "flops=0.5", "macs=1.5", "params=0", "latency=-1", "macs=abc"):
        with pytest.raises(UsageError):
            parse_budget(bad)


CHANNEL_METHODS = [m for m in METHODS.names()
                   if "channel" in METHODS.get(m).granularities and getattr(METHODS.get(m), "cost_budgets", False)]


@pytest.mark.parametrize("method", CHANNEL_METHODS)
def test_every_channel_method_honours_a_mac_budget_on_a_user_model(method):
    data = make_synthetic(IN_SHAPE, n_train=256, n_test=64)
    torch.manual_seed(0)
    model = UserNet()
    names = list(prunable_tensors(model))
    before = copy.deepcopy(model.state_dict())
    ctx = SearchContext(model=model, data=data, names=names, sparsity=0.5, granularity="channel", seed=0,
                        train_cfg=TrainConfig(batch_size=64), search_steps=4, budget=Budget("macs", 0.5),
                        theta_k=copy.deepcopy(before))
    result = get_method(method, {"batch_size": 64} if method in ("cts", "gates") else None).search(ctx)
    assert result.info["budget_kind"] == "macs"
    space = UnitSpace(UserNet(), names, IN_SHAPE)
    fresh = UserNet()
    fresh.load_state_dict(before)
    cost = mac_cost(space, fresh)
    keep = torch.tensor([bool(result.mask[rows[0][0]][rows[0][1]].any()) for rows in space.units.units])
    assert cost.exact(keep) <= 0.5 * cost.dense
    assert cost.exact(keep) == result.info["budget_achieved"]
    for rows, k in zip(space.units.units, keep, strict=True):  # units whole
        assert all(bool(result.mask[n][r].any()) == bool(k) for n, r in rows)
    for k in names:  # no search changes weights
        assert torch.equal(before[k], model.state_dict()[k])


def test_channel_only_methods_default_to_channel_granularity():
    from sparsekit.pipeline import PruneConfig

    cfg = PruneConfig(model="lenet5", data="synthetic", method="magnitude-channel", sparsity=0.5, out="x")
    assert cfg.granularity == "channel"
    assert PruneConfig(model="lenet5", data="synthetic", method="magnitude", sparsity=0.5, out="x").granularity == "weight"
    with pytest.raises(UsageError, match="needs --granularity channel"):
        PruneConfig(model="lenet5", data="synthetic", method="magnitude", sparsity=0.5, out="x", budget="macs=0.5")
    with pytest.raises(UsageError, match="global cost"):
        PruneConfig(model="lenet5", data="synthetic", method="magnitude-channel", sparsity=0.5, out="x",
                    budget="macs=0.5", layerwise=True)
    with pytest.raises(UsageError, match="does not take"):
        PruneConfig(model="lenet5", data="synthetic", method="ltr", sparsity=0.5, out="x", budget="macs=0.5",
                    granularity="channel")


def test_one_command_chain_reports_budget_macs_and_speedup(tmp_path):
    """prune --budget macs -> export structured -> bench: the JSON carries the budget asked, the MACs
    reached and the speed-up against the best dense runtime."""
    import json

    from typer.testing import CliRunner

    from sparsekit.cli.main import app

    run = tmp_path / "run"
    cli = CliRunner()
    r = cli.invoke(app, ["prune", "--model", "lenet5", "--data", "synthetic:1x28x28", "--method", "magnitude-channel",
                         "--budget", "macs=0.4", "--out", str(run), "--pretrain-epochs", "0", "--finetune-epochs", "0",
                         "--json", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    pruned = json.loads((tmp_path / "p.json").read_text())
    assert pruned["budget"]["kind"] == "macs" and pruned["budget"]["value"] == 0.4
    assert pruned["budget"]["fraction_achieved"] <= 0.4
    r = cli.invoke(app, ["export", str(run), "--format", "structured", "--out", str(tmp_path / "s.onnx")])
    assert r.exit_code == 0, r.output
    r = cli.invoke(app, ["bench", str(run), "--format", "structured", "--runtime", "ort-cpu", "--batch", "1",
                         "--warmup", "1", "--min-time", "0.02", "--accuracy-limit", "32", "--json", str(tmp_path / "b.json")])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    ticket = next(x for x in rows if x["variant"] == "ticket")
    assert ticket["budget"]["asked"] == pruned["budget"]["asked"]
    assert ticket["macs"] == pruned["budget"]["achieved"]  # what ORT executes is what the budget counted
    assert ticket["speedup_vs_best_dense"] > 0 and ticket["mac_ratio_vs_dense"] > 2


def test_cli_budget_usage_errors(tmp_path):
    from typer.testing import CliRunner

    from sparsekit.cli.main import app

    base = ["prune", "--model", "lenet5", "--data", "synthetic:1x28x28", "--out", str(tmp_path / "x"),
            "--pretrain-epochs", "0", "--finetune-epochs", "0"]
    for extra, needle in ((["--method", "magnitude"], "exactly one"),
                          (["--method", "magnitude", "--sparsity", "0.5", "--budget", "macs=0.5"], "exactly one"),
                          (["--method", "magnitude", "--budget", "macs=0.5"], "needs --granularity channel"),
                          (["--method", "magnitude-channel", "--budget", "flops=0.5"], "--budget must be")):
        r = CliRunner().invoke(app, base + extra)
        assert r.exit_code == 2, (extra, r.output)
        assert needle in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x").exists()  # nothing written


@pytest.mark.parametrize("name", ["resnext", "grouped-concat"])
@pytest.mark.parametrize("method", ["magnitude-channel", "cts"])
def test_recorded_macs_are_the_converted_models_with_grouped_convs(name, method):
    """What a search records as achieved MACs is what the structured converter leaves: channels that
    touch a grouped conv go in the same offsets of every conv group, and the converter removes them."""
    model, shape = _models()[name]
    data = make_synthetic(shape, n_train=128, n_test=32)
    names = list(prunable_tensors(model))
    ctx = SearchContext(model=model, data=data, names=names, sparsity=0.5, granularity="channel", seed=0,
                        train_cfg=TrainConfig(batch_size=32), search_steps=3, budget=Budget("macs", 0.4),
                        theta_k=copy.deepcopy(model.state_dict()))
    result = get_method(method, {"batch_size": 32} if method == "cts" else None).search(ctx)
    ticket = copy.deepcopy(model)
    training_mask(ticket, result.mask, shape).apply(ticket)
    converted = Structured().convert(ticket, result.mask, torch.randn(4, *shape))
    rep = converted.report
    assert rep["channels_not_removed"] == 0
    assert rep["macs_before"] == result.info["budget_dense"]
    assert rep["macs_after"] == result.info["budget_achieved"] <= 0.4 * rep["macs_before"]
    grouped = {lay["name"]: lay for lay in rep["layers"]}
    inner = "blocks.2.body.3" if name == "resnext" else "grouped.0"
    assert grouped[inner]["out_after"] < grouped[inner]["out_before"]  # grouped convs shrink too
    conv = converted.module.get_submodule(inner)
    assert conv.groups == model.get_submodule(inner).groups and conv.out_channels % conv.groups == 0


def test_channels_coupled_to_an_excluded_layer_are_not_counted_as_removable():
    model, shape = _models()["usernet"]
    names = [n for n in prunable_tensors(model) if n != "stem.0.weight"]  # the residual stream stays
    space = UnitSpace(model, names, shape)
    assert space.units.partial > 0
    assert all(n != "pw.0.weight" for u in space.units.units for n, _ in u)  # stream rows are no unit
    cost = mac_cost(space, model)
    scores = torch.rand(space.size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    keep, _ = select_by_cost(scores, space, cost, 0.6 * cost.dense)
    ticket = copy.deepcopy(model)
    mask = space.mask(keep)
    training_mask(ticket, mask, shape).apply(ticket)
    converted = Structured().convert(ticket, mask, torch.randn(4, *shape))
    assert converted.report["macs_after"] == cost.exact(keep)


@pytest.mark.parametrize("multiple", [1, 4])
def test_gradient_priced_put_back_selects_what_the_exhaustive_one_does(spaces, multiple):
    """select_by_cost prices put-back candidates by the cost's gradient; a cost model without that
    shortcut (every candidate costed exactly) must select the same units."""

    class Exhaustive(MacCost):
        multilinear = False

    for name in ("resnet20", "resnext"):
        model, shape, space = spaces[name]
        fast = mac_cost(space, model)
        slow = Exhaustive(space, fast.constant)
        scores = torch.rand(space.size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        for fraction in (0.6, 0.8) if multiple > 1 else (0.3, 0.6):
            a, _ = select_by_cost(scores, space, fast, fraction * fast.dense, multiple)
            b, _ = select_by_cost(scores, space, slow, fraction * fast.dense, multiple)
            assert torch.equal(a, b), (name, fraction)


def test_a_cost_budget_on_an_untraceable_model_is_refused(monkeypatch):
    """No dependency graph: the converter removes nothing, so the search must not count removals."""
    import sparsekit.masking.coupling.channel_groups as cg
    from sparsekit.masking.coupling.channel_space import cost_for

    def untraceable(model, example):
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setattr(cg, "coupled_channel_groups", untraceable)
    model, shape = _models()["usernet"]
    space = UnitSpace(model, list(prunable_tensors(model)), shape)
    assert not space.units.coupled
    with pytest.raises(UsageError, match="cannot be traced .ZeroDivisionError"):
        cost_for(Budget("macs", 0.5), space, model)
