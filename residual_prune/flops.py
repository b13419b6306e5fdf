"""FLOP counting in fvcore's convention (one multiply-add counts as one FLOP).

The library counts in the capture it runs anyway (:func:`residual_prune.capture.count_flops`
for a whole model): :class:`NodeFlopCounter` counts inside the shape propagation of the torch.fx
front-end, matmuls and convolutions with ``torch.utils.flop_counter``, and what fvcore counts
beyond them (norms, upsampling, grid sampling, adaptive average pooling, attention) with
fvcore's formulas on the torch functions called, so that the count does not depend on how a
torch release dispatches or decomposes them; :func:`count_graph_flops` counts a
``torch.export`` graph from the shapes recorded on its nodes (no forward pass).

:func:`count_flops_by_module` runs fvcore itself on a whole model (a ``torch.jit.trace``, one
extra forward pass). It is the oracle that tests and benchmarks compare both counters with,
module by module; the library does not call it, and fvcore is imported only when it runs.
"""

from __future__ import annotations

import logging
import math
import operator
import string
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn
from torch.fx.passes.shape_prop import TensorMetadata
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, flop_registry

from .errors import FlopCountWarning
from .modes import eval_mode

__all__ = ["NodeFlopCounter", "count_flops_by_module", "count_graph_flops"]


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
    """FLOPs of every submodule by fvcore (qualified name -> FLOPs; ``""`` is the whole model): the
    reference tests and benchmarks check the library's counters against.

    Returns ``None`` and warns with :class:`FlopCountWarning` when fvcore cannot trace the model.
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


# torch.export graphs (``torch.export.export``, or its ``run_decompositions()``): FLOPs from the shapes in
# ``node.meta["val"]``, by fvcore's formulas above applied to the aten op each node calls. The ops are listed
# at both levels a graph may hold them: the composite ops of export's default IR (conv2d, linear, batch_norm,
# layer_norm, scaled_dot_product_attention, ...) and what run_decompositions lowers them to (convolution,
# addmm, _native_batch_norm_legit_no_training, native_layer_norm, bmm, ...). Matrix products without a formula
# here go to ``torch.utils.flop_counter`` (mm, addmm, bmm, baddbmm, ...).
_Formula = Callable[[_Call, Any], int]
aten = torch.ops.aten


def _conv_call(transposed: bool) -> _Formula:
    """Convolutions (fvcore's count, torch's formula halved); ``convolution`` itself says if it is transposed."""

    def formula(call: _Call, out: Any) -> int:
        x, w, y = list(call["input"].shape), list(call["weight"].shape), list(out.shape)
        if len(x) == len(w) - 1:  # an unbatched input
            x, y = [1, *x], [1, *y]
        return conv_flop_count(x, w, y, transposed=bool(call.get("transposed", transposed))) // 2

    return formula


def _contraction_call(call: _Call, out: Any) -> int:
    """``linear`` and ``matmul``: each output element sums over the first operand's last dimension. fvcore
    counts the same, except for a matmul whose first operand is broadcast over the other's batch dimensions:
    it counts ``prod(input.shape) * other.shape[-1]``, that operand once."""
    return out.numel() * call["input"].shape[-1]


def _einsum_subscripts(equation: str, shapes: Sequence[Sequence[int]]) -> tuple[list[str], str, dict[str, int]]:
    """An einsum's input and output subscripts with ``...`` spelled out in unused letters, and each letter's size."""
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    explicit_dims = [len(term.replace("...", "")) for term in terms]
    batch = max((len(shape) - n for term, shape, n in zip(terms, shapes, explicit_dims) if "..." in term), default=0)
    broadcast = "".join(c for c in string.ascii_letters if c not in equation)[:batch]
    inputs = [
        term.replace("...", broadcast[batch - len(shape) + n :]) for term, shape, n in zip(terms, shapes, explicit_dims)
    ]
    sizes: dict[str, int] = {}
    for term, shape in zip(inputs, shapes):
        for letter, size in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)  # size-1 dimensions broadcast
    joined = "".join(inputs)
    output = rhs.replace("...", broadcast) if arrow else broadcast + "".join(c for c in sizes if joined.count(c) == 1)
    return inputs, output, sizes


def _einsum_call(call: _Call, out: Any) -> int:
    """``einsum``: one multiply-add per combination of index values in each pairwise contraction along numpy's
    optimal path, the path fvcore takes. fvcore reports half numpy's FLOP estimate printed to four significant
    digits: the same for contractions that sum over an index (up to that rounding), half for those that do not."""
    if "equation" not in call:  # the sublist overload; torch.einsum passes an equation
        return 0
    inputs, output, sizes = _einsum_subscripts(call["equation"], [t.shape for t in call["tensors"]])
    placeholders = [np.broadcast_to(np.zeros(()), [sizes[c] for c in term]) for term in inputs]
    path = np.einsum_path(",".join(inputs) + "->" + output, *placeholders, optimize="optimal")[0][1:]
    macs = 0
    for step in path:  # numpy's convention: the operands at these positions go, their product goes last
        letters = set("".join(inputs.pop(i) for i in sorted(step, reverse=True)))
        macs += math.prod(sizes[c] for c in letters)
        inputs.append("".join(c for c in letters if c in output or any(c in term for term in inputs)))
    return macs


def _packets(*names: str) -> list[Any]:
    """The aten ops of these names this torch release has."""
    return [getattr(aten, name) for name in names if hasattr(aten, name)]


# aten op (all overloads) -> formula(call by the schema's argument names, "self" read as "input"; result)
_ATEN_FLOPS: dict[Any, _Formula] = {
    **dict.fromkeys(_packets("conv1d", "conv2d", "conv3d", "convolution", "_convolution"), _conv_call(False)),
    **dict.fromkeys(_packets("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"), _conv_call(True)),
    **dict.fromkeys(_packets("linear", "matmul"), _contraction_call),
    aten.einsum: _einsum_call,
    **dict.fromkeys(
        _packets(
            "batch_norm",
            "native_batch_norm",
            "_native_batch_norm_legit",
            "_native_batch_norm_legit_no_training",
            "_native_batch_norm_legit_functional",
            "cudnn_batch_norm",
            "miopen_batch_norm",
        ),
        _batch_norm_call,
    ),
    **dict.fromkeys(
        _packets("layer_norm", "native_layer_norm", "group_norm", "native_group_norm", "instance_norm"), _norm_call
    ),
    aten.upsample_nearest2d: _per_output_element(1),
    aten.upsample_bilinear2d: _per_output_element(4),
    **dict.fromkeys(_packets("grid_sampler", "grid_sampler_2d", "grid_sampler_3d"), _per_output_element(4)),
    **dict.fromkeys(_packets("adaptive_avg_pool2d", "_adaptive_avg_pool2d"), _per_input_element),
    **dict.fromkeys(
        _packets(
            "scaled_dot_product_attention",
            "_scaled_dot_product_flash_attention_for_cpu",
            "_scaled_dot_product_flash_attention",
            "_scaled_dot_product_efficient_attention",
            "_scaled_dot_product_cudnn_attention",
            "_scaled_dot_product_fused_attention_overrideable",
        ),
        _sdpa_call,
    ),
    aten._native_multi_head_attention: _native_mha_call,
}
# higher-order ops that run their one subgraph once, as it is (export makes them of no_grad and autocast regions)
_RUN_ONCE = frozenset({"wrap_with_set_grad_enabled", "wrap_with_autocast"})


def _recorded_values(node: fx.Node) -> tuple[tuple[Any, ...], dict[str, Any], Any] | None:
    """The node's arguments and result as recorded in ``meta["val"]``; ``None`` when one is not recorded or a
    tensor among them has a symbolic shape."""
    unknown: list[fx.Node] = []

    def value(arg: fx.Node) -> Any:
        if "val" not in arg.meta:
            unknown.append(arg)
        return arg.meta.get("val")

    args, kwargs = fx.node.map_arg((node.args, node.kwargs), value)
    out = node.meta.get("val")
    tensors = [v for v in pytree.tree_leaves((args, kwargs, out)) if isinstance(v, torch.Tensor)]
    if unknown or out is None or not all(isinstance(d, int) for t in tensors for d in t.shape):
        return None
    return args, dict(kwargs), out


def _made_by(node: fx.Node, module_class: str) -> bool:
    """Whether the innermost module that made ``node`` is of a class named ``module_class``."""
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    return bool(stack) and str(stack[-1][1]).rpartition(".")[2].rstrip("'>") == module_class


def _aten_node_flops(node: fx.Node) -> int:
    """FLOPs of one aten call from its recorded shapes (0 for an op without a formula)."""
    op = node.target
    if not isinstance(op, torch._ops.OpOverload):
        return 0
    values = _recorded_values(node)
    if values is None:
        return 0
    args, kwargs, out = values
    if op.overloadpacket is aten.mean and _made_by(node, "AdaptiveAvgPool2d"):  # the pooling to 1x1, decomposed
        return _per_input_element({"input": args[0]}, out)
    formula = _ATEN_FLOPS.get(op.overloadpacket)
    if formula is not None:
        names = ["input" if a.name == "self" else a.name for a in op._schema.arguments]
        return int(formula({**dict(zip(names, args)), **kwargs}, out))
    registered = flop_registry.get(op.overloadpacket)
    return int(registered(*args, out_val=out, **kwargs)) // 2 if registered is not None else 0  # 2 per MAC


def _subgraphs_run_once(node: fx.Node, owner: nn.Module | None) -> list[fx.Graph]:
    """The subgraph a ``wrap_with_set_grad_enabled``/``wrap_with_autocast`` node runs (none for other nodes)."""
    op = node.target
    if owner is None or not (isinstance(op, torch._ops.HigherOrderOperator) and op.name() in _RUN_ONCE):
        return []
    modules = [owner.get_submodule(str(a.target)) for a in node.args if isinstance(a, fx.Node) and a.op == "get_attr"]
    return [module.graph for module in modules if isinstance(module, fx.GraphModule)]


def _graph_node_flops(graph: fx.Graph) -> Iterator[tuple[fx.Node, int]]:
    """Each call in the graph (and in the subgraphs it runs once) with its FLOPs."""
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        subgraphs = _subgraphs_run_once(node, graph.owning_module)
        for subgraph in subgraphs:
            yield from _graph_node_flops(subgraph)
        if not subgraphs:
            yield node, _aten_node_flops(node)


def count_graph_flops(graph: fx.Graph) -> dict[str, int]:
    """FLOPs of every module of an exported graph (``torch.export.export(..., strict=False).graph``, also after
    ``run_decompositions()``), in fvcore's convention, computed from the shapes in ``node.meta["val"]`` without
    running anything. Module path -> FLOPs; ``""`` is the whole model; a node's FLOPs go to every module in
    its ``nn_module_stack`` (as :class:`NodeFlopCounter` does); modules without FLOPs are left out.

    Counted: convolutions (transposed too), linear, matmul, einsum, mm/addmm/bmm/baddbmm (torch's registry),
    batch/layer/group/instance norms, nearest and bilinear 2-d upsampling, grid sampling, adaptive average
    pooling, scaled dot-product attention and ``_native_multi_head_attention``; the subgraphs of no_grad and
    autocast regions are counted as part of the graph. Other ops count 0, and so does a node whose recorded
    shapes are symbolic (a dynamic dimension) or missing. Where fvcore differs: a matmul whose first operand
    is broadcast (fvcore counts it once), baddbmm (fvcore skips it), einsum (see ``_einsum_call``); in a
    decomposed graph, einsum counts as the bmm's torch lowers it to, and adaptive average pooling to 1x1,
    which becomes a ``mean``, is counted only where an ``nn.AdaptiveAvgPool2d`` module made it.
    """
    by_module = {"": 0}
    for node, flops in _graph_node_flops(graph):
        if not flops:
            continue
        for path in {"", *(path for path, _ in (node.meta.get("nn_module_stack") or {}).values())}:
            by_module[path] = by_module.get(path, 0) + flops
    return by_module
