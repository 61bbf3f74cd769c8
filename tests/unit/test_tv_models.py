"""torchvision classifiers that needed care: MNASNet's state-dict version, training-only aux heads,
and grouped convs (RegNet) whose channels the search counts only as the converter removes them."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sparsekit.formats.structured import Structured
from sparsekit.masking.coupling.channel_groups import training_mask
from sparsekit.masking.coupling.channel_space import UnitSpace, mac_cost, select_by_cost
from sparsekit.masking.prunable import prunable_tensors
from sparsekit.models import ModelSpec, build_model
from tests.unit._nets import one_thread  # noqa: F401 (autouse fixture)


def test_mnasnet_loads_a_state_dict_without_torch_metadata(tmp_path):
    """A safetensors file carries no ``_metadata``; torchvision's MNASNet refused it (version None)."""
    model = build_model(ModelSpec("tv:mnasnet0_5", (3, 32, 32), 10), seed=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    fresh = build_model(ModelSpec("tv:mnasnet0_5", (3, 32, 32), 10), seed=1)
    fresh.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model.eval()(x))
    assert torch.equal(copy.deepcopy(fresh).state_dict()["classifier.1.weight"], model.state_dict()["classifier.1.weight"])


@pytest.mark.parametrize(("name", "size"), [("googlenet", 64), ("inception_v3", 80)])
def test_aux_head_models_have_only_eval_graph_weights(name, size):
    """Every prunable weight runs in eval mode (a masked aux-head weight would be counted as a zero the
    exported model does not have), and train mode returns one logits tensor."""
    model = build_model(ModelSpec(f"tv:{name}", (3, size, size), 10), seed=0)
    ran: set[nn.Module] = set()
    hooks = [m.register_forward_hook(lambda mod, i, o: ran.add(mod)) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, size, size))
    for h in hooks:
        h.remove()
    modules = dict(model.named_modules())
    assert all(modules[n.removesuffix(".weight")] in ran for n in prunable_tensors(model))
    out = model.train()(torch.randn(2, 3, size, size))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)


def test_regnet_grouped_channels_are_removed_as_the_search_counts():
    model = build_model(ModelSpec("tv:regnet_x_400mf", (3, 32, 32), 10), seed=0).eval()
    shape = (3, 32, 32)
    space = UnitSpace(model, list(prunable_tensors(model)), shape)
    cost = mac_cost(space, model)
    scores = torch.rand(space.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    keep, _ = select_by_cost(scores, space, cost, 0.5 * cost.dense)
    mask = space.mask(keep)
    ticket = copy.deepcopy(model)
    training_mask(ticket, mask, shape).apply(ticket)
    rep = Structured().convert(ticket, mask, torch.randn(4, *shape)).report
    assert rep["channels_not_removed"] == 0
    assert rep["macs_after"] == cost.exact(keep) <= 0.5 * rep["macs_before"]
    grouped = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels]
    after = {lay["name"]: lay for lay in rep["layers"]}
    assert any(after[n]["out_after"] < after[n]["out_before"] for n in grouped)


def test_an_input_too_small_for_the_architecture_is_a_usage_error():
    from sparsekit.errors import UsageError

    with pytest.raises(UsageError, match="tv:inception_v3 cannot take 3x64x64 inputs .*use larger images"):
        build_model(ModelSpec("tv:inception_v3", (3, 64, 64), 10), seed=0)
    with pytest.raises(UsageError, match="tv:vit_b_16 cannot be built for 3x40x40"):
        build_model(ModelSpec("tv:vit_b_16", (3, 40, 40), 10), seed=0)
