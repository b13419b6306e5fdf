"""Model definitions shipped with the package (the paper's CIFAR-10 ResNets)."""

from .cifar_resnet import (
    BasicBlock,
    CifarResNet,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
)

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
