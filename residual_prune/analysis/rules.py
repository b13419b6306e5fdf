"""The removability rules: ordered lists of named checks, for whole units and for single residual branches.

A unit's removal makes its part of the network the identity when:

1. it is a submodule (not the model's top-level forward) and is called once (shared modules
   cannot be removed in one place only),
2. it has one tensor output of the shape of the tensor it gets as first argument (no
   downsampling); extra arguments (a feature size, a mask) may feed its branches,
3. its main path, from output back to that first argument, runs only through the shortcuts of
   identity joins (or of one to which a second branch is added, ``x + f(x) + g(x)``),
   parameter-free element-wise operations (e.g. the ReLU after the addition of a torchvision
   ``BasicBlock``) and layout operations (reshape, permute, ...)
   that together give back the input, checked by running them on a probe tensor; the
   ``"default"`` policy also lets it run through normalization layers (a post-norm transformer
   layer, ``LayerNorm(x + f(x))``, as in BERT),
4. no branch on that path goes down and back up in resolution (a strided convolution or
   pooling and an upsampling, as in a U-Net-like long skip).

A single residual branch (a *sub-layer*, ``granularity="sublayer"``) can go when its shortcut
is the identity, it does not go down and back up in resolution (these two checks are shared
with units), nothing outside it reads its tensors, and removing it removes at least one layer.

Each check is a :class:`Rule`; :data:`UNIT_RULES`, :data:`JOIN_RULES` and :data:`SUBLAYER_RULES`
list them in the order they are tried, and the first that fails gives the reason.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import torch
import torch.fx as fx

from ..ops import unread
from ..tracing import ModuleCall
from .graph import GraphIndex
from .joins import Join, Unit, branch_modules
from .policies import NORM_FREE_MAIN_PATH, PAPER_REASON, Policy

__all__ = [
    "JOIN_RULES",
    "SUBLAYER_RULES",
    "UNIT_RULES",
    "JoinContext",
    "Rule",
    "SublayerContext",
    "UnitContext",
    "first_failure",
]

Context = TypeVar("Context", contravariant=True)


@dataclasses.dataclass(frozen=True)
class Rule(Generic[Context]):
    """A named removability check: ``check(context)`` says why the unit or branch cannot go, or None."""

    name: str
    check: Callable[[Context], str | None]


def first_failure(rules: Iterable[Rule[Context]], context: Context) -> str | None:
    """The reason of the first rule ``context`` fails, or None if it meets them all."""
    for rule in rules:
        reason = rule.check(context)
        if reason is not None:
            return reason
    return None


# --- rules of one residual join: shared by a unit's main path and by sub-layers ---


@dataclasses.dataclass(frozen=True)
class JoinContext:
    """A residual join under check; ``branch_noun`` is how reasons name its branch."""

    graph: GraphIndex
    join: Join
    branch_noun: str = "branch"


def _identity_shortcut(context: JoinContext) -> str | None:
    if context.join.identity:
        return None
    return f"its shortcut is not the identity: {context.graph.describe(context.join.shortcut)}"


def _resampling_round_trip(graph: GraphIndex, branch: list[int]) -> str | None:
    """Describe the resampling if the branch goes down and back up in resolution (a U-Net-like long skip).

    A branch that only reduces the resolution of keys and values (PVT's spatial-reduction
    attention) keeps its output at the input's resolution without upsampling: not a long skip.
    """
    ops = [op for op in (graph.ops.resampling(graph.nodes[i]) for i in sorted(branch)) if op]
    if not any(kind == "up" for kind, _ in ops):
        return None
    return ", ".join(description for _, description in ops[:3]) + (", ..." if len(ops) > 3 else "")


def _no_down_and_up(context: JoinContext) -> str | None:
    resampling = _resampling_round_trip(context.graph, context.join.branch)
    if not resampling:
        return None
    return f"its {context.branch_noun} goes down and back up in resolution ({resampling}), like a U-Net long skip"


JOIN_RULES: tuple[Rule[JoinContext], ...] = (
    Rule("identity-shortcut", _identity_shortcut),
    Rule("no-down-and-up", _no_down_and_up),
)
"""The checks of a residual join, for the joins on a unit's main path and for sub-layers."""


# --- rules of a whole unit ---


@dataclasses.dataclass(frozen=True)
class MainPath:
    """A unit's main path, input side first (joins stand for their shortcut), and why it is not
    made of removable steps (None if it is)."""

    nodes: list[int]
    failure: str | None


@dataclasses.dataclass
class UnitContext:
    """A unit under check: its module's name, its own joins, every join of the graph by node position
    (the main path may pass through the joins of nested units, e.g. a conditional position encoding
    ``x + conv(x)`` before the attention residual) and the policy; the rest is derived on demand."""

    graph: GraphIndex
    name: str
    joins: list[Join]
    all_joins: dict[int, Join]
    policy: Policy

    @functools.cached_property
    def inside(self) -> list[int]:
        return sorted(self.graph.inside(self.name))

    @functools.cached_property
    def inside_set(self) -> set[int]:
        return set(self.inside)

    @functools.cached_property
    def inputs(self) -> set[int]:
        graph = self.graph
        return {a for i in self.inside for a in graph.data_inputs(graph.nodes[i]) if a not in self.inside_set}

    @functools.cached_property
    def outputs(self) -> list[int]:
        graph = self.graph
        return [i for i in self.inside if any(graph.index[u] not in self.inside_set for u in graph.nodes[i].users)]

    @property
    def call(self) -> ModuleCall | None:
        return self.graph.traced.calls.get(self.name)

    @property
    def calls(self) -> int:
        return self.graph.traced.call_counts.get(self.name, 1)

    @functools.cached_property
    def inp(self) -> int | None:
        """The unit's input: the tensor it gets first (extra tensor arguments, a mask or position
        embeddings, may feed its branches), else its only input."""
        call = self.call
        first = call.first_argument if call is not None else None
        position = self.graph.index.get(first) if first is not None else None
        return position if position in self.inputs else (next(iter(self.inputs)) if len(self.inputs) == 1 else None)

    @property
    def single(self) -> bool:
        """Whether the unit has one input and one output."""
        return self.inp is not None and len(self.outputs) == 1

    def endpoints(self) -> tuple[int | None, int | None]:
        """The unit's input and output, or Nones if it is not a submodule with one of each."""
        return (self.inp, self.outputs[0]) if self.name and self.single else (None, None)

    @functools.cached_property
    def main_path(self) -> MainPath:
        return _walk_main_path(self)


def _is_a_submodule(context: UnitContext) -> str | None:
    if context.name:
        return None
    return "the residual addition is in the model's top-level forward; there is no submodule to remove"


def _called_once(context: UnitContext) -> str | None:
    # the nodes of every call count as inside: the input/output count would blame the sharing
    if context.calls <= 1:
        return None
    return f"the module is called {context.calls} times (shared weights); removing it would change every call"


def _one_input_one_output(context: UnitContext) -> str | None:
    if context.single:
        return None
    return (
        f"it takes {len(context.inputs)} inputs, none of them as its first argument, and gives "
        f"{len(context.outputs)} outputs; only units called as `out = block(x, ...)` with one output can be "
        "replaced by the identity"
    )


def _called_as_block(context: UnitContext) -> str | None:
    call, inp = context.call, context.inp
    assert inp is not None, "one-input-one-output comes first"
    if call is not None and call.first_argument is context.graph.nodes[inp] and call.returns_one_value:
        return None
    return (
        "it is not called as `out = block(x, ...)` with the tensor first and a single tensor returned "
        "(e.g. it returns a tuple), so a stand-in cannot replace it"
    )


def _keeps_shape(context: UnitContext) -> str | None:
    graph = context.graph
    inp, out = context.endpoints()
    assert inp is not None and out is not None, "one-input-one-output comes first"
    in_shape, out_shape = graph.shape(inp), graph.shape(out)
    if in_shape == out_shape:
        return None
    projections = [j for j in context.joins if not j.identity]
    how = f"projection shortcut {graph.describe(projections[0].shortcut)}" if projections else "no identity shortcut"
    return f"it carries downsampling: shape {in_shape} -> {out_shape} ({how})"


def _main_path_step_removable(context: UnitContext, i: int) -> bool:
    """Whether node ``i`` may lie on a unit's main path outside any join: one data input, no state
    (normalization layers excepted unless the policy keeps them off it), and the input's shape
    kept or a layout op."""
    graph = context.graph
    node = graph.nodes[i]
    tensors = graph.data_inputs(node)
    keeps_shape = len(tensors) == 1 and graph.shape(i) == graph.shape(tensors[0])
    norms_allowed = not context.policy.applies(NORM_FREE_MAIN_PATH)
    weighted = graph.ops.reads_state(node) and not (norms_allowed and graph.ops.is_norm(node))
    return not weighted and len(tensors) == 1 and (keeps_shape or graph.ops.is_layout(node))


def _inner_join(context: UnitContext, join: Join) -> int | None:
    """For a second branch added to a residual join, ``(x + f(x)) + g(x)`` (parallel attention and MLP,
    as Cohere's layers write ``residual + attention + mlp``), the position of the inner join: the main
    path goes on through it. None for any other join."""
    if join.identity:
        return None
    graph = context.graph
    operands = graph.ops.add_operands(join.node)
    assert operands is not None, "a join is an addition"
    for inner, other in (operands, operands[::-1]):
        position = graph.index[inner]
        found = context.all_joins.get(position)
        if found is not None and found.identity and graph.is_ancestor(found.fork, graph.index[other]):
            return position
    return None


def _walk_main_path(context: UnitContext) -> MainPath:
    """Walk the main path from the output back to the input, through the shortcuts of joins
    (which must meet :data:`JOIN_RULES`) and removable steps."""
    graph = context.graph
    inp, out = context.endpoints()
    assert inp is not None and out is not None, "one-input-one-output comes first"
    path: list[int] = []
    cur = out
    while cur != inp:
        if cur not in context.inside_set:
            return MainPath(
                path[::-1],
                f"its main path leads to {graph.describe([cur])}, not to the tensor it gets as first argument, so "
                "a stand-in returning its first argument cannot replace it",
            )
        path.append(cur)
        join = context.all_joins.get(cur)
        if join is not None:
            inner = _inner_join(context, join)
            rules = JOIN_RULES if inner is None else [r for r in JOIN_RULES if r.name != "identity-shortcut"]
            reason = first_failure(rules, JoinContext(graph, join, branch_noun="residual branch"))
            if reason is not None:
                return MainPath(path[::-1], reason)
            cur = join.fork if inner is None else inner
            continue
        if not _main_path_step_removable(context, cur):
            return MainPath(
                path[::-1],
                f"{graph.describe([cur])} on its main path is outside any residual branch, so removing the unit "
                "would remove more than a residual branch",
            )
        cur = graph.data_inputs(graph.nodes[cur])[0]
    return MainPath(path[::-1], None)


def _main_path_through_branches(context: UnitContext) -> str | None:
    return context.main_path.failure


def _main_path_is_identity(graph: GraphIndex, inp: int, path: list[int], joins: dict[int, Join]) -> bool:
    """Run the main path without its branches on a tensor of distinct values: is the result the input?

    Joins pass their shortcut, shape-keeping element-wise ops pass their input, and layout
    ops (reshape, permute, ...) run for real with the sizes recorded during tracing.
    """
    layout = [i for i in path if i not in joins and graph.ops.is_layout(graph.nodes[i])]
    if not layout:
        return True
    shape = graph.shape(inp)
    assert shape is not None, "layout ops run on the unit's input, so it is one tensor"
    probe = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape)
    values: dict[fx.Node, Any] = {graph.nodes[inp]: probe}

    def value_of(arg: fx.Node) -> Any:
        if arg in values:
            return values[arg]
        if "value" in arg.meta:  # a size recorded during tracing
            return arg.meta["value"]
        raise KeyError(arg.name)

    for i in path:
        node = graph.nodes[i]
        if i in joins:
            values[node] = values[graph.nodes[joins[i].fork]]
        elif i not in layout:
            values[node] = values[graph.nodes[graph.data_inputs(node)[0]]]
        else:
            try:
                args = fx.node.map_arg(node.args, value_of)
                kwargs = fx.node.map_arg(node.kwargs, value_of)
            except KeyError:
                return False
            if args and isinstance(args[0], torch.Tensor):  # the values matter, not the strides: a view the
                args = (args[0].contiguous(), *args[1:])  # real tensor allowed must work on the probe too
            values[node] = graph.ops.run(node, args, kwargs)
    result = values[graph.nodes[path[-1]]]
    return isinstance(result, torch.Tensor) and result.shape == probe.shape and torch.equal(result, probe)


def _main_path_keeps_layout(context: UnitContext) -> str | None:
    inp, _ = context.endpoints()
    assert inp is not None, "one-input-one-output comes first"
    if _main_path_is_identity(context.graph, inp, context.main_path.nodes, context.all_joins):
        return None
    return (
        "its main path rearranges the tensor (e.g. a permute that is not undone), so removing the unit "
        "would change the layout"
    )


UNIT_RULES: tuple[Rule[UnitContext], ...] = (
    Rule("is-a-submodule", _is_a_submodule),
    Rule("called-once", _called_once),
    Rule("one-input-one-output", _one_input_one_output),
    Rule("called-as-block", _called_as_block),
    Rule("keeps-shape", _keeps_shape),
    Rule("main-path-through-branches", _main_path_through_branches),
    Rule("main-path-keeps-layout", _main_path_keeps_layout),
)
"""The checks of a whole unit, in order."""


# --- rules of a single residual branch (a sub-layer) ---


@dataclasses.dataclass(frozen=True, kw_only=True)
class SublayerContext(JoinContext):
    """A residual branch under check, and the unit it belongs to."""

    unit: Unit


def _unit_not_protected(context: SublayerContext) -> str | None:
    return PAPER_REASON if context.unit.reason == PAPER_REASON else None


def _private_branch(context: SublayerContext) -> str | None:
    graph, join = context.graph, context.join
    private = set(join.branch) | {graph.index[join.node]}
    shared = [  # shape reads (x.shape) of branch tensors and outputs nothing reads do not count
        i
        for i in join.branch
        if any(
            graph.index[u] not in private and "tensor_meta" in u.meta and not unread(u) for u in graph.nodes[i].users
        )
    ]
    if not shared:
        return None
    return f"{graph.describe(shared)} in its branch is also used outside it"


def _removes_a_layer(context: SublayerContext) -> str | None:
    graph, join = context.graph, context.join
    modules, tensors = branch_modules(graph, join)
    layers = [i for i in join.branch if graph.ops.weights(graph.nodes[i])]
    if not layers or modules or [t for t in tensors if t not in graph.traced.constants]:
        return None
    return (
        f"its layers ({graph.describe(layers)}) also run outside it (a module called more than once), so "
        "removing this branch alone would remove no layer"
    )


SUBLAYER_RULES: tuple[Rule[SublayerContext], ...] = (
    Rule("unit-not-protected", _unit_not_protected),
    *JOIN_RULES,
    Rule("private-branch", _private_branch),
    Rule("removes-a-layer", _removes_a_layer),
)
"""The checks of a single residual branch, in order."""
