"""The paper's CIFAR-10 ResNets: depth, size (He et al. 2016, Table 6) and the examples re-export."""

from __future__ import annotations

import pytest
import torch

from residual_prune.models import BasicBlock, resnet20, resnet32, resnet44, resnet56, resnet110


@pytest.mark.parametrize(
    "build, blocks, params_m",
    [(resnet20, 9, 0.27), (resnet32, 15, 0.46), (resnet44, 21, 0.66), (resnet56, 27, 0.85), (resnet110, 54, 1.7)],
)
def test_depth_and_size(build, blocks: int, params_m: float) -> None:
    model = build()
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == blocks
    assert 2 * blocks + 2 == int(build.__name__.removeprefix("resnet"))
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(params_m, rel=0.03)  # rounded in the paper
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_examples_reexport_the_package_models() -> None:
    from examples.cifar import models

    assert models.resnet56 is resnet56 and models.BasicBlock is BasicBlock
