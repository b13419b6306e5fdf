"""What block discovery reports: one :class:`ResidualBlock` per unit or residual branch, with its parameters
(those its removal frees) and FLOPs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from torch import nn

from .graph import GraphIndex
from .joins import branch_modules
from .sublayers import BranchEnds, Sublayer, sublayers

if TYPE_CHECKING:
    from . import Analysis

__all__ = ["ResidualBlock", "sublayer_blocks", "unit_blocks"]


@dataclasses.dataclass(frozen=True)
class ResidualBlock:
    """One residual unit of a network.

    Attributes:
        name: qualified module name; ``model.get_submodule(name)`` is the unit, and
            replacing it by the identity removes exactly this residual unit.
        type: class name of that module.
        stage: qualified name of the parent module (the container of the unit).
        index: position of the unit among its parent's children.
        order: position of the unit among all units, in execution order.
        removable: whether the unit can be removed under the policy used.
        reason: why not, in words, when ``removable`` is False.
        params: number of parameters that removing this unit alone frees: its own, less those
            of layers the network also runs elsewhere (a module shared with another unit).
            Removing several units that share a layer frees it too, so counts of units that
            share layers do not add up.
        flops: FLOPs of the unit for the example input in fvcore's convention (a multiply-add is
            one FLOP); None if not counted.
        input_shape: shape of the unit's input for the example input.
        output_shape: shape of its output.
        joins: number of residual joins inside the unit.
        modules: qualified names of the modules that hold the unit's parameters: ``(name,)``
            for a block; the layers of the branch for a sub-layer. Criteria score these.
        direct_parameters: parameters a sub-layer's branch reads outside ``modules`` (e.g. a
            layer scale held by the block itself).
        contains: names of the other reported units nested inside this one (removing this
            unit removes them too, so a plan never removes both).
        kind: ``"block"`` (a module) or ``"sublayer"`` (one residual branch of the unit ``unit``).
        unit: the module the unit or branch belongs to (``name`` itself for a block).
        frontend: the capture front-end that found it (``"fx"``, ``"export"``, ``"export-strict"`` or ``"eager"``).
        ends: for a sub-layer, the module calls that bound its branch (:class:`BranchEnds`): where criteria
            read its hidden states and what a stand-in replaces where the graph is not a torch.fx one.
        follows: for a sub-layer, the sub-layer whose output is its input (its shortcut), through operations
            that change nothing; None where anything else runs between them (a projection, a norm).
    """

    name: str
    type: str
    stage: str
    index: int
    order: int
    removable: bool
    reason: str | None
    params: int
    flops: int | None
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    joins: int
    modules: tuple[str, ...] = ()
    direct_parameters: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()
    kind: str = "block"
    unit: str = ""
    frontend: str = "fx"
    ends: BranchEnds | None = None
    follows: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def unit_blocks(model: nn.Module, analysis: Analysis) -> list[ResidualBlock]:
    """The :class:`ResidualBlock` of every unit of an analysis, in execution order."""
    graph, flops = analysis.graph, analysis.graph.traced.flops
    blocks = []
    for order, unit in enumerate(analysis.units):
        name = unit.name
        module = model.get_submodule(name)
        stage, index = _parent_and_index(model, name)
        blocks.append(
            ResidualBlock(
                name=name,
                type=type(module).__name__,
                stage=stage,
                index=index,
                order=order,
                removable=unit.reason is None,
                reason=unit.reason,
                params=_own_parameters(graph, module.parameters(), graph.inside(name)),
                flops=None if flops is None else flops.get(name, 0),
                input_shape=graph.shape(unit.inp) if unit.inp is not None else None,
                output_shape=graph.shape(unit.out),
                joins=len(unit.joins),
                modules=(name,),
                contains=tuple(u.name for u in analysis.units if u.name.startswith(f"{name}.")),
                kind="block",
                unit=name,
                frontend=graph.traced.frontend,
            )
        )
    return blocks


def sublayer_blocks(model: nn.Module, analysis: Analysis) -> list[ResidualBlock]:
    """The :class:`ResidualBlock` of every residual branch of an analysis' units, in execution order."""
    graph, subs = analysis.graph, sublayers(analysis)
    return [
        dataclasses.replace(
            _sublayer_block(model, graph, sub, order),
            contains=tuple(o.name for o in subs if o is not sub and graph.index[o.join.node] in sub.join.branch),
        )
        for order, sub in enumerate(subs)
    ]


def _sublayer_block(model: nn.Module, graph: GraphIndex, sub: Sublayer, order: int) -> ResidualBlock:
    join, flops = sub.join, graph.traced.flops
    modules, tensors = branch_modules(graph, join)
    params = {id(p): p for m in modules for p in model.get_submodule(m).parameters()}
    direct = []
    for target in tensors:
        if target in graph.traced.constants:
            continue  # a constant torch.fx lifted out of the forward, not a parameter of the model
        value = _tensor(model, target)
        if isinstance(value, nn.Parameter):
            params[id(value)] = value
            direct.append(target)
    unit_module = model.get_submodule(sub.unit.name)
    return ResidualBlock(
        name=sub.name,
        type=f"{type(unit_module).__name__} branch",
        stage=sub.unit.name,
        index=sub.index,
        order=order,
        removable=sub.reason is None,
        reason=sub.reason,
        params=_own_parameters(graph, params.values(), set(join.branch)),
        flops=None if flops is None else sum(flops.get(m, 0) for m in modules),
        input_shape=graph.shape(join.fork),
        output_shape=graph.shape(graph.index[join.node]),
        joins=1,
        modules=tuple(modules),
        direct_parameters=tuple(direct),
        kind="sublayer",
        unit=sub.unit.name,
        frontend=graph.traced.frontend,
        ends=sub.ends,
        follows=sub.follows,
    )


def _parent_and_index(model: nn.Module, name: str) -> tuple[str, int]:
    parent, _, child = name.rpartition(".")
    if not name:
        return "", 0
    keys = list(model.get_submodule(parent)._modules)
    return parent, keys.index(child) if child in keys else -1


def _own_parameters(graph: GraphIndex, parameters: Iterable[nn.Parameter], inside: set[int]) -> int:
    """How many of ``parameters`` no node outside ``inside`` uses (a shared layer stays when one user goes)."""
    elsewhere = {
        id(_tensor(graph.traced.root, name))
        for i, node in enumerate(graph.nodes)
        if i not in inside
        for name in graph.ops.weights(node)
    }
    return sum(p.numel() for p in {id(p): p for p in parameters if id(p) not in elsewhere}.values())


def _tensor(root: nn.Module, name: str) -> Any:
    """The attribute ``name`` (a qualified parameter or buffer name) of ``root``."""
    owner, _, attr = name.rpartition(".")
    return getattr(root.get_submodule(owner), attr)
