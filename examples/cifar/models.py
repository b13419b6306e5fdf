"""CIFAR-10 ResNets in torchvision style; the definitions live in the installed package."""

from residual_prune.models.cifar_resnet import (  # noqa: F401
    BasicBlock,
    CifarResNet,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
)

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
