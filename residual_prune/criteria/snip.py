"""SNIP connection sensitivity, summed over each block's weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..analysis import ResidualBlock
from ..modes import preserved_state
from ._common import BatchRunner, ForwardFn, LossFn, accumulate, block_sums, block_weights
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
    loss_fn: LossFn | None = None,
    forward_fn: ForwardFn | None = None,
) -> dict[str, float]:
    """SNIP (Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019).

    Importance of a block = sum over its Conv/Linear weights of ``|theta * dL/dtheta|``,
    ``L`` the mean cross-entropy, gradients summed over ``num_batches`` batches
    (``None``: all of ``data``). Needs labelled batches and one backward pass per batch.
    Batches are ``(x, y)`` pairs or dicts of keyword arguments with ``"labels"`` (the model's
    ``outputs.loss`` is ``L``); ``forward_fn(model, batch)`` and ``loss_fn(outputs, batch)``
    replace the forward pass and the loss (see :class:`~residual_prune.criteria._common.BatchRunner`).
    Higher = keep. BN uses batch statistics unless ``bn_mode="eval"``; the model is
    left exactly as it was.
    """
    weights, flat = block_weights(model, blocks)
    grads = [torch.zeros_like(w) for w in flat]
    with preserved_state(model, bn_mode, needs_grad=flat), torch.enable_grad():  # also under torch.no_grad()
        run = BatchRunner("snip", loss_fn=loss_fn, forward_fn=forward_fn)
        for batch in run.batches(data, num_batches, progress=progress):
            accumulate(grads, torch.autograd.grad(run.loss(model, batch), flat, allow_unused=True))
    return block_sums(blocks, weights, ((w.detach() * g).abs() for w, g in zip(flat, grads)))
