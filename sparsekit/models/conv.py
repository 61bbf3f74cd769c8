"""Conv-2 / Conv-4 / Conv-6 of Frankle & Carbin (3x3 convs, ReLU, no BN, FC 256-256)."""

from __future__ import annotations

from torch import nn

from sparsekit.models.registry import MODELS, flat_features, init_weights


def _convnet(in_shape: tuple[int, int, int], num_classes: int, widths: list[int]) -> nn.Module:
    layers: list[nn.Module] = []
    c = in_shape[0]
    for i, w in enumerate(widths):
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU()]
        c = w
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2))
    features = nn.Sequential(*layers)
    n = flat_features(features, in_shape)
    model = nn.Sequential(
        features,
        nn.Flatten(),
        nn.Linear(n, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, num_classes),
    )
    return init_weights(model)


@MODELS.register("conv2", help="Conv-2: [64,64,pool] + FC 256-256")
def conv2(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return _convnet(in_shape, num_classes, [64, 64])


@MODELS.register("conv4", help="Conv-4: [64,64,pool,128,128,pool] + FC 256-256")
def conv4(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return _convnet(in_shape, num_classes, [64, 64, 128, 128])


@MODELS.register("conv6", help="Conv-6: Conv-4 + [256,256,pool] + FC 256-256")
def conv6(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return _convnet(in_shape, num_classes, [64, 64, 128, 128, 256, 256])
