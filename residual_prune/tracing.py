"""torch.fx tracing that knows timm's and torchvision's not-trace registrations.

Like ``timm.layers._fx``, the modules and functions to keep opaque are data, not
special cases: :func:`register_notrace_module` and :func:`register_notrace_function`
fill two sets that :func:`trace` merges with timm's own sets, torchvision's (the
``torchvision.ops`` modules and functions, as ``torchvision.models.feature_extraction``
does) and the caller's ``leaf_modules``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import math
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.shape_prop import TensorMetadata
from torch.nn.utils.stateless import _reparametrize_module

from .aliasing import follow_in_place_writes, module_stack, reread_first_arguments
from .errors import DataError, FlopCountWarning, InvalidArgumentError, TraceError
from .flops import NodeFlopCounter
from .modes import eval_mode, model_state_kept
from .ops import FxOps, OpTable

__all__ = [
    "register_notrace_module",
    "register_notrace_function",
    "get_notrace_modules",
    "get_notrace_functions",
    "trace",
    "TracedModel",
    "as_input_tuple",
    "check_leaf_modules",
]

_notrace_modules: set[type[nn.Module]] = set()
_notrace_functions: set[Callable[..., Any]] = set()


def register_notrace_module(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: treat ``cls`` as an opaque leaf when tracing (its calls stay one node)."""
    _notrace_modules.add(cls)
    return cls


def register_notrace_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: do not trace into ``fn``; its calls stay one ``call_function`` node."""
    _notrace_functions.add(fn)
    return fn


def _timm_sets() -> tuple[set[type[nn.Module]], set[Callable[..., Any]]]:
    """timm's not-trace registrations (``timm.layers.register_notrace_module/function``), plus its
    train-only regularisers, so that a traced graph keeps their train/eval behaviour."""
    try:
        from timm.layers import DropBlock2d, DropPath
        from timm.layers import get_notrace_functions as timm_functions
        from timm.layers import get_notrace_modules as timm_modules
    except ImportError:  # timm is optional at run time
        return set(), set()
    return set(timm_modules()) | {DropPath, DropBlock2d}, {f for f in timm_functions() if callable(f)}


def _torchvision_leaves() -> set[type[nn.Module]]:
    """The module classes of ``torchvision.ops``, which torchvision's feature extractor keeps opaque."""
    try:
        import torchvision.ops
    except ImportError:
        return set()
    return {obj for obj in vars(torchvision.ops).values() if isinstance(obj, type) and issubclass(obj, nn.Module)}


def get_notrace_modules() -> list[type[nn.Module]]:
    """Module classes kept opaque: ours, timm's registrations and torchvision's ``torchvision.ops`` modules."""
    return list(_notrace_modules | _timm_sets()[0] | _torchvision_leaves())


def get_notrace_functions() -> list[Callable[..., Any]]:
    """Functions kept opaque: ours plus timm's registrations (``torchvision.ops`` is autowrapped whole)."""
    return list(_notrace_functions | _timm_sets()[1])


def _autowrap_modules() -> tuple[Any, ...]:
    """Python modules whose functions stay single nodes: ``math`` (fx's default) and, like torchvision's
    feature extractor, ``torchvision.ops``."""
    try:
        import torchvision.ops
    except ImportError:
        return (math,)
    return (math, torchvision.ops)


def as_input_tuple(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    """Normalise ``example_inputs`` (a tensor or a tuple/list of tensors) to a tuple."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if (
        isinstance(example_inputs, (tuple, list))
        and example_inputs
        and all(isinstance(t, torch.Tensor) for t in example_inputs)
    ):
        return tuple(example_inputs)
    raise DataError(
        f"example_inputs must be a tensor or a tuple of tensors, got {type(example_inputs).__name__}; "
        "pass e.g. example_inputs=torch.randn(1, 3, 224, 224)"
    )


def _is_constant(value: Any, depth: int = 0) -> bool:
    if isinstance(value, (int, float, bool, torch.Size, type(None))):
        return True
    return (
        isinstance(value, (tuple, list))
        and len(value) <= 16
        and depth < 2
        and all(_is_constant(v, depth + 1) for v in value)
    )


def _tensor_meta(t: torch.Tensor) -> TensorMetadata:
    """``ShapeProp``'s record of a tensor without its costly memory-format detection."""
    stride = t.stride() if t.layout == torch.strided else ()
    return TensorMetadata(t.shape, t.dtype, t.requires_grad, stride, None, False, {})


class _ShapeAndConstantProp(fx.Interpreter):
    """Runs a traced graph once, as ``ShapeProp`` does, recording ``node.meta["tensor_meta"]``;
    also keeps small non-tensor results (sizes, ints) in ``node.meta["value"]`` and, given a
    :class:`NodeFlopCounter`, counts each node's FLOPs in the same pass. Runs on the original
    model's modules (no ``GraphModule`` to build)."""

    def __init__(self, root: nn.Module, graph: fx.Graph, flop_counter: NodeFlopCounter | None = None):
        super().__init__(root, graph=graph)
        self.flop_counter = flop_counter

    def run_node(self, n: fx.Node) -> Any:
        if self.flop_counter is None:
            result = super().run_node(n)
        else:
            module = self.submodules.get(n.target) if n.op == "call_module" else None
            result = self.flop_counter.count(n, module, lambda: super(_ShapeAndConstantProp, self).run_node(n))
        found_tensor = False

        def record(value: Any) -> Any:
            nonlocal found_tensor
            if isinstance(value, torch.Tensor):
                found_tensor = True
                return _tensor_meta(value)
            return value

        meta = fx.node.map_aggregate(result, record)
        if found_tensor:
            n.meta["tensor_meta"] = meta
        elif _is_constant(result):
            n.meta["value"] = result
        n.meta["type"] = type(result)
        return result


def _propagate(
    root: nn.Module, graph: fx.Graph, inputs: tuple[torch.Tensor, ...], count_flops: bool
) -> dict[str, int] | None:
    """Run ``graph`` once on ``inputs`` recording shapes (and FLOPs by module when ``count_flops``).

    If only the FLOP counting fails, warns with :class:`FlopCountWarning` and returns None.
    """
    with torch.no_grad():
        if count_flops:
            try:
                counter = NodeFlopCounter()
                _ShapeAndConstantProp(root, graph, counter).run(*inputs)
                return counter.by_module
            except Exception as exc:
                failure = exc
        _ShapeAndConstantProp(root, graph).run(*inputs)
    if count_flops:
        warnings.warn(
            f"could not count the FLOPs of {type(root).__name__} ({type(failure).__name__}: {failure}); "
            "blocks are reported with flops=None. Pruning is not affected.",
            FlopCountWarning,
            stacklevel=6,
        )
    return None


def _propagate_fake(
    root: nn.Module, graph: fx.Graph, inputs: tuple[torch.Tensor, ...], count_flops: bool
) -> dict[str, int] | None:
    """:func:`_propagate` on fake tensors: the inputs, parameters and buffers are replaced by fake
    copies (shape and dtype, no data), so nothing is computed and nothing of the model is written."""
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        state: dict[str, torch.Tensor] = {
            name: mode.from_tensor(t)
            for name, t in itertools.chain(
                root.named_parameters(remove_duplicate=False), root.named_buffers(remove_duplicate=False)
            )
        }
        with _reparametrize_module(root, state):
            return _propagate(root, graph, tuple(mode.from_tensor(t) for t in inputs), count_flops)


def _shapes_and_flops(
    root: nn.Module, graph: fx.Graph, inputs: tuple[torch.Tensor, ...], count_flops: bool
) -> dict[str, int] | None:
    """Shapes and FLOPs from a pass on fake tensors; from a real forward (whose writes into the
    model are undone) when an operation needs real values (``.item()``, ``nonzero``, ...)."""
    try:
        return _propagate_fake(root, graph, inputs, count_flops)
    except Exception:
        with model_state_kept(root):
            return _propagate(root, graph, inputs, count_flops)


def first_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str | None, Any]:
    """What a module was called with first, and the keyword it was passed by (None: by position; ``(None,
    None)`` for a call without arguments)."""
    return (None, args[0]) if args else next(iter(kwargs.items()), (None, None))


def _node_of(value: Any) -> Any:
    """A proxy's node; a constant as it is; anything else :data:`OPAQUE`."""
    if isinstance(value, fx.Proxy):
        return value.node
    return value if isinstance(value, _CONSTANTS) else OPAQUE


class _Tracer(fx.Tracer):
    """fx tracer with extra leaf classes that remembers where tracing failed."""

    def __init__(self, leaf_classes: tuple[type[nn.Module], ...], autowrap: Iterable[Callable[..., Any]]):
        super().__init__(autowrap_modules=_autowrap_modules(), autowrap_functions=tuple(autowrap))
        self.leaf_classes = leaf_classes
        self.failed_in: tuple[str, str] | None = None
        # per module: its first argument, the keyword it was passed by (None: by position), its output
        self.returned: dict[str, tuple[fx.Node | None, str | None, Any]] = {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, self.leaf_classes):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def module_calls(self) -> dict[str, ModuleCall]:
        """How each module was called (its last call), once the graph is whole (who reads what is known)."""
        return {path: returned_call(*returned, path) for path, returned in self.returned.items()}

    def call_module(self, m, forward, args, kwargs):  # noqa: ANN001 - fx signature
        try:
            result = super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost module is the one that failed
                self.failed_in = (self.path_of_module(m), type(m).__name__)
            raise
        keyword, value = first_argument(args, kwargs)
        first = value.node if isinstance(value, fx.Proxy) else None
        output = tuple(_node_of(r) for r in result) if type(result) is tuple else _node_of(result)
        self.returned[self.path_of_module(m)] = (first, keyword if first is not None else None, output)
        return result


@dataclasses.dataclass(frozen=True)
class ModuleCall:
    """How a module was called (its last call): the node passed as first argument, if any (by position,
    or by the keyword ``keyword`` when the call has no positional argument), and whether a stand-in
    can rebuild what it returned from that argument: a tensor alone, or, where ``constants`` is not
    None, a tuple of the tensor followed by those constants (``(hidden_states, None)``)."""

    first_argument: fx.Node | None
    returns_one_value: bool
    keyword: str | None = None
    constants: tuple[Any, ...] | None = None


_CONSTANTS = (bool, int, float, str, type(None))
OPAQUE = object()  # a returned value a stand-in cannot rebuild (a nested structure, an unknown tensor)


def _read_outside(node: fx.Node, path: str) -> bool:
    """Whether a node made by module ``path`` is read by anything ``path`` does not make."""
    return any(path not in module_stack(user) for user in node.users)


def returned_call(first: fx.Node | None, keyword: str | None, output: Any, path: str) -> ModuleCall:
    """A module call from what it got first and what it returned (a node, or a tuple of nodes and
    constants; :data:`OPAQUE` or anything else: what a stand-in cannot rebuild). A tensor it returned
    after its output that nothing outside reads (attention weights a caller drops, the state a next
    block overwrites) counts as ``None``, which is what a stand-in returns in its place."""
    if isinstance(output, fx.Node):
        return ModuleCall(first, True, keyword)
    if not (isinstance(output, tuple) and output and isinstance(output[0], fx.Node)):
        return ModuleCall(first, False, keyword)
    rest = [None if isinstance(o, fx.Node) and not _read_outside(o, path) else o for o in output[1:]]
    if all(o is None or isinstance(o, _CONSTANTS) for o in rest):
        return ModuleCall(first, True, keyword, tuple(rest))
    return ModuleCall(first, False, keyword)


@dataclasses.dataclass
class TracedModel:
    """A traced graph plus what block discovery needs to know about each node."""

    root: nn.Module
    graph: fx.Graph
    nodes: list[fx.Node]
    shapes: dict[fx.Node, tuple[int, ...] | None]
    call_counts: dict[str, int]
    calls: dict[str, ModuleCall]
    flops: dict[str, int] | None = None  # FLOPs by module name ("" = the whole model), fvcore's convention
    # tensors torch.fx lifted out of the forward as attributes of the root (``_tensor_constant0``), which
    # tracing does not leave on the model; a GraphModule over the graph needs them (see attach_constants)
    constants: dict[str, Any] = dataclasses.field(default_factory=dict)
    ops: OpTable = dataclasses.field(kw_only=True)  # what each node does, as its front-end tells
    inputs: list[fx.Node] = dataclasses.field(default_factory=list)  # the placeholders of the example inputs
    frontend: str = "fx"  # the front-end that captured the graph: "fx", "export", "export-strict" or "eager"

    def attach_constants(self, module: nn.Module) -> nn.Module:
        """Set the graph's lifted constants on ``module`` (a copy of the model: this changes it)."""
        for name, value in self.constants.items():
            setattr(module, name, value)
        return module

    @functools.cached_property
    def graph_module(self) -> fx.GraphModule:
        """The graph as a runnable module over ``root``'s submodules (built on first use; the lifted
        constants are set on ``root``, so trace a copy before asking for this)."""
        root = self.attach_constants(self.root)
        return fx.GraphModule(root, self.graph, class_name=type(root).__name__)

    module_stack = staticmethod(module_stack)


def _defaulted_arguments(model: nn.Module, num_inputs: int) -> dict[str, Any] | None:
    """The forward's parameters after the example inputs, fixed to their defaults.

    Tracing them as placeholders would take ``if mask is not None`` for true.
    """
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    later = [p for p in params if p.kind in positional][num_inputs:]
    later += [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    if any(p.default is inspect.Parameter.empty for p in later):
        return None  # let fx report the missing argument
    return {p.name: p.default for p in later} or None


def check_leaf_modules(leaf_modules: Any) -> tuple[type[nn.Module], ...]:
    """``leaf_modules`` as a tuple of ``nn.Module`` subclasses, or :class:`InvalidArgumentError`."""
    example = "e.g. leaf_modules=(MyBlock,) with the class itself, not its name or an instance"
    if isinstance(leaf_modules, (str, bytes, type, nn.Module)) or not isinstance(leaf_modules, Iterable):
        raise InvalidArgumentError(
            f"leaf_modules must be an iterable of nn.Module subclasses, {example}; got {leaf_modules!r}"
        )
    classes = tuple(leaf_modules)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise InvalidArgumentError(
                f"leaf_modules must hold nn.Module subclasses, {example}; got {cls!r} ({type(cls).__name__})"
            )
    return classes


def unanalysable_wrapper(model: nn.Module) -> str | None:
    """What to pass instead when ``model`` is a wrapper that torch.fx cannot see through, else None."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # not imported: nothing can be compiled
    if eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
        return (
            "it is a torch.compile'd module (OptimizedModule); pass the original module, model._orig_mod, "
            "and compile the pruned model afterwards"
        )
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return (
            f"it is wrapped in {type(model).__name__}; pass the wrapped module, model.module, and wrap "
            "the pruned model again afterwards"
        )
    if isinstance(model, torch.jit.ScriptModule):
        return (
            "it is a TorchScript module (torch.jit.script / torch.jit.trace), whose Python forward is gone, "
            "so it cannot be analysed; pass the eager nn.Module it was made from"
        )
    return None


def largest_children(model: nn.Module, k: int = 3) -> list[tuple[str, int]]:
    """The ``k`` direct children with the most parameters, as ``(name, count)``, largest first."""
    sizes = [(name, sum(p.numel() for p in child.parameters())) for name, child in model.named_children()]
    return sorted((s for s in sizes if s[1]), key=lambda s: -s[1])[:k]


def _trace_failure(model: nn.Module, failed_in: tuple[str, str] | None, exc: Exception) -> TraceError:
    """The :class:`TraceError` for a failed ``tracer.trace``, with what to do next."""
    cause = f"{type(exc).__name__}: {exc}"
    if failed_in is not None:
        path, cls = failed_in
        return TraceError(
            f"torch.fx could not trace {type(model).__name__} inside `{path}` ({cls}): {cause}. "
            f"Treat the failing module as opaque with leaf_modules=({cls},) or decorate its class "
            "with residual_prune.register_notrace_module."
        )
    children = largest_children(model)
    if children:
        names = ", ".join(f"model.{name} ({count:,} parameters)" for name, count in children)
        advice = (
            "Analyse and prune a submodule that holds the residual blocks instead, e.g. "
            f"plan_pruning(model.{children[0][0]}, ...) and put the pruned copy back with "
            f"model.{children[0][0]} = apply_plan(model.{children[0][0]}, plan); the largest submodules are {names}."
        )
    else:
        advice = "Rewrite the forward without control flow on tensor values."
    return TraceError(
        f"torch.fx could not trace the top-level forward of {type(model).__name__} itself (outside any "
        f"submodule): {cause}. Its own forward cannot be traced with torch.fx (e.g. input checks or control "
        f"flow on tensor values). {advice}"
    )


def trace(
    model: nn.Module,
    example_inputs: Any,
    leaf_modules: Iterable[type[nn.Module]] = (),
    *,
    count_flops: bool = True,
    training: bool = False,
) -> TracedModel:
    """Trace ``model`` in eval mode and propagate the shapes of ``example_inputs`` through it.

    ``training=True`` traces the train-mode forward instead (Python ``if self.training:`` code
    takes its train branch); shapes are still propagated with the modules in eval mode.

    Shapes come from one pass over the graph on fake tensors (nothing is computed; a real
    forward under ``torch.no_grad`` in eval mode only where an operation needs values); the
    same pass counts the FLOPs of every module unless ``count_flops=False``. Afterwards the
    model is bit-identical to what it was (:func:`~residual_prune.modes.model_state_kept`),
    even if its forward updates buffers or appends to lists. ``leaf_modules`` must hold
    ``nn.Module`` classes.

    Raises:
        TraceError: the model is a TorchScript, ``torch.compile`` or ``DataParallel`` wrapper,
            or torch.fx cannot trace it; the message says what to pass instead.
        InvalidArgumentError: ``leaf_modules`` is not an iterable of module classes.
        DataError: ``example_inputs`` do not fit the model.
    """
    wrapper = unanalysable_wrapper(model)
    if wrapper:
        raise TraceError(f"cannot trace {type(model).__name__}: {wrapper}.")
    inputs = as_input_tuple(example_inputs)
    leaf_classes = tuple(set(check_leaf_modules(leaf_modules)) | set(get_notrace_modules()))
    tracer = _Tracer(leaf_classes, get_notrace_functions())
    with model_state_kept(model, unwritten=("parameters",)), eval_mode(model):  # fx proxies parameters
        model.train(training)
        attributes = set(vars(model))
        try:
            graph = tracer.trace(model, concrete_args=_defaulted_arguments(model, len(inputs)))
        except Exception as exc:
            raise _trace_failure(model, tracer.failed_in, exc) from exc
        versions = follow_in_place_writes(graph, FxOps(model))
        model.eval()
        try:
            flops = _shapes_and_flops(model, graph, inputs, count_flops)
        except Exception as exc:
            given = ", ".join(str(tuple(t.shape)) for t in inputs)
            raise DataError(
                f"example_inputs of shape {given} do not fit {type(model).__name__}: "
                f"{type(exc).__name__}: {exc}. Pass inputs shaped as the model expects "
                "(e.g. torch.randn(1, 3, 224, 224) for ImageNet models)."
            ) from exc
        constants = _lifted_constants(model, graph, attributes, prefix="_train" if training else "")
    for node in graph.nodes:
        if isinstance(node.type, str):
            # an annotation left a string (``from __future__ import annotations``): torch 2.9 cannot
            # pickle a GraphModule whose code names it, and the type is only informational
            node.type = None
    nodes = list(graph.nodes)
    shapes: dict[fx.Node, tuple[int, ...] | None] = {}
    for node in nodes:
        meta = node.meta.get("tensor_meta")
        shapes[node] = tuple(meta.shape) if hasattr(meta, "shape") else None
    placeholders = [n for n in nodes if n.op == "placeholder"][: len(inputs)]
    return TracedModel(
        model,
        graph,
        nodes,
        shapes,
        dict(tracer.num_calls),
        reread_first_arguments(tracer.module_calls(), versions),
        flops,
        constants,
        ops=FxOps(model, constants),
        inputs=placeholders,
    )


def _lifted_constants(model: nn.Module, graph: fx.Graph, attributes: set[str], prefix: str) -> dict[str, Any]:
    """The attributes tracing added to ``model`` for the graph to read (lifted tensor constants), renamed
    with ``prefix`` (a train-mode graph's must not collide with an eval-mode graph's over the same copy)."""
    constants = {}
    for node in graph.nodes:
        if node.op == "get_attr" and "." not in node.target and node.target not in attributes:
            name = prefix + node.target
            constants[name] = getattr(model, node.target)
            node.target = name
    return constants
