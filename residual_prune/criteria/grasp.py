"""GraSP gradient-signal preservation, summed over each block's weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

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

__all__ = ["grasp_importance"]


@register_criterion("grasp", requires_data=True, gradient_based=True, source="builtin")
def grasp_importance(
    model: nn.Module,
    blocks: Sequence[ResidualBlock],
    data: Any,
    *,
    num_batches: int | None = 1,
    temperature: float = 200.0,
    bn_mode: str = "train",
    progress: bool = True,
) -> dict[str, float]:
    """GraSP (Wang et al., "Picking Winning Tickets Before Training by Preserving Gradient Flow", ICLR 2020).

    As in the original code: with ``L_T`` the cross-entropy of ``logits / T`` (T = 200),
    ``g = sum_batches dL_T/dtheta`` (no graph), then ``Hg = d/dtheta sum_batches (g . dL_T/dtheta)``.
    GraSP's score ``S = -theta * Hg`` removes the weights with the highest ``S``, so the
    importance of a block is ``sum(theta * Hg)`` (= ``-S``) and the lowest are removed.
    Needs labelled batches and a double backward: ``g`` needs every batch before any ``Hg``,
    so each batch but the last runs forward twice; the last batch's graph serves both passes
    (with one batch, the default, about three training steps in all). Attention runs on
    PyTorch's composite kernel, as the fused ones have no double backward.
    BN uses batch statistics unless ``bn_mode="eval"``; the model is left exactly as it was.
    """
    weights, flat = block_weights(model, blocks)
    g = [torch.zeros_like(w) for w in flat]
    hg = [torch.zeros_like(w) for w in flat]
    # the fused CPU/GPU attention kernels have no double backward: use the composite one
    with preserved_state(model, bn_mode, needs_grad=flat), sdpa_kernel(SDPBackend.MATH):
        seen = []  # the second pass must see the same batches, even from a shuffling loader
        for batch in labelled_batches(data, num_batches, "grasp", progress=progress):
            if seen:  # not the last batch: its gradient only
                accumulate(g, torch.autograd.grad(_loss(model, seen[-1], temperature), flat, allow_unused=True))
            seen.append(batch)
        # the last batch keeps its graph, so that its forward pass serves both passes
        last = torch.autograd.grad(_loss(model, seen[-1], temperature), flat, create_graph=True, allow_unused=True)
        accumulate(g, (grad.detach() if grad is not None else None for grad in last))
        _add_hessian_gradient(hg, g, last, flat)
        for batch in seen[:-1]:
            grads = torch.autograd.grad(_loss(model, batch, temperature), flat, create_graph=True, allow_unused=True)
            _add_hessian_gradient(hg, g, grads, flat)
    return block_sums(blocks, weights, (w.detach() * h for w, h in zip(flat, hg)))


def _loss(model: nn.Module, batch: tuple[int, torch.Tensor, torch.Tensor], temperature: float) -> torch.Tensor:
    i, x, y = batch
    return classification_loss(model, x, y, i, temperature)


def _add_hessian_gradient(
    hg: list[torch.Tensor], g: list[torch.Tensor], grads: Sequence[torch.Tensor | None], flat: list[torch.Tensor]
) -> None:
    """``hg += d(g . grads)/dtheta``: one batch's Hessian-gradient product (``grads`` has a graph)."""
    z = sum((gi * gf).sum() for gi, gf in zip(g, grads) if gf is not None)
    if isinstance(z, torch.Tensor) and z.requires_grad:  # else no scored weight influences the loss
        accumulate(hg, torch.autograd.grad(z, flat, allow_unused=True))
