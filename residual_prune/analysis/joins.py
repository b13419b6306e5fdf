"""Residual joins, the units that hold them, and what a branch is made of.

A *residual join* is an addition of two tensors of the output's shape that share an ancestor,
the *fork*; the side that reaches the join through identities only, else through fewer
operations, is the *shortcut*, the other the *branch*. The *unit* of a join is the innermost
module whose forward holds the join, its branch and its shortcut.
"""

from __future__ import annotations

import dataclasses

import torch.fx as fx
from torch import nn

from .graph import GraphIndex

__all__ = ["Join", "Unit", "branch_modules", "find_joins", "joins_by_unit", "unit_of"]


@dataclasses.dataclass
class Join:
    """One residual addition: its node, the fork, and the node positions of its branch and shortcut."""

    node: fx.Node
    fork: int
    identity: bool
    branch: list[int]
    shortcut: list[int]


@dataclasses.dataclass
class Unit:
    """A module holding residual joins, with why it cannot be removed (None if it can), its input and output."""

    name: str
    joins: list[Join]
    reason: str | None
    inp: int | None
    out: int


def find_joins(graph: GraphIndex) -> list[Join]:
    """Every residual join of the graph, in graph order."""
    joins = []
    for node in graph.nodes:
        operands = graph.ops.add_operands(node)
        if operands is None:
            continue
        out_shape = graph.traced.shapes[node]
        a, b = (graph.index[o] for o in operands)
        if out_shape is None or graph.shape(a) != out_shape or graph.shape(b) != out_shape or a == b:
            continue
        if graph.is_ancestor(a, b):
            fork, short_end, branch_end = a, a, b
        elif graph.is_ancestor(b, a):
            fork, short_end, branch_end = b, b, a
        else:
            common = graph.ancestors[a] & graph.ancestors[b] & graph.data
            if not common:
                continue  # e.g. adding a position embedding: no shared input
            fork = common.bit_length() - 1
            path_a, path_b = graph.between(fork, a), graph.between(fork, b)

            def not_shortcut(path: list[int]) -> tuple[bool, int]:  # an identity path first, then the shorter
                return not all(graph.ops.is_identity(graph.nodes[i]) for i in path), len(path)

            short_end, branch_end = (a, b) if not_shortcut(path_a) <= not_shortcut(path_b) else (b, a)
        shortcut = graph.between(fork, short_end)
        joins.append(
            Join(
                node=node,
                fork=fork,
                identity=all(graph.ops.is_identity(graph.nodes[i]) for i in shortcut),
                branch=_with_private_inputs(graph, graph.between(fork, branch_end)),
                shortcut=shortcut,
            )
        )
    return joins


def _with_private_inputs(graph: GraphIndex, nodes: list[int]) -> list[int]:
    """Add the inputs that only these nodes use and that are not data: the parameters a branch
    reads (``get_attr``) and the shape reads that size its reshapes."""
    members, frontier = set(nodes), list(nodes)
    while frontier:
        for a in graph.nodes[frontier.pop()].all_input_nodes:
            j = graph.index[a]
            private = a.op != "placeholder" and all(graph.index[u] in members for u in a.users)
            if j not in members and not graph.data >> j & 1 and private:
                members.add(j)
                frontier.append(j)
    return sorted(members)


def unit_of(graph: GraphIndex, join: Join) -> str:
    """Innermost module whose forward holds the join, its shortcut and its branch, and trim the branch
    to that module. What the branch reads that was computed before the module was called (a mask
    made from the inputs and passed as an argument) belongs to the caller, but the branch must
    start inside the module, from the fork. The shortcut may pass through identities outside it
    (timm's DLA passes ``project(downsample(x))``, both ``nn.Identity``, as a block's shortcut)."""
    fork = graph.nodes[join.fork]
    for path in reversed(graph.stacks[graph.index[join.node]]):
        inside = graph.made_by(path)
        starts_inside = any(inside >> i & 1 and fork in graph.nodes[i].all_input_nodes for i in join.branch)
        if (
            starts_inside
            and all(inside >> i & 1 or graph.ops.is_identity(graph.nodes[i]) for i in join.shortcut)
            and all(inside >> i & 1 or not graph.ancestors[i] & inside for i in join.branch)
        ):
            join.branch = [i for i in join.branch if inside >> i & 1]
            return path
    return ""


def joins_by_unit(model: nn.Module, graph: GraphIndex, joins: list[Join]) -> dict[str, list[Join]]:
    """The joins of each residual unit (module name -> its joins, in graph order), trimmed by :func:`unit_of`.

    Not residual units: sums of parallel paths without an identity side inside a bigger unit (or
    in the top-level forward), and parameter-free modules written with an addition (e.g. a
    tanh-approximated GELU).
    """
    by_unit: dict[str, list[Join]] = {}
    for join in joins:
        by_unit.setdefault(unit_of(graph, join), []).append(join)
    return {
        name: unit_joins
        for name, unit_joins in by_unit.items()
        if (any(j.identity for j in unit_joins) or (name and not any(name.startswith(f"{o}.") for o in by_unit if o)))
        and any(True for _ in model.get_submodule(name).parameters())
    }


def branch_modules(graph: GraphIndex, join: Join) -> tuple[list[str], list[str]]:
    """The largest modules whose every node lies in the branch, and the parameters/buffers the
    branch reads directly (``get_attr``) outside those modules (e.g. a block's own layer scale)."""
    branch = set(join.branch)
    inside = {path for i in branch for path in graph.stacks[i]}
    whole = {  # shape reads do not count: they go with the tensors they read
        p
        for p in inside
        if all(i in branch for i, stack in enumerate(graph.stacks) if p in stack and graph.carries_tensor(i))
    }
    modules = sorted(p for p in whole if not any(p.startswith(f"{q}.") for q in whole))
    reads = [graph.nodes[i].target for i in branch if graph.nodes[i].op == "get_attr"]  # qualified names (str)
    tensors = sorted({t for t in reads if isinstance(t, str) and not any(t.startswith(f"{m}.") for m in modules)})
    return modules, tensors
