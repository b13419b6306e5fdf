"""The eager front-end: run the model once and record the ATen operators it dispatches.

For models that neither torch.fx nor torch.export can capture because their forward branches on
tensor values (a detector's post-processing, a data-dependent loop over experts): a
``TorchDispatchMode`` sees every ATen call with its real tensors, and module hooks say which
modules are running. The record is an ``fx.Graph`` of that one run in the form torch.export gives
(placeholders for inputs, parameters and buffers; ``nn_module_stack`` and ``val`` on each node),
so :class:`~residual_prune.ops.ExportOps` and everything downstream read it unchanged. Data flow
is followed by tensor identity: an in-place operator makes a new node for the tensor it writes.

What this cannot see: the branches the run did not take, and, like any recording, the value of a
view written to in place through its base after the view was taken. The weights must be real
(nothing runs on the ``meta`` device). The model runs in eval mode under ``no_grad``; what it
writes into itself is undone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import operator
import sys
import weakref
from collections.abc import Iterator
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

from .aliasing import written_through_view
from .errors import DataError, TraceError
from .exporting import record_values
from .flops import count_graph_flops
from .inputs import ModelInputs, container_items
from .modes import eval_mode, model_state_kept, on_meta
from .ops import ExportOps
from .tracing import TracedModel, first_argument, returned_call

__all__ = ["capture_eager"]


def _meta_copy(value: Any) -> Any:
    """A tensor's shape and dtype, without its data (``val`` of a node)."""
    try:
        return torch.empty(value.shape, dtype=value.dtype, device="meta")
    except Exception:  # a quantized or otherwise exotic tensor: its shape is not needed
        return None


aten = torch.ops.aten

# Normalizations dispatch as ops returning (output, statistics...): recorded as the one-output op torch.export
# shows, with its arguments, so that a norm on a unit's main path (a post-norm layer) is one node. A later
# read of the statistics (rare: a training-mode backward reads them) sees a constant.
_RECOMPOSED: dict[Any, tuple[Any, Any]] = {
    aten.native_layer_norm.default: (aten.layer_norm.default, lambda x, shape, w, b, eps: (x, shape, w, b, eps)),
    aten._native_batch_norm_legit_no_training.default: (
        aten.batch_norm.default,
        lambda x, w, b, mean, var, momentum, eps: (x, w, b, mean, var, False, momentum, eps, True),
    ),
    aten.native_batch_norm.default: (
        aten.batch_norm.default,
        lambda x, w, b, mean, var, training, momentum, eps: (x, w, b, mean, var, training, momentum, eps, True),
    ),
    aten.native_group_norm.default: (
        aten.group_norm.default,
        lambda x, w, b, n, c, hw, groups, eps: (x, groups, w, b, eps, True),
    ),
}


def _recomposed(func: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple] | None:
    """The one-output normalization op and its arguments for a call of one of :data:`_RECOMPOSED`."""
    if func not in _RECOMPOSED or kwargs:
        return None
    target, arguments = _RECOMPOSED[func]
    try:
        return target, arguments(*args)
    except TypeError:  # another arity than the schema this table knows
        return None


def _bases_written_through_views(func: Any, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The tensors an in-place operator changed by writing into views of them."""
    schema = getattr(func, "_schema", None)
    if schema is None:
        return []
    bases = []
    for position, argument in enumerate(schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        value = args[position] if position < len(args) else kwargs.get(argument.name)
        if isinstance(value, torch.Tensor) and value._base is not None:
            bases.append(value._base)
    return bases


@dataclasses.dataclass
class _Call:
    """One module call in progress or done: the node of its first argument, and what it returned."""

    first: fx.Node | None
    keyword: str | None
    output: Any = None


class _Recorder(TorchDispatchMode):
    """Appends every ATen call to ``graph``, its arguments replaced by the nodes that made them."""

    def __init__(self, model: nn.Module, graph: fx.Graph):
        super().__init__()
        self.graph = graph
        self.state = {id(t): name for name, t in model.named_parameters(remove_duplicate=False)}
        self.parameters = set(self.state.values())
        self.state.update({id(t): name for name, t in model.named_buffers(remove_duplicate=False)})
        self.placeholders: dict[str, str] = {}  # placeholder name -> qualified name of the parameter or buffer
        self.constants: list[str] = []
        self.producers: dict[int, tuple[fx.Node, weakref.ref]] = {}
        self.running: list[tuple[str, str]] = []  # (path, class) of the modules whose forward is running
        self.last_placeholder: fx.Node | None = None
        self.failed_in: str | None = None  # the innermost module whose forward raised

    def _placeholder(self, name: str) -> fx.Node:
        where = (
            self.graph.inserting_after(self.last_placeholder)
            if self.last_placeholder is not None
            else self.graph.inserting_before(next(iter(self.graph.nodes), None))
        )
        with where:
            self.last_placeholder = self.graph.placeholder(name)
        return self.last_placeholder

    def produced(self, tensor: torch.Tensor, node: fx.Node) -> None:
        """Record that ``node`` made ``tensor`` (or, for an in-place operator, wrote it last)."""
        key = id(tensor)

        def forget(_: weakref.ref) -> None:  # the tensor is gone: its id may be reused
            self.producers.pop(key, None)

        self.producers[key] = (node, weakref.ref(tensor, forget))

    def input(self, tensor: torch.Tensor, name: str) -> fx.Node:
        node = self._placeholder(name)
        node.meta["val"] = _meta_copy(tensor)
        self.produced(tensor, node)
        return node

    def node_of(self, tensor: torch.Tensor) -> fx.Node:
        """The node that made ``tensor``: an operator recorded before, or a new placeholder for a
        parameter, a buffer or a constant the forward made without an operator."""
        entry = self.producers.get(id(tensor))
        if entry is not None and entry[1]() is tensor:
            return entry[0]
        qualified = self.state.get(id(tensor))
        node = self.input(tensor, "p_" + qualified.replace(".", "_") if qualified else "c_constant")
        if qualified:
            self.placeholders[node.name] = qualified
        else:
            self.constants.append(node.name)
        return node

    def _stamp(self, node: fx.Node, value: Any) -> fx.Node:
        node.meta["nn_module_stack"] = {f"{path}@{i}": (path, cls) for i, (path, cls) in enumerate(self.running)}
        node.meta["val"] = _meta_copy(value) if isinstance(value, torch.Tensor) else value
        return node

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        recomposed = _recomposed(func, args, kwargs)
        if recomposed is not None:
            node = self.graph.call_function(recomposed[0], tree_map_only(torch.Tensor, self.node_of, recomposed[1]))
            self.produced(out[0], self._stamp(node, out[0]))  # the statistics it also returns are not followed
            return out
        node = self.graph.call_function(
            func, tree_map_only(torch.Tensor, self.node_of, args), tree_map_only(torch.Tensor, self.node_of, kwargs)
        )
        self._record_outputs(node, out)
        for base in _bases_written_through_views(func, args, kwargs):  # ``x[:, 0] += 1`` changes x too
            marker = self.graph.call_function(written_through_view, (self.node_of(base), node))
            self.produced(base, self._stamp(marker, base))
        return out

    def _record_outputs(self, node: fx.Node, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            self.produced(out, self._stamp(node, out))
        elif isinstance(out, (tuple, list)):
            self._stamp(node, type(out)(_meta_copy(o) if isinstance(o, torch.Tensor) else o for o in out))
            for i, value in enumerate(out):
                if isinstance(value, torch.Tensor):
                    item = self.graph.call_function(operator.getitem, (node, i))
                    self.produced(value, self._stamp(item, value))
        else:
            self._stamp(node, out)


def _as_nodes(recorder: _Recorder, value: Any) -> Any:
    """``value`` with its tensors replaced by their nodes (tuples kept as tuples)."""
    if isinstance(value, torch.Tensor):
        return recorder.node_of(value)
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_as_nodes(recorder, v) for v in value)
    return value


@contextlib.contextmanager
def _module_calls(model: nn.Module, recorder: _Recorder) -> Iterator[tuple[dict[str, _Call], dict[str, int]]]:
    """Keep ``recorder.running`` up to date and record each submodule's last call and call count."""
    calls: dict[str, _Call] = {}
    counts: dict[str, int] = {}
    handles = []
    handled = sys.exc_info()[1]  # an exception the caller is handling: not the model's failure
    for path, module in model.named_modules():
        cls = f"{type(module).__module__}.{type(module).__qualname__}"

        def enter(module: nn.Module, args: tuple, kwargs: dict, path: str = path, cls: str = cls) -> None:
            recorder.running.append((path, cls))
            if not path:
                return
            counts[path] = counts.get(path, 0) + 1
            keyword, first = first_argument(args, kwargs)
            node = recorder.node_of(first) if isinstance(first, torch.Tensor) else None
            calls[path] = _Call(node, keyword if node is not None else None)

        def leave(module: nn.Module, args: tuple, kwargs: dict, output: Any, path: str = path) -> None:
            if recorder.running and recorder.running[-1][0] == path:
                recorder.running.pop()
            if sys.exc_info()[1] not in (None, handled) and recorder.failed_in is None:  # the innermost failed
                recorder.failed_in = path
            if path in calls:
                calls[path].output = _as_nodes(recorder, output)

        handles.append(module.register_forward_pre_hook(enter, with_kwargs=True))
        handles.append(module.register_forward_hook(leave, with_kwargs=True, always_call=True))
    try:
        yield calls, counts
    finally:
        for handle in handles:
            handle.remove()


def _tensor_leaves(value: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """The tensors in a model's output: nested tuples, lists, mappings and dataclasses (``ModelOutput``)."""
    if isinstance(value, torch.Tensor):
        yield value
        return
    children = container_items(value) if depth <= 8 else None
    for _, item in children[1] if children else ():
        yield from _tensor_leaves(item, depth + 1)


def capture_eager(model: nn.Module, inputs: ModelInputs, *, count_flops: bool = True) -> TracedModel:
    """Capture ``model`` (in eval mode) called with ``inputs`` by running it once and recording its ATen
    operators; the model is left as it was.

    Raises:
        TraceError: the model is on the meta device (nothing can run).
        DataError: the model fails on ``inputs``.
    """
    if on_meta(model):
        raise TraceError(
            f"the eager front-end runs {type(model).__name__} for real, but it is on the meta device; use "
            "frontend='export', or load the weights first"
        )
    graph = fx.Graph()
    recorder = _Recorder(model, graph)
    user = [recorder.input(t, f"input_{i}") for i, t in enumerate(inputs.tensors())]
    with model_state_kept(model), eval_mode(model), torch.no_grad(), _module_calls(model, recorder) as (calls, counts):
        try:
            with recorder:
                output = inputs.call(model)
        except Exception as exc:
            where = f" inside `{recorder.failed_in}`" if recorder.failed_in else ""
            raise DataError(
                f"{type(model).__name__} fails on the example inputs {inputs.describe()}{where}: "
                f"{type(exc).__name__}: {exc}. Pass inputs the model accepts."
            ) from exc
        graph.output(tuple(recorder.node_of(t) for t in _tensor_leaves(output)))
    record_values(graph)
    nodes = list(graph.nodes)
    shapes = {
        n: tuple(n.meta["tensor_meta"].shape) if hasattr(n.meta.get("tensor_meta"), "shape") else None for n in nodes
    }
    buffers = {name: q for name, q in recorder.placeholders.items() if q not in recorder.parameters}
    parameters = {name: q for name, q in recorder.placeholders.items() if q in recorder.parameters}
    return TracedModel(
        root=model,
        graph=graph,
        nodes=nodes,
        shapes=shapes,
        call_counts=counts,
        calls={path: returned_call(call.first, call.keyword, call.output, path) for path, call in calls.items()},
        flops=count_graph_flops(graph) if count_flops else None,
        ops=ExportOps(parameters, buffers, recorder.constants),
        inputs=user,
        frontend="eager",
    )
