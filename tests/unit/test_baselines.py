"""SNIP, GraSP, GraSP-magnitude, SynFlow, LTR: exact budgets and known behaviour."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsekit import paths
from sparsekit.binary_mask import Mask
from sparsekit.data.synthetic import make_synthetic
from sparsekit.masking.prunable import prunable_tensors
from sparsekit.masking.select.topk import budget_keep
from sparsekit.methods import SearchContext, get_method
from sparsekit.methods.grasp import grasp_hg
from sparsekit.methods.ltr import round_densities
from sparsekit.train.loop import TrainConfig
from tests.unit import _nets
from tests.unit._nets import lenet


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_train=512, n_test=128)


@pytest.fixture(scope="module")
def other_data():
    return make_synthetic(n_train=512, n_test=128, seed=99, noise=2.0)


def bn_net() -> nn.Module:
    return _nets.bn_net(5)


def ctx_for(model, data, sparsity=0.9, **kw) -> SearchContext:
    return SearchContext(model=model, data=data, names=list(prunable_tensors(model)), sparsity=sparsity,
                         train_cfg=TrainConfig(batch_size=256), finetune_epochs=1, **kw)


@pytest.mark.parametrize("method", ["snip", "grasp", "grasp-magnitude", "synflow", "ltr"])
@pytest.mark.parametrize("arch", ["lenet300", "bn"])
def test_exact_sparsity_and_untouched_model(method, arch, data):
    model = lenet(data) if arch == "lenet300" else bn_net()
    model.train()
    before = copy.deepcopy(model.state_dict())
    sparsity = 0.6 if method == "ltr" else 0.97
    ctx = ctx_for(model, data, sparsity)
    mask = get_method(method).search(ctx).mask
    total = sum(p.numel() for p in ctx.params().values())
    assert mask.kept == budget_keep(total, sparsity)
    for k, v in model.state_dict().items():  # weights and BN running stats untouched
        assert torch.equal(before[k], v), k


def test_layerwise_budgets(data):
    for method, opts in (("snip", {}), ("synflow", {"rounds": 10})):
        ctx = ctx_for(lenet(data), data, 0.9, layerwise=True)
        mask = get_method(method, opts).search(ctx).mask
        for _, t in mask.items():
            assert int(t.sum()) == budget_keep(t.numel(), 0.9)


def test_synflow_is_data_free(data, other_data):
    model = bn_net()
    m = get_method("synflow", {"rounds": 5})
    s1 = m.score(ctx_for(model, data))
    s2 = m.score(ctx_for(model, other_data))
    assert all(torch.equal(s1[n], s2[n]) for n in s1)
    assert type(m).uses_data is False


def test_synflow_single_round_matches_the_linear_path_formula():
    # linear 2-layer net without bias: R = 1^T |W2| |W1| 1, dR/dW1[j, i] = sum_k |W2[k, j]|
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False))
    data = make_synthetic((1, 2, 2), num_classes=2, n_train=8, n_test=8)
    ctx = SearchContext(model=net, data=data, names=["1.weight", "2.weight"], sparsity=0.5)
    s = get_method("synflow", {"rounds": 1}).score(ctx)
    w1, w2 = net[1].weight.detach().double().abs(), net[2].weight.detach().double().abs()
    expected1 = w1 * w2.sum(0)[:, None]
    expected2 = w2 * w1.sum(1)[None, :]
    assert torch.allclose(s["1.weight"], expected1) and torch.allclose(s["2.weight"], expected2)


def test_snip_depends_on_data_and_is_w_times_grad(data, other_data):
    model = lenet(data)
    m = get_method("snip", {"per_class": 3})
    s1 = m.score(ctx_for(model, data))
    s2 = m.score(ctx_for(model, other_data))
    assert not all(torch.allclose(s1[n], s2[n]) for n in s1)
    # hand check on the same sample: |w * dL/dw| normalized by the total
    from sparsekit.methods._samples import draw_samples

    x, y = draw_samples(data, 3, 0 + 31, stratified=False)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    raw = {n: (p.detach() * p.grad).abs() for n, p in ctx_for(model, data).params().items()}
    total = sum(float(v.sum()) for v in raw.values())
    assert all(torch.allclose(s1[n], raw[n] / total, rtol=1e-4, atol=1e-12) for n in raw)


def test_grasp_sign_convention_on_a_toy():
    """S = -theta * Hg with H, g from an explicit Hessian; GraSP keeps the smallest S."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 2, bias=False))
    x, y = torch.randn(6, 1, 1, 3), torch.tensor([0, 1, 0, 1, 1, 0])
    w0 = net[1].weight.detach().clone()

    def loss(w_flat):
        return F.cross_entropy(F.linear(x.reshape(6, 3), w_flat.reshape(2, 3)) / 200.0, y)

    flat = w0.reshape(-1)
    g = torch.autograd.functional.jacobian(loss, flat)
    h = torch.autograd.functional.hessian(loss, flat)
    s_ref = -(flat * (h @ g))  # (6,)
    hg = grasp_hg(net, {"1.weight": net[1].weight}, x, y, 200.0)["1.weight"].reshape(-1)
    assert torch.allclose(hg, h @ g, rtol=1e-4, atol=1e-12)

    # the method on the same data: a dataset holding exactly these 6 samples
    from torch.utils.data import TensorDataset

    from sparsekit.data.bundle import DataBundle

    bundle = DataBundle("toy", TensorDataset(x, y), TensorDataset(x, y), (1, 1, 3), 2)
    ctx = SearchContext(model=net, data=bundle, names=["1.weight"], sparsity=0.5)
    mask = get_method("grasp", {"per_class": 3}).search(ctx).mask["1.weight"].reshape(-1)
    keep_smallest_s = torch.zeros(6, dtype=torch.bool)
    keep_smallest_s[torch.argsort(s_ref)[:3]] = True
    assert torch.equal(mask, keep_smallest_s)
    mag = get_method("grasp-magnitude", {"per_class": 3}).search(ctx).mask["1.weight"].reshape(-1)
    keep_largest_abs = torch.zeros(6, dtype=torch.bool)
    keep_largest_abs[torch.argsort(s_ref.abs(), descending=True)[:3]] = True
    assert torch.equal(mag, keep_largest_abs)


def test_ltr_rounds_saved_nested_and_exact(data, tmp_path):
    model = lenet(data)
    ctx = ctx_for(model, data, sparsity=0.55, run_dir=tmp_path, theta_k=copy.deepcopy(model.state_dict()))
    res = get_method("ltr").search(ctx)
    dens = round_densities(0.45, 0.2)  # 0.8, 0.64, 0.512, 0.45
    assert res.info["rounds"] == len(dens) == 4
    masks, metas = [], []
    for i in range(len(dens) + 1):
        rd = paths.round_dir(tmp_path, i)
        masks.append(Mask.load(paths.mask(rd)))
        metas.append(json.loads(paths.round_json(tmp_path, i).read_text()))
    assert metas[0]["density"] == 1.0 and metas[0]["accuracy"] is not None
    assert metas[-1]["accuracy"] is None  # trained by the pipeline's fine-tune stage
    for a, b in zip(masks, masks[1:], strict=False):
        assert (b & a) == b  # every round prunes survivors only
    assert masks[-1] == res.mask
    assert res.mask.kept == budget_keep(res.mask.numel, 0.55)
    assert masks[1].kept == budget_keep(res.mask.numel, 0.2)
    assert res.info["cumulative_train_s"] > 0
