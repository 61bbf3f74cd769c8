"""Registry-wide contract tests: every registered model, dataset and method honours the interface."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparsekit.data import DATASETS, load_dataset
from sparsekit.errors import DataNotFoundError, UsageError
from sparsekit.masking.prunable import prunable_tensors
from sparsekit.masking.select.topk import budget_keep
from sparsekit.methods import METHODS, SearchContext, get_method
from sparsekit.models import MODELS, ModelSpec, build_model, default_policy
from sparsekit.registry import Registry
from sparsekit.train.loop import TrainConfig


def test_registry_did_you_mean():
    reg: Registry = Registry("thing")
    reg.register("resnet20")(object())
    with pytest.raises(UsageError, match="did you mean 'resnet20'"):
        reg.get("resnet2")
    with pytest.raises(ValueError):
        reg.register("resnet20")(object())


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32)])
def test_every_model_builds_runs_and_has_prunable_tensors(name, in_shape):
    if name == "vgg16" and in_shape == (3, 32, 32):
        pytest.skip("one vgg16 shape is enough (slow to build)")
    model = build_model(ModelSpec(name, in_shape, 7), seed=0)
    model.eval()
    out = model(torch.randn(2, *in_shape))
    assert out.shape == (2, 7)
    assert prunable_tensors(model, default_policy(name))


def test_model_init_is_seeded():
    a = build_model(ModelSpec("lenet5", (1, 28, 28), 10), seed=1).state_dict()
    b = build_model(ModelSpec("lenet5", (1, 28, 28), 10), seed=1).state_dict()
    c = build_model(ModelSpec("lenet5", (1, 28, 28), 10), seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_models(name):
    model = build_model(ModelSpec(f"tv:{name}", (1, 32, 32), 10), seed=0).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(UsageError, match="did you mean"):
        build_model(ModelSpec("tv:resnet1", (3, 32, 32), 10))


def test_user_model_from_file(tmp_path):
    f = tmp_path / "mymodel.py"
    f.write_text(
        "import torch.nn as nn\n"
        "def make(num_classes, in_shape):\n"
        "    c, h, w = in_shape\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))\n"
    )
    model = build_model(ModelSpec(f"{f}:make", (1, 4, 4), 3))
    assert model(torch.randn(1, 1, 4, 4)).shape == (1, 3)
    with pytest.raises(UsageError, match="no callable"):
        build_model(ModelSpec(f"{f}:missing", (1, 4, 4), 3))
    with pytest.raises(UsageError, match="not found"):
        build_model(ModelSpec(f"{tmp_path}/nope.py:make", (1, 4, 4), 3))
    with pytest.raises(UsageError, match="cannot import"):
        build_model(ModelSpec("no_such_pkg_xyz.mod:make", (1, 4, 4), 3))


def test_unknown_model_did_you_mean():
    with pytest.raises(UsageError, match="did you mean 'lenet300'"):
        build_model(ModelSpec("lenet30", (1, 28, 28), 10))


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_loads_or_says_where_it_looked(name, tmp_path, monkeypatch):
    """Each dataset either loads with the right shapes or fails with one clear DataNotFoundError."""
    monkeypatch.delenv("SPARSEKIT_DATA", raising=False)
    spec = f"{name}:{tmp_path}" if name == "imagefolder" else name
    try:
        bundle = load_dataset(spec, data_dir=tmp_path)
    except DataNotFoundError as exc:
        assert "\n" not in str(exc) and len(str(exc)) > 20
        return
    x, y = next(bundle.batches("train", 8))
    assert x.shape == (8, *bundle.in_shape) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and int(y.max()) < bundle.num_classes


def test_synthetic_is_seeded_and_shapes():
    a = load_dataset("synthetic:3x8x8")
    b = load_dataset("synthetic:3x8x8")
    assert a.in_shape == (3, 8, 8)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    with pytest.raises(UsageError):
        load_dataset("synthetic:3x8")


def _tiny_bn_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )


@pytest.mark.parametrize("method", [m for m in METHODS.names() if "weight" in METHODS.get(m).granularities])
@pytest.mark.parametrize("arch", ["lenet300", "bn-conv"])
@pytest.mark.parametrize("sparsity", [0.5, 0.95])
def test_every_method_exact_sparsity_and_weights_untouched(method, arch, sparsity, synthetic):
    torch.manual_seed(0)
    model = build_model(ModelSpec("lenet300", synthetic.in_shape, 10), seed=0) if arch == "lenet300" else _tiny_bn_net()
    names = list(prunable_tensors(model))
    before = copy.deepcopy(model.state_dict())
    ctx = SearchContext(
        model=model, data=synthetic, names=names, sparsity=sparsity, seed=0,
        train_cfg=TrainConfig(batch_size=256), finetune_epochs=1, search_epochs=1,
        theta_k=copy.deepcopy(before),
    )
    result = get_method(method).search(ctx)
    mask = result.mask
    assert mask.names == names
    total = sum(model.get_parameter(n).numel() for n in names)
    layerwise_only = getattr(METHODS.get(method), "always_layerwise", False)
    if layerwise_only:
        for n in names:
            assert int(mask[n].sum()) == budget_keep(mask[n].numel(), sparsity)
    else:
        assert mask.kept == budget_keep(total, sparsity)
    if not getattr(METHODS.get(method), "trains_weights", False):
        after = model.state_dict()
        for k in names:
            assert torch.equal(before[k], after[k]), f"{method} changed weight {k}"


@pytest.mark.parametrize("method", [m for m in METHODS.names() if "channel" in METHODS.get(m).granularities])
@pytest.mark.parametrize("sparsity", [0.5, 0.75])
def test_every_channel_method_removes_whole_channels_exactly(method, sparsity, synthetic):
    """At channel granularity every method returns whole output rows, keeps the classifier's rows,
    removes round(s x candidate channels) channels and leaves the weights bit-identical."""
    torch.manual_seed(0)
    model = _tiny_bn_net()
    names = list(prunable_tensors(model))
    before = copy.deepcopy(model.state_dict())
    ctx = SearchContext(
        model=model, data=synthetic, names=names, sparsity=sparsity, seed=0, granularity="channel",
        train_cfg=TrainConfig(batch_size=256), finetune_epochs=1, search_steps=3, theta_k=copy.deepcopy(before),
    )
    mask = get_method(method).search(ctx).mask
    assert mask.names == names
    rows = {n: mask[n].reshape(mask[n].shape[0], -1) for n in names}
    for n, r in rows.items():
        assert bool((r.all(1) | ~r.any(1)).all()), f"{method}: {n} has partial rows"
    assert bool(rows[names[-1]].all())  # the classifier's outputs are the classes
    candidates = sum(r.shape[0] for r in list(rows.values())[:-1])
    removed = sum(int((~r.any(1)).sum()) for r in list(rows.values())[:-1])
    assert removed == round(sparsity * candidates)
    if not getattr(METHODS.get(method), "trains_weights", False):
        for k in names:
            assert torch.equal(before[k], model.state_dict()[k]), f"{method} changed weight {k}"
