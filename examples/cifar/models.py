"""CIFAR-10 ResNets in torchvision style; the definitions live in the installed package."""

from residual_prune.models.cifar_resnet import *  # noqa: F401,F403
from residual_prune.models.cifar_resnet import __all__  # noqa: F401
