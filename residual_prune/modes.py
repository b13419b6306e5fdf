"""Context managers that change a model's modes and state and put them back exactly."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from .errors import InvalidArgumentError

__all__ = ["eval_mode", "preserved_state"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode; restore each module's own ``training`` flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def preserved_state(
    model: nn.Module, bn_mode: str = "train", needs_grad: Iterable[torch.nn.Parameter] = ()
) -> Iterator[nn.Module]:
    """Score a model without leaving a trace on it.

    Inside the context every module is in eval mode except the batch-norm layers, which
    use batch statistics when ``bn_mode == "train"`` (the convention of the GraSP
    reference code), and the ``needs_grad`` parameters require gradients. Afterwards the
    modes, the buffers (BN running statistics) and the parameters' ``requires_grad`` flags
    are exactly as before. The criteria never write ``.grad`` (they use
    ``torch.autograd.grad``), so ``.grad`` stays as it was, ``None`` included.
    """
    if bn_mode not in ("train", "eval"):
        raise InvalidArgumentError(f"bn_mode must be 'train' or 'eval', got {bn_mode!r}")
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    requires_grad = [(p, p.requires_grad) for p in model.parameters()]
    with eval_mode(model):
        if bn_mode == "train":
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
        for p in needs_grad:
            p.requires_grad_(True)
        try:
            yield model
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)
                for p, flag in requires_grad:
                    p.requires_grad_(flag)
