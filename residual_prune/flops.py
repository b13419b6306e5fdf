"""FLOP counting in fvcore's convention (one multiply-add counts as one FLOP).

Two counters give the same numbers: :func:`count_flops_by_module` runs fvcore on a whole
model (a ``torch.jit.trace``, i.e. one extra forward pass), and :class:`NodeFlopCounter`
counts inside the shape propagation that block discovery runs anyway: matmuls and convolutions
with ``torch.utils.flop_counter``, and what fvcore counts beyond them (norms, upsampling, grid
sampling, adaptive average pooling, attention) with fvcore's formulas on the torch functions
called, so that the count does not depend on how a torch release dispatches or decomposes them.
Tests check that both agree module by module.
"""

from __future__ import annotations

import logging
import math
import operator
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import TensorMetadata
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from .errors import FlopCountWarning
from .modes import eval_mode

__all__ = ["NodeFlopCounter", "count_flops_by_module"]


def _sdpa_macs(query: Any, key: Any, value: Any) -> int:
    """Scaled dot-product attention (shapes): the Q K^T and A V matmuls."""
    batch = math.prod(query[:-2])
    return batch * query[-2] * key[-2] * (query[-1] + value[-1])


def _attention_macs(batch: int, length: int, source: int, embed: int, key_dim: int, value_dim: int) -> int:
    """``nn.MultiheadAttention``: Q, K, V and output projections plus the two attention matmuls."""
    projections = batch * (2 * length * embed + source * (key_dim + value_dim)) * embed
    return projections + 2 * batch * length * source * embed


def _native_mha_macs(query: Any, key: Any) -> int:
    """``aten::_native_multi_head_attention`` (batch-first shapes; its keys and values have the query's width)."""
    embed = query[-1]
    return _attention_macs(math.prod(query[:-2]), query[-2], key[-2], embed, embed, embed)


def _sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``."""
    from fvcore.nn.jit_handles import get_shape

    return _sdpa_macs(*(get_shape(inputs[i]) for i in range(3)))


def _native_mha_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::_native_multi_head_attention`` (nn.MultiheadAttention's fast path)."""
    from fvcore.nn.jit_handles import get_shape

    return _native_mha_macs(get_shape(inputs[0]), get_shape(inputs[1]))


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


def _norm_per_element(normalises: bool, affine: bool) -> int:
    """fvcore's FLOPs per element of a norm: 5 (4 without affine) when it computes statistics,
    2 (1) for an eval-mode batch norm, which only scales and shifts."""
    return (5 if affine else 4) if normalises else (2 if affine else 1)


# fvcore's formulas for the operations it counts besides matmuls and convolutions, applied to torch-function
# calls, the level that torch.jit.trace (hence fvcore) records. The aten ops below that level change between
# torch releases, and so does whether FlopCounterMode decomposes them before looking up a formula (torch 2.6 to
# 2.14 at least turn batch norm and nearest upsampling into uncounted elementwise ops, and have no formula for
# the CPU attention kernel; adaptive pooling to 1x1 runs as an uncounted mean); the functions do not. Each
# formula takes the call's arguments by name and its result.
_Call = dict[str, Any]


def _norm_call(call: _Call, out: Any) -> int:
    return call["input"].numel() * _norm_per_element(True, call.get("weight") is not None)


def _batch_norm_call(call: _Call, out: Any) -> int:
    return call["input"].numel() * _norm_per_element(bool(call.get("training")), call.get("weight") is not None)


_UPSAMPLE_2D_PER_OUTPUT = {"nearest": 1, "bilinear": 4}  # aten::upsample_nearest2d, aten::upsample_bilinear2d


def _interpolate_call(call: _Call, out: Any) -> int:
    """``F.interpolate`` by the op it runs: 2-d nearest/bilinear upsampling per output element, "area" as
    ``adaptive_avg_pool2d`` per input element; fvcore counts no other mode, size or antialiased variant."""
    x = call["input"]
    if x.dim() != 4 or call.get("antialias"):
        return 0
    mode = call.get("mode", "nearest")
    return x.numel() if mode == "area" else _UPSAMPLE_2D_PER_OUTPUT.get(mode, 0) * out.numel()


def _per_output_element(macs: int) -> Any:
    return lambda call, out: macs * out.numel()


def _per_input_element(call: _Call, out: Any) -> int:
    return call["input"].numel()


def _sdpa_call(call: _Call, out: Any) -> int:
    return _sdpa_macs(call["query"].shape, call["key"].shape, call["value"].shape)


def _mha_forward_call(call: _Call, out: Any) -> int:
    """``F.multi_head_attention_forward`` (sequence-first, batch optional), as fvcore counts its traced
    projections and attention."""
    q, k, v = call["query"].shape, call["key"].shape, call["value"].shape
    return _attention_macs(q[1] if len(q) == 3 else 1, q[0], k[0], q[-1], k[-1], v[-1])


def _native_mha_call(call: _Call, out: Any) -> int:
    return _native_mha_macs(call["query"].shape, call["key"].shape)


# function -> (names of its leading parameters, formula). F.* and the torch.* op it wraps are both listed:
# user code may call either, and the mode sees only the outermost call.
_FUNCTION_FLOPS: dict[Any, tuple[tuple[str, ...], Any]] = {
    F.batch_norm: (("input", "running_mean", "running_var", "weight", "bias", "training"), _batch_norm_call),
    torch.batch_norm: (("input", "weight", "bias", "running_mean", "running_var", "training"), _batch_norm_call),
    F.instance_norm: (("input", "running_mean", "running_var", "weight"), _norm_call),
    torch.instance_norm: (("input", "weight"), _norm_call),
    **dict.fromkeys((F.layer_norm, torch.layer_norm), (("input", "normalized_shape", "weight"), _norm_call)),
    **dict.fromkeys((F.group_norm, torch.group_norm), (("input", "num_groups", "weight"), _norm_call)),
    F.interpolate: (
        ("input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias"),
        _interpolate_call,
    ),
    torch._C._nn.upsample_nearest2d: ((), _per_output_element(1)),
    torch._C._nn.upsample_bilinear2d: ((), _per_output_element(4)),
    **dict.fromkeys((F.grid_sample, torch.grid_sampler), ((), _per_output_element(4))),
    **dict.fromkeys((F.adaptive_avg_pool2d, torch._C._nn.adaptive_avg_pool2d), (("input",), _per_input_element)),
    F.scaled_dot_product_attention: (("query", "key", "value"), _sdpa_call),
    F.multi_head_attention_forward: (("query", "key", "value"), _mha_forward_call),
    torch._native_multi_head_attention: (("query", "key", "value"), _native_mha_call),
}


class _FunctionFlops(TorchFunctionMode):
    """Counts the calls of ``_FUNCTION_FLOPS`` by fvcore's formulas (also inside opaque leaf modules).

    What ``dispatch`` (the aten-level counter) counted inside such a call is set aside in ``replaced``
    (in its unit), so the formula alone counts the call, e.g. attention on any device or release.
    """

    def __init__(self, dispatch: FlopCounterMode) -> None:
        super().__init__()
        self._dispatch = dispatch
        self.flops = 0
        self.replaced = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        kwargs = kwargs or {}
        counted = _FUNCTION_FLOPS.get(func)
        if counted is None:
            return func(*args, **kwargs)
        before = self._dispatch.get_total_flops()
        result = func(*args, **kwargs)
        self.replaced += self._dispatch.get_total_flops() - before
        parameters, formula = counted
        self.flops += formula({**dict(zip(parameters, args)), **kwargs}, result)
        return result


# Nodes whose FLOPs follow from their shapes alone, without running them under the counting modes
# (the modes cost more than these layers on small inputs). Exact classes only: a subclass may
# override forward. Same numbers as fvcore (tests compare).
def _conv_flops(m: nn.Conv1d | nn.Conv2d | nn.Conv3d, inp: torch.Size, out: torch.Size) -> int:
    return out[0] * m.weight.numel() * math.prod(out[2:])


def _linear_flops(m: nn.Linear, inp: torch.Size, out: torch.Size) -> int:
    return math.prod(inp) * m.out_features


def _batch_norm_flops(m: nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d, inp: torch.Size, out: torch.Size) -> int:
    return math.prod(inp) * _norm_per_element(m.training or m.running_mean is None, m.weight is not None)


def _norm_flops(m: nn.LayerNorm | nn.GroupNorm, inp: torch.Size, out: torch.Size) -> int:
    return math.prod(inp) * _norm_per_element(True, m.weight is not None)


# class -> formula(module of exactly that class, input shape, output shape)
_MODULE_FLOPS: dict[type[nn.Module], Callable[..., int]] = {
    **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d), _conv_flops),
    nn.Linear: _linear_flops,
    **dict.fromkeys((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), _batch_norm_flops),
    **dict.fromkeys((nn.LayerNorm, nn.GroupNorm), _norm_flops),
    nn.AdaptiveAvgPool2d: lambda m, inp, out: math.prod(inp),
    **dict.fromkeys(
        (
            nn.ReLU,
            nn.ReLU6,
            nn.GELU,
            nn.SiLU,
            nn.Hardswish,
            nn.Hardsigmoid,
            nn.Sigmoid,
            nn.Tanh,
            nn.Identity,
            nn.Dropout,
            nn.Dropout1d,
            nn.Dropout2d,
            nn.Dropout3d,
            nn.MaxPool1d,
            nn.MaxPool2d,
            nn.MaxPool3d,
            nn.AvgPool1d,
            nn.AvgPool2d,
            nn.AvgPool3d,
            nn.Flatten,
            nn.Softmax,
        ),
        lambda m, inp, out: 0,
    ),
}
_ZERO_FLOP_FUNCTIONS = {
    *(getattr(operator, name) for name in dir(operator) if not name.startswith("_") and "matmul" not in name),
    getattr,
    torch.flatten,
    torch.reshape,
    torch.cat,
    torch.stack,
    torch.add,
    torch.mul,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    torch.nn.functional.relu,
    torch.nn.functional.gelu,
    torch.nn.functional.silu,
    torch.nn.functional.dropout,
}
_ZERO_FLOP_METHODS = {
    "size",
    "dim",
    "view",
    "reshape",
    "permute",
    "transpose",
    "flatten",
    "contiguous",
    "add",
    "add_",
    "mul",
    "mul_",
    "expand",
    "unsqueeze",
    "squeeze",
    "chunk",
    "split",
    "unbind",
    "relu",
    "relu_",
    "sigmoid",
    "clone",
    "type_as",
    "to",
    "float",
}


class NodeFlopCounter:
    """Counts the FLOPs of each fx node while an interpreter runs it (fvcore's convention).

    Call :meth:`count` around each node; FLOPs go to every module whose forward made the node
    (``nn_module_stack``) and to ``""``, the whole model. Plain layers (Conv, Linear, norms, ...)
    are counted from their shapes; every other node runs under ``torch.utils.flop_counter`` and
    the function-level formulas. An opaque leaf module is counted as a whole, not per child.
    """

    def __init__(self) -> None:
        self._dispatch = FlopCounterMode(display=False)
        self._functions = _FunctionFlops(self._dispatch)
        self.by_module: dict[str, int] = {"": 0}

    def _measured(self, run: Any) -> tuple[Any, int]:
        self._functions.flops = self._functions.replaced = 0
        with self._dispatch, self._functions:  # FlopCounterMode starts from zero on entry
            result = run()
        dispatched = self._dispatch.get_total_flops() - self._functions.replaced  # 2 per multiply-add
        return result, dispatched // 2 + self._functions.flops

    def count(self, node: fx.Node, module: nn.Module | None, run: Any) -> Any:
        """Run ``run()`` (the node's computation; ``module`` for a call_module) and add its FLOPs."""
        formula = _MODULE_FLOPS.get(type(module)) if module is not None else None
        source = node.args[0].meta.get("tensor_meta") if node.args and isinstance(node.args[0], fx.Node) else None
        if formula is not None and isinstance(source, TensorMetadata):
            result = run()
            flops = formula(module, source.shape, result.shape) if isinstance(result, torch.Tensor) else 0
        elif (
            node.op in ("placeholder", "get_attr", "output")
            or (node.op == "call_function" and node.target in _ZERO_FLOP_FUNCTIONS)
            or (node.op == "call_method" and node.target in _ZERO_FLOP_METHODS)
        ):
            return run()
        else:
            result, flops = self._measured(run)
        if flops:
            self.by_module[""] += flops
            for path, _ in (node.meta.get("nn_module_stack") or {}).values():
                self.by_module[path] = self.by_module.get(path, 0) + flops
        return result
