"""Structured conversion contract over CNNs people ship: channel ticket -> structured -> equal to
masked-dense -> structured ONNX verified by ONNX Runtime; what cannot be removed is reported, never
an internal error. Plus hand-made nets with each coupling (depthwise, residual add, concat, groups=4,
squeeze-excitation, channel shuffle)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from sparsekit.binary_mask import Mask
from sparsekit.formats import get_format
from sparsekit.formats.structured import coupled_channel_groups
from sparsekit.masking.prunable import prunable_tensors
from sparsekit.models.registry import ModelSpec, build_model

TV = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5",
      "regnet_x_400mf", "convnext_tiny", "densenet121", "squeezenet1_1", "vit_b_16"]


def group_channel_mask(net: nn.Module, x: torch.Tensor, fraction: float = 0.5, seed: int = 0) -> Mask:
    """A channel ticket as a group-aware search makes it: per coupled group, the same root channels
    are masked in every member weight (the classifier head, an output layer, stays dense)."""
    g = torch.Generator().manual_seed(seed)
    weights = prunable_tensors(net)
    keep = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    try:
        groups = coupled_channel_groups(net, x)
    except Exception:  # noqa: BLE001 - an untraceable net: fall back to one group per layer
        groups = [{"channels": w.shape[0], "members": [{"weight": n, "rows": list(range(w.shape[0]))}]}
                  for n, w in list(weights.items())[:-1]]
    for grp in groups:
        drop = torch.randperm(grp["channels"], generator=g)[: int(grp["channels"] * fraction)].tolist()
        for mem in grp["members"]:
            if mem["weight"] not in keep:
                continue
            rows = [mem["rows"][j] for j in drop if mem["rows"][j] >= 0]
            keep[mem["weight"]][rows] = False
    return Mask(keep)


def _masked_dense(net: nn.Module, mask: Mask) -> nn.Module:
    ref = copy.deepcopy(net).eval()
    mask.apply(ref)
    return ref


def _convert_and_verify(net: nn.Module, mask: Mask, x: torch.Tensor, tmp_path) -> dict:
    import onnxruntime as ort

    from sparsekit.export.onnx_export import to_onnx_proto

    c = get_format("structured").convert(net, mask, x)
    ref = _masked_dense(net, mask)
    with torch.no_grad():
        want, got = ref(x), c.module(x)
    scale = max(1.0, float(want.abs().max()))
    assert torch.allclose(got, want, atol=get_format("structured").atol * scale)
    proto, _ = to_onnx_proto(c.module.eval(), tuple(x.shape[1:]))
    path = tmp_path / "s.onnx"
    path.write_bytes(proto.SerializeToString())
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(y, want.numpy(), atol=1e-3 * scale)
    rep = c.report
    for d in rep["not_removed"]:  # every channel left in place says where and why
        assert d["root"] and d["reason"]
    return rep


@pytest.mark.slow
@pytest.mark.parametrize("name", TV)
def test_torchvision_channel_ticket_converts_or_reports(name, tmp_path):
    size = 32
    net = build_model(ModelSpec(f"tv:{name}", (3, size, size), 10), seed=0).eval()
    x = torch.randn(2, 3, size, size)
    mask = group_channel_mask(net, x)
    rep = _convert_and_verify(net, mask, x, tmp_path)
    assert rep["macs_after"] <= rep["macs_before"]
    if name in ("resnet18", "mobilenet_v2", "regnet_x_400mf", "squeezenet1_1"):
        assert rep["channels_removed"] > 0  # the common couplings really shrink


class _Hand(nn.Module):
    """Depthwise block, residual add, channel concat, a groups=4 conv, squeeze-excitation, shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
                                nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))
        self.branch = nn.Sequential(nn.Conv2d(16, 8, 1), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(24, 24, 3, padding=1, groups=4), nn.ReLU())
        self.se_reduce, self.se_expand = nn.Conv2d(24, 6, 1), nn.Conv2d(6, 24, 1)
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.dw(x))                       # residual add over a depthwise block
        x = torch.cat([x, self.branch(x)], 1)                # concat: 16 + 8 channels
        n, c, h, w = x.shape
        x = x.view(n, 4, c // 4, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle
        x = self.grouped(x)
        s = torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(x.mean((2, 3), keepdim=True)))))
        return self.head((x * s).mean((2, 3)))


@pytest.mark.parametrize("seed", [0, 1])
def test_hand_made_couplings_convert_or_report(seed, tmp_path):
    torch.manual_seed(seed)
    net = _Hand().eval()
    x = torch.randn(4, 3, 8, 8)
    mask = group_channel_mask(net, x, seed=seed)
    rep = _convert_and_verify(net, mask, x, tmp_path)
    assert rep["channels_removed"] > 0 or rep["not_removed"]
    grouped = [d for d in rep["not_removed"] if "grouped conv" in d["reason"]]
    removed_widths = {r["name"]: r for r in rep["layers"]}
    g = removed_widths["grouped.0"]
    assert g["out_after"] % 4 == 0 and g["in_after"] % 4 == 0  # group divisibility always holds
    assert grouped or g["out_after"] == g["out_before"]


def test_vit_run_says_attention_weights_stay_dense(tmp_path, caplog):
    import json
    import logging

    from sparsekit.pipeline import PruneConfig, prune

    caplog.set_level(logging.WARNING, logger="sparsekit")
    out = tmp_path / "vit"
    prune(PruneConfig("tv:vit_b_16", "synthetic:3x16x16", "magnitude", 0.5, str(out), pretrain_epochs=0,
                      finetune_epochs=0, dense_reference=False, eval_limit=8, layerwise=True))
    meta = json.loads((out / "run.json").read_text())
    assert meta["left_dense"] and all(k.endswith("in_proj_weight") for k in meta["left_dense"])
    assert "attention projection weight(s)" in caplog.text and "stay dense" in caplog.text


def test_channel_groups_are_found_under_no_grad():
    """A search's selection step runs under torch.no_grad(); the couplings must still be traced."""
    net = build_model(ModelSpec("resnet20", (3, 16, 16), 10), seed=0).eval()
    with torch.no_grad():
        groups = coupled_channel_groups(net, torch.randn(2, 3, 16, 16))
    assert any(len(g["members"]) > 1 for g in groups)  # the residual stream couples several convs
