"""LeNet-300-100 (fully connected) and LeNet-5 (conv)."""

from __future__ import annotations

from torch import nn

from sparsekit.models.registry import MODELS, flat_features, init_weights


@MODELS.register("lenet300", help="784-300-100-10 MLP (input flattened), LeNet-300-100")
def lenet300(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c, h, w = in_shape
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, num_classes),
    )
    return init_weights(model)


@MODELS.register("lenet5", help="LeNet-5: conv6-pool-conv16-pool-fc120-fc84")
def lenet5(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    features = nn.Sequential(
        nn.Conv2d(in_shape[0], 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    n = flat_features(features, in_shape)
    model = nn.Sequential(
        features,
        nn.Flatten(),
        nn.Linear(n, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )
    return init_weights(model)
