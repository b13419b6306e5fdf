"""Sub-layers: the residual branches of the units, each on its own (``granularity="sublayer"``).

The k-th addition of unit ``u``, in graph order, is the sub-layer ``"u#k"`` (the name plans use).
:func:`branch_ends` says which module calls bound a branch in the running model, for what module
hooks and module stand-ins do with sub-layers (criteria that read hidden states, removal where
the graph is not a torch.fx one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch.fx as fx

from .graph import GraphIndex
from .joins import Join, Unit
from .rules import SUBLAYER_RULES, SublayerContext, first_failure

if TYPE_CHECKING:
    from . import Analysis

__all__ = ["BranchEnds", "Sublayer", "branch_ends", "sublayers"]


@dataclasses.dataclass(frozen=True)
class BranchEnds:
    """The module calls that bound a residual branch ``y = x + f(x)`` in the running model.

    Attributes:
        enters: the module whose first argument is the branch's input ``x`` (the shortcut): the unit
            itself, else a module of the branch; None if no such module is called once.
        leaves: the module whose output is the branch's value ``f(x)`` at the addition: a tensor, or
            the first of a tuple of it and values nothing else reads (``(attn_output, None)``);
            None if the branch ends outside a module called once.
    """

    enters: str | None
    leaves: str | None


def _operands(graph: GraphIndex, join: Join) -> tuple[fx.Node, fx.Node]:
    """The shortcut side and the branch side of a join's addition."""
    a, b = graph.ops.add_operands(join.node) or (join.node, join.node)
    return (b, a) if graph.index[a] in join.branch else (a, b)


def _called_once(graph: GraphIndex, name: str) -> bool:
    return graph.traced.call_counts.get(name) == 1 and name in graph.traced.calls


def _leaving_module(graph: GraphIndex, join: Join, end: fx.Node) -> str | None:
    """The outermost module that makes ``end`` but not the addition, if ``end`` is what it returns; else, where
    ``end`` is an identity (a dropout in eval mode that the layer also applies elsewhere), the same for its input."""
    outer = graph.stacks[graph.index[join.node]]
    while True:
        inner = graph.stacks[graph.index[end]]
        if len(inner) > len(outer) and inner[: len(outer)] == outer:
            name = inner[len(outer)]
            if _called_once(graph, name) and graph.traced.calls[name].returns_one_value:
                return name
        inputs = graph.data_inputs(end)
        if not graph.ops.is_identity(end) or len(inputs) != 1:
            return None
        end = graph.nodes[inputs[0]]


def _through_identities(graph: GraphIndex, node: fx.Node) -> Iterator[fx.Node]:
    """``node``, then what it is an identity of, and so on back (a dropout in eval mode, a no-op view)."""
    yield node
    while graph.ops.is_identity(node) and len(graph.data_inputs(node)) == 1:
        node = graph.nodes[graph.data_inputs(node)[0]]
        yield node


def _entering_module(graph: GraphIndex, unit: str, join: Join, start: fx.Node) -> str | None:
    """The unit, else the first module that makes a node of the branch (or its fork), whose first argument is
    ``start`` or an identity of it: its call starts before the branch ends."""
    same = set(_through_identities(graph, start))
    branch = set(join.branch)
    candidates = [
        name
        for name, call in graph.traced.calls.items()
        if call.first_argument in same
        and _called_once(graph, name)
        and (name == unit or bool(graph.inside(name) & (branch | {join.fork})))
    ]
    candidates.sort(key=lambda name: (name != unit, min(graph.inside(name), default=0)))
    return candidates[0] if candidates else None


def branch_ends(graph: GraphIndex, unit: str, join: Join) -> BranchEnds:
    """Where module hooks find the input and the branch value of a join of ``unit`` (see :class:`BranchEnds`)."""
    shortcut, branch = _operands(graph, join)
    return BranchEnds(enters=_entering_module(graph, unit, join, shortcut), leaves=_leaving_module(graph, join, branch))


@dataclasses.dataclass
class Sublayer:
    """One residual branch: the ``index``-th addition of ``unit``, with why it cannot go (None if it can)."""

    unit: Unit
    index: int
    join: Join
    reason: str | None
    ends: BranchEnds
    follows: str | None = None  # the sub-layer whose output is this one's input (its shortcut), if one is

    @property
    def name(self) -> str:
        return f"{self.unit.name}#{self.index}"


def sublayers(analysis: Analysis) -> list[Sublayer]:
    """Every residual addition of the reported units, in execution order, with why it cannot go.

    Where the graph is not a torch.fx one, removal replaces the module that ends the branch by a stand-in
    that returns zeros, so a branch that ends in no such module cannot go.
    """
    graph, found = analysis.graph, []
    for unit in analysis.units:
        for k, join in enumerate(sorted(unit.joins, key=lambda j: graph.index[j.node])):
            ends = branch_ends(graph, unit.name, join)
            reason = first_failure(SUBLAYER_RULES, SublayerContext(graph, join, unit=unit))
            if reason is None and graph.traced.frontend != "fx":
                reason = _stand_in_failure(graph, join, ends)
            found.append(Sublayer(unit, k, join, reason, ends))
    found.sort(key=lambda sub: graph.index[sub.join.node])
    outputs = {sub.join.node: sub.name for sub in found}
    for sub in found:  # the shortcut is the previous sub-layer's sum where nothing runs between them
        shortcut = _operands(graph, sub.join)[0]
        sub.follows = next((outputs[n] for n in _through_identities(graph, shortcut) if n in outputs), None)
    return found


def _stand_in_failure(graph: GraphIndex, join: Join, ends: BranchEnds) -> str | None:
    """Why the module that ends the branch cannot be replaced by zeros of the branch's shape, or None."""
    if ends.leaves is None:
        return (
            "its branch does not end in the output of a module called once, which a stand-in could replace; "
            "sub-layer removal without one rewrites the graph, which needs frontend='fx'"
        )
    first = graph.traced.calls[ends.leaves].first_argument
    shape = graph.shape(graph.index[join.node])
    if not isinstance(first, fx.Node) or first not in graph.index or graph.shape(graph.index[first]) != shape:
        return (
            f"the module that ends its branch, {ends.leaves!r}, is not called with a tensor of the branch's shape "
            f"{shape}, so a stand-in cannot return zeros of that shape; sub-layer removal without one rewrites the "
            "graph, which needs frontend='fx'"
        )
    return None
