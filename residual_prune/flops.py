"""FLOP counting with fvcore (one multiply-add counts as one FLOP, fvcore's convention)."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import torch
from torch import nn

from .errors import FlopCountWarning
from .modes import eval_mode

__all__ = ["count_flops_by_module"]


def _sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``: Q K^T and A V matmuls."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(inputs[i]) for i in range(3))
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * q[-1] + batch * q[-2] * k[-2] * v[-1]


def _native_mha_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::_native_multi_head_attention`` (nn.MultiheadAttention's fast path):
    Q, K, V and output projections plus the two attention matmuls."""
    from fvcore.nn.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    batch, length, embed = math.prod(q[:-2]), q[-2], q[-1]
    source = k[-2]
    projections = batch * (2 * length + 2 * source) * embed * embed
    return projections + 2 * batch * length * source * embed


def count_flops_by_module(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, int] | None:
    """FLOPs of every submodule (qualified name -> FLOPs; ``""`` is the whole model).

    Returns ``None`` and warns with :class:`FlopCountWarning` when fvcore cannot
    trace the model; block discovery then reports ``flops=None``.
    """
    from fvcore.nn import FlopCountAnalysis

    fvcore_logger = logging.getLogger("fvcore")
    level = fvcore_logger.level
    fvcore_logger.setLevel(logging.ERROR)
    try:
        with eval_mode(model), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(model, inputs)
            analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop_jit)
            analysis.set_op_handle("aten::_native_multi_head_attention", _native_mha_flop_jit)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            return {name: int(v) for name, v in analysis.by_module().items()}
    except Exception as exc:  # fvcore uses torch.jit.trace, which some models defeat
        warnings.warn(
            f"fvcore could not count the FLOPs of {type(model).__name__} ({type(exc).__name__}: {exc}); "
            "blocks are reported with flops=None. Pruning is not affected.",
            FlopCountWarning,
            stacklevel=3,
        )
        return None
    finally:
        fvcore_logger.setLevel(level)
