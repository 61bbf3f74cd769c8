"""torchvision classifiers by "tv:NAME", random init (never downloads weights)."""

from __future__ import annotations

import functools

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


#: torchvision classifiers with training-only auxiliary heads (built without them)
_AUX_HEADS = ("googlenet", "inception_v3")


@functools.cache
def _versioned_mnasnet() -> type:
    """MNASNet that loads a state dict without torch's ``_metadata`` (safetensors files have none).

    torchvision's MNASNet refuses such a dict ("version should be set to 1 or 2 instead of None");
    sparsekit only loads state dicts of models it built, which are the current layout, version 2.
    """
    from torchvision.models import MNASNet

    class VersionedMNASNet(MNASNet):
        def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs) -> None:  # noqa: ANN001
            if local_metadata.get("version") is None:
                local_metadata = {**local_metadata, "version": 2}
            super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    return VersionedMNASNet


def _first(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__


def _check_input_size(net: nn.Module, name: str, in_shape: tuple[int, int, int]) -> None:
    """One eval forward of a zero sample: an input too small for the architecture (inception_v3 below
    75x75, a ViT whose patch size does not divide the image) is a usage error, not an internal one."""
    was_training = net.training
    x = torch.zeros(1, 3, *in_shape[1:], device=next(net.parameters()).device)
    try:
        with torch.no_grad():
            net.eval()(x)
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise UsageError(f"tv:{name} cannot take {'x'.join(map(str, in_shape))} inputs ({_first(exc)}); "
                         "use larger images") from None
    finally:
        net.train(was_training)


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
    if name in _AUX_HEADS:
        # training-only auxiliary classifiers: absent from the eval-mode graph that is converted and
        # exported (their masked weights would be counted but never run), and their train-mode tuple
        # output is not one logits tensor; built without them (init_weights: torchvision's default,
        # stated so it does not warn)
        kwargs.update(aux_logits=False, init_weights=True)
    try:
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except (RuntimeError, ValueError, AssertionError) as exc:  # e.g. a ViT's patch size vs the image size
        raise UsageError(f"tv:{name} cannot be built for {'x'.join(map(str, in_shape))} inputs ({_first(exc)})") from None
    if isinstance(net, torchvision.models.MNASNet):
        net.__class__ = _versioned_mnasnet()
    _check_input_size(net, name, in_shape)
    if in_shape[0] == 1:
        return _Wrapped(net)
    if in_shape[0] != 3:
        raise UsageError(f"tv:{name} expects 1 or 3 input channels, data has {in_shape[0]}")
    return net
