"""FLOP counting in fvcore's convention (one multiply-add counts as one FLOP).

Two counters give the same numbers: :func:`count_flops_by_module` runs fvcore on a whole
model (a ``torch.jit.trace``, i.e. one extra forward pass), and :class:`NodeFlopCounter`
counts inside the shape propagation that block discovery runs anyway, with
``torch.utils.flop_counter`` plus fvcore's formulas for the operations torch does not count
(norms, upsampling, grid sampling, adaptive average pooling, ``nn.MultiheadAttention``'s
fast path). Tests check that both agree module by module.
"""

from __future__ import annotations

import logging
import math
import operator
import warnings
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from .errors import FlopCountWarning
from .modes import eval_mode

__all__ = ["NodeFlopCounter", "count_flops_by_module"]


def _sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``: Q K^T and A V matmuls."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(inputs[i]) for i in range(3))
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * q[-1] + batch * q[-2] * k[-2] * v[-1]


def _attention_macs(batch: int, length: int, source: int, embed: int) -> int:
    """``nn.MultiheadAttention``: Q, K, V and output projections plus the two attention matmuls."""
    return batch * (2 * length + 2 * source) * embed * embed + 2 * batch * length * source * embed


def _native_mha_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::_native_multi_head_attention`` (nn.MultiheadAttention's fast path)."""
    from fvcore.nn.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    return _attention_macs(math.prod(q[:-2]), q[-2], k[-2], q[-1])


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


# torch.utils.flop_counter counts a multiply-add as 2 FLOPs; these formulas are in its unit (2 x fvcore's)
# and take shapes, as torch's own formulas do.
def _numel(shape: Any) -> int:
    return math.prod(shape)


def _norm_per_element(normalises: bool, affine: bool) -> int:
    """fvcore's FLOPs per element of a norm: 5 (4 without affine) when it computes statistics,
    2 (1) for an eval-mode batch norm, which only scales and shifts."""
    return (5 if affine else 4) if normalises else (2 if affine else 1)


def _batch_norm_flop(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    training = args[3] if len(args) > 3 else kwargs.get("training", False)
    return 2 * _norm_per_element(training, weight_shape is not None) * _numel(input_shape)


def _layer_norm_flop(input_shape, normalized_shape, weight_shape=None, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    return 2 * _norm_per_element(True, weight_shape is not None) * _numel(input_shape)


def _group_norm_flop(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    return 2 * _norm_per_element(True, weight_shape is not None) * _numel(input_shape)


def _per_output_element(flops: int) -> Any:
    def formula(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return 2 * flops * _numel(out_shape)

    return formula


def _native_mha_flop(query_shape, key_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    return 2 * _attention_macs(math.prod(query_shape[:-2]), query_shape[-2], key_shape[-2], query_shape[-1])


_aten = torch.ops.aten
FVCORE_CONVENTION = {
    _aten.native_batch_norm: _batch_norm_flop,
    _aten.native_layer_norm: _layer_norm_flop,
    _aten.native_group_norm: _group_norm_flop,
    _aten.upsample_nearest2d: _per_output_element(1),
    _aten.upsample_bilinear2d: _per_output_element(4),
    _aten.grid_sampler_2d: _per_output_element(4),
    _aten._native_multi_head_attention: _native_mha_flop,
}
_ADAPTIVE_AVG_POOL_2D = {torch.nn.functional.adaptive_avg_pool2d, torch._C._nn.adaptive_avg_pool2d}


class _AdaptiveAvgPoolFlops(TorchFunctionMode):
    """fvcore counts ``adaptive_avg_pool2d`` as one FLOP per input element. It dispatches to
    ``aten.mean`` for a 1x1 output, which fvcore does not count elsewhere, so it is caught here,
    at the function level (also inside opaque leaf modules)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        if func in _ADAPTIVE_AVG_POOL_2D and args and isinstance(args[0], torch.Tensor):
            self.flops += args[0].numel()
        return func(*args, **(kwargs or {}))


# Nodes whose FLOPs follow from their shapes alone, without running them under the counting modes
# (the modes cost more than these layers on small inputs). Exact classes only: a subclass may
# override forward. Same numbers as fvcore (tests compare).
def _conv_flops(m: nn.Module, inp: torch.Size, out: torch.Size) -> int:
    return out[0] * m.weight.numel() * math.prod(out[2:])


def _linear_flops(m: nn.Module, inp: torch.Size, out: torch.Size) -> int:
    return math.prod(inp) * m.out_features


def _batch_norm_flops(m: nn.Module, inp: torch.Size, out: torch.Size) -> int:
    return math.prod(inp) * _norm_per_element(m.training or m.running_mean is None, m.weight is not None)


def _norm_flops(m: nn.Module, inp: torch.Size, out: torch.Size) -> int:
    return math.prod(inp) * _norm_per_element(True, m.weight is not None)


_MODULE_FLOPS = {
    **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d), _conv_flops),
    nn.Linear: _linear_flops,
    **dict.fromkeys((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), _batch_norm_flops),
    **dict.fromkeys((nn.LayerNorm, nn.GroupNorm), _norm_flops),
    nn.AdaptiveAvgPool2d: lambda m, inp, out: math.prod(inp),
    **dict.fromkeys(
        (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Identity,
         nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
         nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.Flatten, nn.Softmax),
        lambda m, inp, out: 0,
    ),
}
_ZERO_FLOP_FUNCTIONS = {
    *(getattr(operator, name) for name in dir(operator) if not name.startswith("_") and "matmul" not in name),
    getattr, torch.flatten, torch.reshape, torch.cat, torch.stack, torch.add, torch.mul, torch.relu, torch.sigmoid,
    torch.tanh, torch.nn.functional.relu, torch.nn.functional.gelu, torch.nn.functional.silu,
    torch.nn.functional.dropout,
}
_ZERO_FLOP_METHODS = {
    "size", "dim", "view", "reshape", "permute", "transpose", "flatten", "contiguous", "add", "add_", "mul", "mul_",
    "expand", "unsqueeze", "squeeze", "chunk", "split", "unbind", "relu", "relu_", "sigmoid", "clone", "type_as",
    "to", "float",
}


class NodeFlopCounter:
    """Counts the FLOPs of each fx node while an interpreter runs it (fvcore's convention).

    Call :meth:`count` around each node; FLOPs go to every module whose forward made the node
    (``nn_module_stack``) and to ``""``, the whole model. Plain layers (Conv, Linear, norms, ...)
    are counted from their shapes; every other node runs under ``torch.utils.flop_counter`` and
    the adaptive-pooling mode. An opaque leaf module is counted as a whole, not per child.
    """

    def __init__(self) -> None:
        self._dispatch = FlopCounterMode(display=False, custom_mapping=FVCORE_CONVENTION)
        self._pooling = _AdaptiveAvgPoolFlops()
        self.by_module: dict[str, int] = {"": 0}

    def _measured(self, run: Any) -> tuple[Any, int]:
        self._pooling.flops = 0
        with self._dispatch, self._pooling:  # FlopCounterMode starts from zero on entry
            result = run()
        return result, self._dispatch.get_total_flops() // 2 + self._pooling.flops

    def count(self, node: fx.Node, module: nn.Module | None, run: Any) -> Any:
        """Run ``run()`` (the node's computation; ``module`` for a call_module) and add its FLOPs."""
        formula = _MODULE_FLOPS.get(type(module)) if module is not None else None
        source = node.args[0].meta.get("tensor_meta") if node.args and isinstance(node.args[0], fx.Node) else None
        if formula is not None and hasattr(source, "shape"):
            result = run()
            flops = formula(module, source.shape, result.shape) if isinstance(result, torch.Tensor) else 0
        elif node.op in ("placeholder", "get_attr", "output") or (
            node.op == "call_function" and node.target in _ZERO_FLOP_FUNCTIONS
        ) or (node.op == "call_method" and node.target in _ZERO_FLOP_METHODS):
            return run()
        else:
            result, flops = self._measured(run)
        if flops:
            self.by_module[""] += flops
            for path, _ in (node.meta.get("nn_module_stack") or {}).values():
                self.by_module[path] = self.by_module.get(path, 0) + flops
        return result
