"""CIFAR-10 ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Sec. 4.2).

Written in torchvision style: ``BasicBlock``, stages ``layer1..layer3`` of 16/32/64
channels, ``downsample`` projection shortcuts (1x1 conv + BN, option B) at the first
block of ``layer2`` and ``layer3``. A ResNet-(6n+2) has ``n`` blocks per stage. The
block tracer treats these like any third-party model: nothing here is special-cased.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection; one "layer" in the paper's counting."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs with ``layers[i]`` BasicBlocks in stage ``i + 1``."""

    def __init__(self, layers: list[int], num_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(widths[0], layers[0], stride=1)
        self.layer2 = self._make_layer(widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(widths[2], layers[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _depth(n: int, num_classes: int) -> CifarResNet:
    return CifarResNet([n, n, n], num_classes=num_classes)


def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20: 3 blocks per stage."""
    return _depth(3, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    """ResNet-32: 5 blocks per stage (15 blocks, 13 removable)."""
    return _depth(5, num_classes)


def resnet44(num_classes: int = 10) -> CifarResNet:
    """ResNet-44: 7 blocks per stage."""
    return _depth(7, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    """ResNet-56: 9 blocks per stage (27 blocks, 25 removable)."""
    return _depth(9, num_classes)


def resnet110(num_classes: int = 10) -> CifarResNet:
    """ResNet-110: 18 blocks per stage."""
    return _depth(18, num_classes)
