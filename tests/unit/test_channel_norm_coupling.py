"""Channels that pass through a LayerNorm over channels (ConvNeXt, transformer streams) are not removable:
a zero channel still enters the others' mean and variance. The channel search must not count them as
removed (else run.json's achieved MACs exceed the converted model's: tv:convnext_tiny recorded 0.50 and
kept 0.67 after conversion), and the structured converter keeps them and says why."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from sparsekit.cost.budget import Budget
from sparsekit.data.synthetic import make_synthetic
from sparsekit.formats.structured import Structured
from sparsekit.masking.coupling.channel_groups import mixes_channels, training_mask
from sparsekit.masking.coupling.channel_space import UnitSpace
from sparsekit.masking.prunable import prunable_tensors
from sparsekit.methods import SearchContext, get_method
from sparsekit.train.loop import TrainConfig
from tests.unit._nets import one_thread  # noqa: F401 (autouse fixture)

SHAPE = (3, 16, 16)


class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt LayerNorm2d: LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Block(nn.Module):
    """ConvNeXt block: depthwise 7x7 -> channels-last LayerNorm -> Linear 4x -> GELU -> Linear -> layer
    scale -> back to NCHW, around a residual add."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.scale = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.scale * self.fc2(nn.functional.gelu(self.fc1(y)))
        return x + y.permute(0, 3, 1, 2)


class TinyConvNeXt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), LayerNorm2d(16))
        self.stage1 = nn.Sequential(Block(16), Block(16))
        self.down = nn.Sequential(LayerNorm2d(16), nn.Conv2d(16, 32, 2, stride=2))
        self.stage2 = Block(32)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(32), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.down(self.stage1(self.stem(x)))))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return TinyConvNeXt().eval()


def test_channel_mixing_norms():
    assert mixes_channels(nn.LayerNorm(8)) and mixes_channels(nn.GroupNorm(2, 8))
    assert not mixes_channels(nn.GroupNorm(8, 8)) and not mixes_channels(nn.BatchNorm2d(8))


def test_layernormed_streams_are_no_unit_and_hidden_channels_are():
    model = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning: "unwrapped parameters" (the layer scales)
        space = UnitSpace(model, list(prunable_tensors(model)), SHAPE)
    in_units = {n for u in space.units.units for n, _ in u}
    # every residual-stream writer (stem, depthwise convs, fc2, the downsampling conv) feeds a LayerNorm
    for stream in ("stem.0.weight", "stage1.0.dw.weight", "stage1.1.fc2.weight", "down.1.weight",
                   "stage2.fc2.weight"):
        assert stream not in in_units
    assert space.units.partial > 0
    assert {"stage1.0.fc1.weight", "stage1.1.fc1.weight", "stage2.fc1.weight"} <= in_units  # MLP hidden


@pytest.mark.parametrize("method", ["magnitude-channel", "cts"])
def test_recorded_macs_are_the_converted_models(method):
    model = _model()
    data = make_synthetic(SHAPE, n_train=128, n_test=32)
    ctx = SearchContext(model=model, data=data, names=list(prunable_tensors(model)), sparsity=0.5,
                        granularity="channel", seed=0, train_cfg=TrainConfig(batch_size=32), search_steps=3,
                        budget=Budget("macs", 0.5), theta_k=copy.deepcopy(model.state_dict()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning: "unwrapped parameters" (the layer scales)
        result = get_method(method, {"batch_size": 32} if method == "cts" else None).search(ctx)
        ticket = copy.deepcopy(model)
        training_mask(ticket, result.mask, SHAPE).apply(ticket)
        rep = Structured().convert(ticket, result.mask, torch.randn(4, *SHAPE)).report
    assert rep["channels_not_removed"] == 0
    assert rep["macs_before"] == result.info["budget_dense"]
    assert rep["macs_after"] == result.info["budget_achieved"] <= 0.5 * rep["macs_before"]


def test_converter_keeps_dead_layernormed_channels_and_says_why():
    """A mask that empties stream channels everywhere (not one the search makes) converts exactly: the
    channels stay, and the report names the LayerNorm."""
    model = _model()
    # every output row coupled to stream channels 0-2 of stage 1 (depthwise convs: their own rows)
    writers = ("stem.0.weight", "stage1.0.dw.weight", "stage1.0.fc2.weight", "stage1.1.dw.weight",
               "stage1.1.fc2.weight")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in writers:
            params[n][:3] = 0  # stream channels 0-2 written by nobody
            bias = params[n.replace(".weight", ".bias")]
            bias[:3] = 0
    from sparsekit.binary_mask import Mask

    mask = Mask({n: params[n].detach() != 0 for n in prunable_tensors(model)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conv = Structured().convert(model, mask, torch.randn(4, *SHAPE))
    rep = conv.report
    widths = {lay["name"]: lay for lay in rep["layers"]}
    assert widths["stem.0"]["out_after"] == 16
    assert any("LayerNorm" in d["reason"] and d["channels"] == 3 for d in rep["not_removed"]), rep["not_removed"]
