"""Data-free baselines: seeded random scores and weight magnitude."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..analysis import ResidualBlock
from ._common import block_weights
from ._registry import register_criterion

__all__ = ["random_importance", "l1_importance"]


@register_criterion("random", source="builtin", reads_weights=False)
def random_importance(
    model: nn.Module, blocks: Sequence[ResidualBlock], data: Any = None, *, seed: int = 0
) -> dict[str, float]:
    """Uniform random importance, reproducible with ``seed``: the random-pruning baseline.

    Needs: nothing (no data, no gradients). The same seed and block list give the same scores.

    Examples:
        >>> plan = plan_pruning(model, criterion="random", n=2, example_inputs=x, seed=1)
    """
    generator = torch.Generator().manual_seed(int(seed))
    values = torch.rand(len(blocks), generator=generator, dtype=torch.float64)
    return {block.name: float(v) for block, v in zip(blocks, values)}


@register_criterion("l1", source="builtin")
def l1_importance(model: nn.Module, blocks: Sequence[ResidualBlock], data: Any = None) -> dict[str, float]:
    """Weight magnitude: the sum of ``|theta|`` over the block's Conv and Linear weights.

    The block-level form of magnitude pruning (Han et al., 2015). Needs: nothing. Because
    deeper blocks have more weights, it favours removing early blocks: the stage bias the
    paper discusses in its Appendix A.2.
    """
    weights, _ = block_weights(model, blocks)
    with torch.no_grad():
        return {name: float(sum(w.detach().abs().double().sum() for w in ws)) for name, ws in weights.items()}
