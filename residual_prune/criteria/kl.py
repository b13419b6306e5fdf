"""KL divergence of the network's predictions with and without each block (Luo and Wu, CVPR 2020)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..analysis import ResidualBlock
from ..modes import preserved_state
from ._common import Batch, BatchRunner, ForwardFn, logits_of
from ._registry import register_criterion
from .activation import _tensor, block_module

__all__ = ["bypassed", "kl_importance"]


@contextlib.contextmanager
def bypassed(module: nn.Module) -> Iterator[nn.Module]:
    """Make ``module`` return its first input unchanged, as if it were removed (an identity-shortcut
    block replaced by the identity). The input is copied before the block runs, so a block that
    updates its input in place cannot change what is passed on."""
    saved: list[torch.Tensor] = []
    pre = module.register_forward_pre_hook(lambda m, args: saved.append(_tensor(args, "block input").clone()))
    post = module.register_forward_hook(lambda m, args, output: saved.pop())
    try:
        yield module
    finally:
        pre.remove()
        post.remove()


def _log_probs(model: nn.Module, run: BatchRunner, batch: Batch) -> torch.Tensor:
    return F.log_softmax(logits_of(run.outputs(model, batch)).double(), dim=-1)


@register_criterion("kl", requires_data=True, gradient_based=False, source="builtin")
def kl_importance(
    model: nn.Module,
    blocks: Sequence[ResidualBlock],
    data: Any,
    *,
    num_batches: int | None = 4,
    progress: bool = True,
    forward_fn: ForwardFn | None = None,
) -> dict[str, float]:
    """KL (Luo and Wu, "Neural Network Pruning with Residual-Connections and Limited-Data", CVPR 2020).

    Importance of a block = ``KL(p_full || p_without)``: the divergence between the softmax
    outputs of the network and of the network with the block removed (replaced by the
    identity, so only its shortcut remains), averaged over the images of ``num_batches``
    batches (``None``: all of ``data``). Luo and Wu score channels inside residual blocks
    this way; here whole blocks are removed. Needs a trained model and batches ``(x, y)`` or
    dicts of keyword arguments (labels unused; the logits are the output, its ``logits`` or its
    first tensor; ``forward_fn(model, batch)`` runs other forms); no gradients; one extra forward
    pass per block and batch. Runs in eval mode; the model is left exactly as it was. Higher = keep.
    """
    modules = {b.name: block_module(model, b, "kl") for b in blocks}
    totals = dict.fromkeys(modules, 0.0)
    images = 0
    with preserved_state(model, "eval"), torch.no_grad():
        run = BatchRunner("kl", forward_fn=forward_fn)
        for batch in run.batches(data, num_batches, progress=progress):
            log_p = _log_probs(model, run, batch)
            images += log_p.shape[0]
            for name, module in modules.items():
                with bypassed(module):
                    log_q = _log_probs(model, run, batch)
                totals[name] += float(F.kl_div(log_q, log_p, reduction="sum", log_target=True))
    return {name: total / images for name, total in totals.items()}
