"""SNIP connection sensitivity, summed over each block's weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..blocks import ResidualBlock
from ..modes import preserved_state
from ._common import (
    accumulate,
    block_sums,
    block_weights,
    classification_loss,
    labelled_batches,
)
from ._registry import register_criterion

__all__ = ["snip_importance"]


@register_criterion("snip", requires_data=True, gradient_based=True, source="builtin")
def snip_importance(
    model: nn.Module,
    blocks: Sequence[ResidualBlock],
    data: Any,
    *,
    num_batches: int | None = 1,
    bn_mode: str = "train",
    progress: bool = True,
) -> dict[str, float]:
    """SNIP (Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019).

    Importance of a block = sum over its Conv/Linear weights of ``|theta * dL/dtheta|``,
    ``L`` the mean cross-entropy, gradients summed over ``num_batches`` batches
    (``None``: all of ``data``). Needs labelled batches and one backward pass per batch.
    Higher = keep. BN uses batch statistics unless ``bn_mode="eval"``; the model is
    left exactly as it was.
    """
    weights, flat = block_weights(model, blocks)
    grads = [torch.zeros_like(w) for w in flat]
    with preserved_state(model, bn_mode, needs_grad=flat), torch.enable_grad():  # also under torch.no_grad()
        for i, x, y in labelled_batches(data, num_batches, "snip", progress=progress):
            loss = classification_loss(model, x, y, i)
            accumulate(grads, torch.autograd.grad(loss, flat, allow_unused=True))
    return block_sums(blocks, weights, ((w.detach() * g).abs() for w, g in zip(flat, grads)))
