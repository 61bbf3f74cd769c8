"""Group-aware channel selection: coupled channels kept/removed together, so structured removes them."""

from __future__ import annotations

import pytest
import torch

from sparsekit.binary_mask import Mask
from sparsekit.data.synthetic import make_synthetic
from sparsekit.formats import get_format
from sparsekit.formats.structured import coupled_channel_groups
from sparsekit.masking.coupling.channel_groups import dead_channel_extras, training_mask
from sparsekit.masking.prunable import prunable_tensors
from sparsekit.masking.select.topk import budget_keep, topk_mask
from sparsekit.methods import SearchContext, get_method
from sparsekit.models import ModelSpec, build_model


def _ticket(name: str, shape: tuple[int, int, int], sparsity: float, layerwise: bool = False, method: str = "magnitude"):
    net = build_model(ModelSpec(name, shape, 10), seed=0)
    ctx = SearchContext(model=net, data=make_synthetic(shape, n_train=8, n_test=8), names=list(prunable_tensors(net)),
                        sparsity=sparsity, layerwise=layerwise, granularity="channel")
    return net, get_method(method).search(ctx)


def _dead_rows(mask: Mask, fqn: str) -> torch.Tensor:
    m = mask[fqn]
    return ~m.reshape(m.shape[0], -1).any(1)


def _assert_groups_whole(net, mask: Mask, shape) -> int:
    """Every coupled channel is dead in all or none of its prunable members; returns #dead coupled channels."""
    dead_coupled = 0
    for g in coupled_channel_groups(net, torch.randn(2, *shape)):
        members = [m for m in g["members"] if m["weight"] in mask.names]
        for j in range(g["channels"]):
            states = {bool(_dead_rows(mask, m["weight"])[m["rows"][j]]) for m in members if m["rows"][j] >= 0}
            assert len(states) <= 1, (g["root"], j)
            dead_coupled += len(members) > 1 and states == {True}
    return dead_coupled


def _convert(net, mask: Mask, shape):
    mask.apply(net)
    training_mask(net, mask, shape).apply(net)  # what fine-tuning holds (BN gamma/beta of dead channels)
    return get_format("structured").convert(net.eval(), mask, torch.randn(8, *shape))


@pytest.mark.parametrize("layerwise", [False, True])
def test_resnet20_channel_ticket_keeps_groups_whole_and_removes_macs(layerwise):
    shape = (3, 16, 16)
    net, res = _ticket("resnet20", shape, 0.5, layerwise)
    mask = res.mask
    assert _assert_groups_whole(net, mask, shape) > 0  # the residual stream is pruned too
    assert abs(res.info["channel_sparsity"] - 0.5) <= 2 / res.info["channels"]  # units of 4 rows
    assert res.info["weight_sparsity"] == pytest.approx(mask.sparsity)
    assert bool(mask["fc.weight"].all())  # classifier outputs are the classes
    conv = _convert(net, mask, shape)
    assert 1 - conv.report["macs_after"] / conv.report["macs_before"] >= 0.70
    assert conv.report["max_abs_diff"] <= conv.report["atol"]
    assert conv.module.conv1.out_channels < 16  # stem / stage-1 stream shrank


def test_trained_bn_shift_no_longer_blocks_removal():
    """With a pretrained-like BN (beta != 0) the held BN entries make dead channels removable."""
    shape = (3, 16, 16)
    net, res = _ticket("resnet20", shape, 0.5, layerwise=True)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.uniform_(0.1, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
    extras = dead_channel_extras(net, res.mask, shape)
    assert "bn1.weight" in extras and "bn1.bias" in extras
    assert torch.equal(extras["bn1.bias"], ~_dead_rows(res.mask, "conv1.weight"))
    conv = _convert(net, res.mask, shape)
    assert 1 - conv.report["macs_after"] / conv.report["macs_before"] >= 0.70
    assert conv.report["max_abs_diff"] <= conv.report["atol"]


def test_lenet300_budget_and_per_layer_selection_unchanged():
    """No couplings: layerwise equals the old per-layer top-k; global keeps exactly the budget."""
    shape = (1, 16, 16)
    net, res = _ticket("lenet300", shape, 0.7, layerwise=True)
    for fqn in ("1.weight", "3.weight"):
        w = net.get_parameter(fqn).detach().abs().double()
        old = topk_mask({fqn: w.mean(1)}, 0.7, layerwise=True)[fqn]
        assert torch.equal(~_dead_rows(res.mask, fqn), old)
    assert bool(res.mask["5.weight"].all())
    net, res = _ticket("lenet300", shape, 0.7)
    kept = sum(int((~_dead_rows(res.mask, f)).sum()) for f in ("1.weight", "3.weight"))
    assert kept == budget_keep(400, 0.7) and res.info["channels"] == 400
    assert res.info["dense_classifier"] == ["5.weight"] and bool(res.mask["5.weight"].all())


def test_no_layer_is_emptied_at_extreme_sparsity():
    _, res = _ticket("lenet300", (1, 16, 16), 0.999)
    for fqn in ("1.weight", "3.weight", "5.weight"):
        assert bool((~_dead_rows(res.mask, fqn)).any()), fqn


def test_weight_granularity_untouched():
    net = build_model(ModelSpec("lenet300", (1, 16, 16), 10), seed=0)
    ctx = SearchContext(model=net, data=make_synthetic((1, 16, 16), n_train=8, n_test=8),
                        names=list(prunable_tensors(net)), sparsity=0.9)
    res = get_method("magnitude").search(ctx)
    assert res.info == {} and res.mask.kept == budget_keep(res.mask.numel, 0.9)


@pytest.mark.parametrize("name", ["tv:resnet18", "tv:mobilenet_v3_small"])
def test_torchvision_channel_tickets_convert(name):
    shape = (3, 32, 32)
    net, res = _ticket(name, shape, 0.5)
    _assert_groups_whole(net, res.mask, shape)
    conv = _convert(net, res.mask, shape)
    assert conv.report["channels_removed"] > 0 and conv.report["macs_after"] < conv.report["macs_before"]
    assert conv.report["max_abs_diff"] <= conv.report["atol"] * 100


def test_pipeline_holds_dead_channel_bias_and_saves_prunable_mask(tmp_path):
    """Channel runs fine-tune with the dead rows' biases held at 0; mask.safetensors = weights only."""
    from sparsekit.pipeline import PruneConfig, prune
    from sparsekit.ticket import Ticket

    out = tmp_path / "run"
    prune(PruneConfig("lenet300", "synthetic", "magnitude", 0.5, str(out), pretrain_epochs=1, finetune_epochs=1,
                      granularity="channel", dense_reference=False))
    ticket = Ticket.load(out)
    mask, net = ticket.mask(), ticket.materialize("final")
    assert sorted(mask.names) == ["1.weight", "3.weight", "5.weight"]
    for layer in ("1", "3"):
        dead = _dead_rows(mask, f"{layer}.weight")
        assert dead.any() and bool((net.get_parameter(f"{layer}.bias")[dead] == 0).all())
    c = get_format("structured").convert(net.eval(), mask, torch.randn(8, 1, 16, 16))
    assert c.module[1].out_features == int((~_dead_rows(mask, "1.weight")).sum())


@pytest.mark.parametrize("sparsity", [0.52, 0.55, 0.7])
def test_channel_multiple_rounds_kept_widths(sparsity):
    """--channel-multiple 8 keeps 8/16/32-style widths that CPU kernels run fast (not 15 or 31)."""
    shape = (1, 16, 16)
    net = build_model(ModelSpec("resnet20", shape, 10), seed=0)
    ctx = SearchContext(model=net, data=make_synthetic(shape, n_train=8, n_test=8), names=list(prunable_tensors(net)),
                        sparsity=sparsity, layerwise=True, granularity="channel", channel_multiple=8)
    mask = get_method("magnitude").search(ctx).mask
    for name in mask.names:
        if name == "fc.weight":
            continue
        kept = int((~_dead_rows(mask, name)).sum())
        assert kept % 8 == 0 and kept >= 8, (name, kept)
    plain = SearchContext(model=net, data=ctx.data, names=ctx.names, sparsity=sparsity, layerwise=True,
                          granularity="channel")
    widths = {int((~_dead_rows(get_method("magnitude").search(plain).mask, n)).sum()) for n in ctx.names}
    assert any(w % 8 for w in widths if w != 10)  # without the option the exact budget gives odd widths
