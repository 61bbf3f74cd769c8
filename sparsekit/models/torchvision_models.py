"""torchvision classifiers by "tv:NAME", random init (never downloads weights)."""

from __future__ import annotations

import torch
from torch import nn

from sparsekit.errors import UsageError


class _GrayToRGB(nn.Module):
    """Repeats a 1-channel input to 3 channels so ImageNet-style stems accept grayscale data."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1)  # (B, 1, H, W) -> (B, 3, H, W)


class _Wrapped(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.to_rgb = _GrayToRGB()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.to_rgb(x))


def build_torchvision(name: str, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        import difflib

        close = difflib.get_close_matches(name, available, n=1)
        hint = f"; did you mean 'tv:{close[0]}'?" if close else ""
        raise UsageError(f"unknown torchvision model {name!r}{hint}")
    kwargs: dict = {}
    if name.startswith("vit_"):  # a ViT fixes its image size at build time: build it for the data's
        kwargs["image_size"] = in_shape[-1]
    net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if in_shape[0] == 1:
        return _Wrapped(net)
    if in_shape[0] != 3:
        raise UsageError(f"tv:{name} expects 1 or 3 input channels, data has {in_shape[0]}")
    return net
