"""CIFAR-style VGG-16 with BatchNorm (open_lth plan, global average pool, FC not pruned)."""

from __future__ import annotations

from torch import nn

from sparsekit.models.registry import MODELS, init_weights, register_default_exclude

_PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


@MODELS.register("vgg16", help="CIFAR VGG-16 with BN; the classifier FC is left dense")
def vgg16(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    layers: list[nn.Module] = []
    c = in_shape[0]
    for v in _PLAN:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)), nn.ReLU()]
            c = int(v)
    model = nn.Sequential(
        nn.Sequential(*layers), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)
    )
    return init_weights(model, bn_uniform=True)


register_default_exclude("vgg16", ("3.weight",))
