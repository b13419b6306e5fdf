"""Shared fixtures: tiny models and data built in memory."""

from __future__ import annotations

import warnings

import pytest
import torch

import residual_prune as rp
from residual_prune.criteria._registry import _registry
from residual_prune.models import resnet20

warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*", category=FutureWarning)


@pytest.fixture(autouse=True)
def _same_random_state() -> None:
    """Every test starts from the same global random state, whatever ran before it (no order-dependent results)."""
    torch.manual_seed(0)


@pytest.fixture
def cifar_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return resnet20()


@pytest.fixture
def cifar_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)


@pytest.fixture
def temporary_criteria():
    """``register(name, fn)``: a criterion registered for one test only."""
    added: list[str] = []

    def register(name: str, fn):
        rp.register_criterion(name)(fn)
        added.append(name)

    yield register
    for name in added:
        _registry.pop(name, None)
