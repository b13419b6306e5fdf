"""GraSP gradient-signal preservation, summed over each block's weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..analysis import ResidualBlock
from ..modes import preserved_state
from ._common import (
    Batch,
    BatchRunner,
    ForwardFn,
    LossFn,
    accumulate,
    batch_count,
    block_sums,
    block_weights,
    progress_bar,
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
    loss_fn: LossFn | None = None,
    forward_fn: ForwardFn | None = None,
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
    Batches are ``(x, y)`` pairs or dicts of keyword arguments with ``"labels"``, whose loss is the
    model's ``outputs.loss`` (no temperature: pass a ``loss_fn`` for one); ``forward_fn(model, batch)``
    and ``loss_fn(outputs, batch)`` replace the forward pass and the loss (see
    :class:`~residual_prune.criteria._common.BatchRunner`); ``temperature`` applies to the default
    loss of pairs only.

    Memory: one batch at a time is held as an autograd graph built with ``create_graph=True``
    (the activations plus what the double backward needs), so the peak grows with the batch
    size, not with ``num_batches``. For torchvision's ResNet-50 at 224x224 on CPU that is about
    0.17 GiB per image over the model's own footprint (+2.0 GiB at batch 8, +3.3 GiB at batch 16,
    about 12 GiB at batch 64). To bound it, pass smaller batches and more of them
    (``num_batches``). With ``progress=True`` two bars on stderr show the gradient pass and
    the Hessian pass, batch by batch.
    """
    weights, flat = block_weights(model, blocks)
    g = [torch.zeros_like(w) for w in flat]
    hg = [torch.zeros_like(w) for w in flat]
    # the fused CPU/GPU attention kernels have no double backward: use the composite one
    with preserved_state(model, bn_mode, needs_grad=flat), torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        # the second pass must see the same batches, even from a shuffling loader
        run = BatchRunner("grasp", loss_fn=loss_fn, forward_fn=forward_fn, temperature=temperature)
        seen: list[Batch] = []
        with progress_bar("grasp gradient pass", batch_count(data, num_batches), progress) as bar:
            for batch in run.batches(data, num_batches, progress=False):
                if seen:  # not the last batch: its gradient only
                    accumulate(g, torch.autograd.grad(run.loss(model, seen[-1]), flat, allow_unused=True))
                    bar.update()
                seen.append(batch)
            # the last batch keeps its graph, so that its forward pass serves both passes
            last = torch.autograd.grad(run.loss(model, seen[-1]), flat, create_graph=True, allow_unused=True)
            accumulate(g, (grad.detach() if grad is not None else None for grad in last))
            bar.update()
        with progress_bar("grasp Hessian pass", len(seen), progress) as bar:
            _add_hessian_gradient(hg, g, last, flat)
            del last
            bar.update()
            for batch in seen[:-1]:
                grads = torch.autograd.grad(run.loss(model, batch), flat, create_graph=True, allow_unused=True)
                _add_hessian_gradient(hg, g, grads, flat)
                bar.update()
    return block_sums(blocks, weights, (w.detach() * h for w, h in zip(flat, hg)))


def _add_hessian_gradient(
    hg: list[torch.Tensor], g: list[torch.Tensor], grads: Sequence[torch.Tensor | None], flat: Sequence[torch.Tensor]
) -> None:
    """``hg += d(g . grads)/dtheta``: one batch's Hessian-gradient product (``grads`` has a graph)."""
    z = sum((gi * gf).sum() for gi, gf in zip(g, grads) if gf is not None)
    if isinstance(z, torch.Tensor) and z.requires_grad:  # else no scored weight influences the loss
        accumulate(hg, torch.autograd.grad(z, flat, allow_unused=True))
