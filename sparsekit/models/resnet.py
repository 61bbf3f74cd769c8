"""CIFAR-style ResNet-20 (16/32/64 widths, 3 blocks per stage).

Deviation from the CTS reference (3x3 stride-2 projection shortcuts): we use the common 1x1 conv + BN
projection (open_lth's cifar_resnet_20, option B). All convs, projections and the FC are prunable.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsekit.models.registry import MODELS, init_weights


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, depth: int = 20, width: int = 16) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        blocks: list[nn.Module] = []
        c = width
        for stage, w in enumerate([width, 2 * width, 4 * width]):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c, w, stride))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.pool(self.blocks(x))  # (B, C, 1, 1)
        return self.fc(torch.flatten(x, 1))


@MODELS.register("resnet20", help="CIFAR ResNet-20 (16/32/64), BN, 1x1 projection shortcuts")
def resnet20(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return init_weights(CifarResNet(in_shape[0], num_classes), bn_uniform=True)
