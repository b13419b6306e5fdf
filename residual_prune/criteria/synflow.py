"""SynFlow synaptic saliency, summed over each block's weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ..analysis import ResidualBlock
from ..errors import MissingDataError
from ..inputs import ModelInputs, batch_inputs
from ..modes import preserved_state
from ._common import block_sums, block_weights, logits_of
from ._registry import register_criterion

__all__ = ["synflow_importance"]


def _ones(inputs: ModelInputs, dtype: torch.dtype) -> ModelInputs:
    """One sample of ``inputs`` with every floating tensor replaced by ones of ``dtype``."""

    def one(t: torch.Tensor) -> torch.Tensor:
        sample = t[:1] if t.dim() else t
        return torch.ones_like(sample, dtype=dtype) if t.is_floating_point() else sample

    return inputs.map_tensors(one)


@register_criterion("synflow", gradient_based=True, source="builtin")
def synflow_importance(
    model: nn.Module,
    blocks: Sequence[ResidualBlock],
    data: Any = None,
    *,
    example_inputs: Any = None,
    bn_mode: str = "eval",
) -> dict[str, float]:
    """SynFlow (Tanaka et al., "Pruning neural networks without any data by iteratively conserving
    synaptic flow", NeurIPS 2020), one-shot.

    With every parameter and buffer replaced by its absolute value and an all-ones input
    shaped like one example input, ``R = sum(model(1))`` and the importance of a block is
    ``sum |theta * dR/dtheta|`` over its Conv/Linear weights. Data-free: needs only
    ``example_inputs`` (for the input shape). Runs in float64 as the magnitudes grow
    geometrically with depth. Works on copies of the tensors through
    ``torch.func.functional_call``, so the weights' signs are never touched. BN in eval
    mode by default, as in the reference code (``bn_mode="train"`` to use batch statistics).
    Inputs of any form ``find_blocks`` takes: floating tensors become ones, integer tensors (token
    ids) keep their first sample, other arguments stay; ``R`` sums the logits of structured outputs.
    """
    if example_inputs is None:
        if data is None:
            raise MissingDataError("criterion 'synflow' needs example_inputs (for the input shape) or data")
        example_inputs = batch_inputs(next(iter(data)))
    inputs = ModelInputs.of(example_inputs)
    weights, flat = block_weights(model, blocks)
    scored_ids = {id(w) for w in flat}
    with preserved_state(model, bn_mode), torch.enable_grad():
        for dtype in (torch.float64, torch.float32):
            try:
                params = {
                    name: p.detach().to(dtype).abs().requires_grad_(id(p) in scored_ids)
                    for name, p in model.named_parameters()
                }
                by_id = {id(p): params[name] for name, p in model.named_parameters()}
                buffers = {
                    name: b.detach().to(dtype).abs() if b.is_floating_point() else b.clone()
                    for name, b in model.named_buffers()
                }
                ones = _ones(inputs, dtype)
                out = logits_of(functional_call(model, {**params, **buffers}, ones.args, ones.kwargs))
                abs_weights = [by_id[id(w)] for w in flat]
                grads = torch.autograd.grad(out.sum(), abs_weights, allow_unused=True)
                break
            except RuntimeError:
                if dtype is torch.float32:
                    raise
    return block_sums(
        blocks,
        weights,
        ((w.detach() * g).abs() if g is not None else torch.zeros_like(w) for w, g in zip(abs_weights, grads)),
    )
