"""Find the residual units of a captured network and decide which can be removed.

A *residual join* is an addition (``a + b``, ``+=``, ``torch.add``, ``Tensor.add``/``add_``)
of two tensors of the output's shape that share an ancestor, the *fork*. The side that
reaches the join through fewer operations is the *shortcut*, the other the *branch*.
The *unit* of a join is the innermost module whose forward holds the join, its branch
and its shortcut; a unit's removal makes that part of the network the identity when:

1. it has one tensor output of the shape of the tensor it gets as first argument (no
   downsampling); extra arguments (a feature size, a mask) may feed its branches,
2. its main path, from output back to that first argument, runs only through the shortcuts of
   identity joins, parameter-free element-wise operations (e.g. the ReLU after the
   addition of a torchvision ``BasicBlock``) and layout operations (reshape, permute, ...)
   that together give back the input, checked by running them on a probe tensor,
3. no branch on that path goes down and back up in resolution (a strided convolution or
   pooling and an upsampling, as in a U-Net-like long skip),
4. it is called once (shared modules cannot be removed in one place only).

Sums of parallel paths without an identity side (e.g. inside an attention module) are
not residual units and are not reported when they lie inside another unit; neither are
parameter-free modules written with an addition (e.g. a hand-written GELU).

Policies are sets of optional rules (:class:`Policy`). ``"default"`` removes every unit
that meets the rules above and lets a unit's main path also run through normalization
layers (a post-norm transformer layer, ``LayerNorm(x + f(x))``, as in BERT). ``"paper"``
keeps the main path free of them and also protects the units immediately before and after
every downsampling (a unit or layer that changes the shape), the conservative rule of
Jordao et al., Appendix A.1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .capture import capture
from .errors import InvalidArgumentError
from .tracing import TracedModel

__all__ = ["ResidualBlock", "find_blocks", "POLICIES", "GRANULARITIES", "analyse", "report", "sublayers"]


@dataclasses.dataclass(frozen=True)
class Policy:
    """A removability policy: the optional rules it applies on top of the rules every unit meets.

    Attributes:
        norms_on_main_path: a unit whose main path runs through normalization layers (post-norm,
            ``LayerNorm(x + f(x))``) may be removed, with them.
        protect_downsampling: the units right before and after a downsampling are kept
            (Jordao et al., Appendix A.1).
    """

    name: str
    norms_on_main_path: bool
    protect_downsampling: bool


_POLICIES = {
    "default": Policy("default", norms_on_main_path=True, protect_downsampling=False),
    "paper": Policy("paper", norms_on_main_path=False, protect_downsampling=True),
}
POLICIES = tuple(_POLICIES)
"""The removability policies: ``"default"`` removes every unit that meets the rules (post-norm units
included), ``"paper"`` keeps normalization off the main path and protects the units next to every
downsampling (see the module docstring and :class:`Policy`)."""
GRANULARITIES = ("block", "sublayer")


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
        flops: FLOPs of the unit for the example input in fvcore's convention (a multiply-add
            is one FLOP); None if not counted.
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
        frontend: the capture front-end that found it (``"fx"``, ``"export"`` or ``"export-strict"``).
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Join:
    node: fx.Node
    fork: int
    identity: bool
    branch: list[int]
    shortcut: list[int]


class _Graph:
    """Index of a traced graph: node positions and ancestor sets as integer bitsets."""

    def __init__(self, traced: TracedModel):
        self.traced = traced
        self.nodes = traced.nodes
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.ops = traced.ops
        self.ancestors: list[int] = []  # through value edges: a shape read (x.shape) does not count
        self.data = 0  # nodes whose values depend on the example inputs (not on defaulted arguments)
        inputs = set(traced.inputs)
        for i, node in enumerate(self.nodes):
            values = [self.index[a] for a in node.all_input_nodes if "tensor_meta" in a.meta]
            bits = 1 << i
            for j in values:
                bits |= self.ancestors[j]
            self.ancestors.append(bits)
            if node in inputs or ("tensor_meta" in node.meta and any(self.data >> j & 1 for j in values)):
                self.data |= 1 << i
        self.stacks = [TracedModel.module_stack(n) for n in self.nodes]
        self._made_by: dict[str, int] = {}
        for i, stack in enumerate(self.stacks):
            for path in stack:
                self._made_by[path] = self._made_by.get(path, 0) | 1 << i

    def made_by(self, path: str) -> int:
        """The nodes the module ``path`` makes, as a bitset."""
        return self._made_by.get(path, 0)

    def is_ancestor(self, a: int, b: int) -> bool:
        return bool(self.ancestors[b] >> a & 1)

    def between(self, fork: int, end: int) -> list[int]:
        """Nodes after ``fork`` on the paths from ``fork`` to ``end`` (``end`` included)."""
        return [i for i in _bits(self.ancestors[end]) if i != fork and self.ancestors[i] >> fork & 1]

    def carries_tensor(self, i: int) -> bool:
        return "tensor_meta" in self.nodes[i].meta

    def data_inputs(self, node: fx.Node) -> list[int]:
        """Positions of the inputs of ``node`` whose values depend on the example inputs."""
        return [self.index[a] for a in node.all_input_nodes if self.data >> self.index[a] & 1]

    def shape(self, i: int) -> tuple[int, ...] | None:
        return self.traced.shapes[self.nodes[i]]


def _bits(x: int) -> Iterator[int]:
    while x:
        low = x & -x
        yield low.bit_length() - 1
        x ^= low


def _unet_skip(graph: _Graph, branch: list[int]) -> str | None:
    """Describe the resampling if the branch goes down and back up in resolution (a U-Net-like long skip).

    A branch that only reduces the resolution of keys and values (PVT's spatial-reduction
    attention) keeps its output at the input's resolution without upsampling: not a long skip.
    """
    ops = [op for op in (graph.ops.resampling(graph.nodes[i]) for i in sorted(branch)) if op]
    if not any(kind == "up" for kind, _ in ops):
        return None
    return ", ".join(description for _, description in ops[:3]) + (", ..." if len(ops) > 3 else "")


def _find_joins(graph: _Graph) -> list[_Join]:
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
            short_end, branch_end = (a, b) if len(path_a) <= len(path_b) else (b, a)
        shortcut = graph.between(fork, short_end)
        joins.append(
            _Join(
                node=node,
                fork=fork,
                identity=all(graph.ops.is_identity(graph.nodes[i]) for i in shortcut),
                branch=_with_private_inputs(graph, graph.between(fork, branch_end)),
                shortcut=shortcut,
            )
        )
    return joins


def _with_private_inputs(graph: _Graph, nodes: list[int]) -> list[int]:
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


def _unit_of(graph: _Graph, join: _Join) -> str:
    """Innermost module whose forward holds the join, its shortcut and its branch, and trim the branch
    to that module. What the branch reads that was computed before the module was called (a mask
    made from the inputs and passed as an argument) belongs to the caller, but the branch must
    start inside the module, from the fork."""
    fork = graph.nodes[join.fork]
    for path in reversed(graph.stacks[graph.index[join.node]]):
        inside = graph.made_by(path)
        starts_inside = any(inside >> i & 1 and fork in graph.nodes[i].all_input_nodes for i in join.branch)
        if (
            starts_inside
            and all(inside >> i & 1 for i in join.shortcut)
            and all(inside >> i & 1 or not graph.ancestors[i] & inside for i in join.branch)
        ):
            join.branch = [i for i in join.branch if inside >> i & 1]
            return path
    return ""


def _describe(graph: _Graph, nodes: Iterable[int]) -> str:
    names = []
    for i in nodes:
        label = graph.ops.label(graph.nodes[i])
        if label not in names:
            names.append(label)
    return ", ".join(f"`{n}`" for n in names[:3]) + (", ..." if len(names) > 3 else "")


def _check_unit(
    graph: _Graph, name: str, joins: list[_Join], all_joins: dict[int, _Join], policy: Policy
) -> tuple[str | None, int | None, int | None]:
    """Return (reason or None, input node, output node) for one unit under ``policy``.

    ``all_joins`` (node position -> join) lets the main path pass through the joins of
    units nested in this one (e.g. a conditional position encoding ``x + conv(x)``
    before the attention residual).
    """
    if name == "":
        return (
            "the residual addition is in the model's top-level forward; there is no submodule to remove",
            None,
            None,
        )
    inside = sorted(_inside(graph, name))
    inside_set = set(inside)
    inputs = {a for i in inside for a in graph.data_inputs(graph.nodes[i]) if a not in inside_set}
    outputs = [i for i in inside if any(graph.index[u] not in inside_set for u in graph.nodes[i].users)]
    call = graph.traced.calls.get(name)
    first = graph.index.get(call.first_argument) if call is not None and call.first_argument is not None else None
    # extra tensor arguments (a mask, position embeddings) may feed its branches: the unit's input is the
    # tensor it gets first, and the main path must lead back to it
    inp = first if first in inputs else (next(iter(inputs)) if len(inputs) == 1 else None)
    single = inp is not None and len(outputs) == 1
    calls = graph.traced.call_counts.get(name, 1)
    if calls > 1:  # the nodes of every call count as inside: the input/output count would blame the sharing
        return (
            f"the module is called {calls} times (shared weights); removing it would change every call",
            *((inp, outputs[0]) if single else (None, None)),
        )
    if not single:
        return (
            f"it takes {len(inputs)} inputs, none of them as its first argument, and gives {len(outputs)} outputs; "
            "only units called as `out = block(x, ...)` with one output can be replaced by the identity",
            None,
            None,
        )
    assert inp is not None
    (out,) = outputs
    if call is None or call.first_argument is not graph.nodes[inp] or not call.returns_one_value:
        return (
            "it is not called as `out = block(x, ...)` with the tensor first and a single tensor returned "
            "(e.g. it returns a tuple), so a stand-in cannot replace it",
            inp,
            out,
        )
    in_shape, out_shape = graph.shape(inp), graph.shape(out)
    if in_shape != out_shape:
        projections = [j for j in joins if not j.identity]
        how = (
            f"projection shortcut {_describe(graph, projections[0].shortcut)}"
            if projections
            else "no identity shortcut"
        )
        return (f"it carries downsampling: shape {in_shape} -> {out_shape} ({how})", inp, out)
    # walk the main path from the output back to the input
    path, cur = [], out
    while cur != inp:
        if cur not in inside_set:
            return (
                f"its main path leads to {_describe(graph, [cur])}, not to the tensor it gets as first argument, so a "
                "stand-in returning its first argument cannot replace it",
                inp,
                out,
            )
        path.append(cur)
        join = all_joins.get(cur)
        if join is not None:
            if not join.identity:
                return (f"its shortcut is not the identity: {_describe(graph, join.shortcut)}", inp, out)
            resampling = _unet_skip(graph, join.branch)
            if resampling:
                return (
                    f"its residual branch goes down and back up in resolution ({resampling}), like a U-Net long skip",
                    inp,
                    out,
                )
            cur = join.fork
            continue
        node = graph.nodes[cur]
        tensors = graph.data_inputs(node)
        keeps_shape = len(tensors) == 1 and graph.shape(cur) == graph.shape(tensors[0])
        weighted = graph.ops.reads_state(node) and not (policy.norms_on_main_path and graph.ops.is_norm(node))
        if weighted or len(tensors) != 1 or not (keeps_shape or graph.ops.is_layout(node)):
            return (
                f"{_describe(graph, [cur])} on its main path is outside any residual branch, so "
                "removing the unit would remove more than a residual branch",
                inp,
                out,
            )
        cur = tensors[0]
    if not _main_path_is_identity(graph, inp, path[::-1], all_joins):
        return (
            "its main path rearranges the tensor (e.g. a permute that is not undone), so removing the unit "
            "would change the layout",
            inp,
            out,
        )
    return None, inp, out


def _main_path_is_identity(graph: _Graph, inp: int, path: list[int], joins: dict[int, _Join]) -> bool:
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
            values[node] = graph.ops.run(node, args, kwargs)
    result = values[graph.nodes[path[-1]]]
    return isinstance(result, torch.Tensor) and result.shape == probe.shape and torch.equal(result, probe)


def _paper_protected(units: list[_Unit], graph: _Graph) -> list[_Unit]:
    """Units right before or after a downsampling (Jordao et al., Appendix A.1)."""
    placed = sorted(((u, u.inp) for u in units if u.inp is not None), key=lambda pair: pair[0].out)
    protected: dict[str, _Unit] = {}
    for u, u_inp in placed:
        before = [(p, p_inp) for p, p_inp in placed if p is not u and graph.is_ancestor(p.out, u_inp)]
        if not before:
            continue
        p, p_inp = max(before, key=lambda pair: pair[0].out)
        p_in, p_out = graph.shape(p_inp), graph.shape(p.out)
        u_in, u_out = graph.shape(u_inp), graph.shape(u.out)
        if p_in != p_out or p_out != u_in or u_in != u_out:  # a downsampling in, between or after
            protected.update({u.name: u, p.name: p})
    return list(protected.values())


def _parent_and_index(model: nn.Module, name: str) -> tuple[str, int]:
    parent, _, child = name.rpartition(".")
    if not name:
        return "", 0
    keys = list(model.get_submodule(parent)._modules)
    return parent, keys.index(child) if child in keys else -1


def find_blocks(
    model: nn.Module,
    example_inputs: Any,
    *,
    policy: str = "default",
    leaf_modules: Iterable[type[nn.Module]] = (),
    granularity: str = "block",
    count_flops: bool = True,
    frontend: str = "auto",
) -> list[ResidualBlock]:
    """Capture ``model``'s graph and report one :class:`ResidualBlock` per residual unit.

    Args:
        model: any ``nn.Module`` that torch.fx or torch.export can capture (timm's and
            torchvision's not-trace registrations are used by torch.fx), also one built on the
            ``meta`` device (torch.export only: nothing is computed).
        example_inputs: what the model is called with: a tensor, a tuple of positional
            arguments (tensors or lists of tensors), or a dict of keyword arguments
            (``model(**example_inputs)``, as Hugging Face models take ``input_ids``); used for
            shapes and FLOPs (torch.fx runs the model once, under ``no_grad`` in eval mode;
            torch.export runs it on fake tensors).
        policy: ``"default"`` or ``"paper"`` (see the module docstring).
        leaf_modules: extra module classes to keep opaque while tracing with torch.fx.
        granularity: ``"block"`` (module-level units) or ``"sublayer"``: each residual branch
            on its own, named ``"<unit>#<k>"`` for the k-th addition of the unit (e.g. the
            attention and the MLP branch of a transformer block, ``blocks.3#0`` and
            ``blocks.3#1``); removing one rewrites the traced graph.
        count_flops: count each unit's FLOPs (fvcore's convention: a multiply-add is one
            FLOP) in the same pass; ``False`` reports ``flops=None`` and saves that time.
        frontend: ``"auto"`` (torch.fx where it applies, then torch.export), ``"fx"``,
            ``"export"`` (non-strict) or ``"export-strict"``; each block records which one found it.
            ``granularity="sublayer"`` needs torch.fx.

    Returns:
        The units in execution order, removable or not; ``reason`` says why not.
            A model without residual joins (VGG, AlexNet) gives an empty list.
    """
    return discover(
        model,
        example_inputs,
        policy=policy,
        leaf_modules=leaf_modules,
        granularity=granularity,
        count_flops=count_flops,
        frontend=frontend,
    )[1]


def discover(
    model: nn.Module,
    example_inputs: Any,
    *,
    policy: str = "default",
    leaf_modules: Iterable[type[nn.Module]] = (),
    granularity: str = "block",
    count_flops: bool = True,
    frontend: str = "auto",
) -> tuple[Analysis, list[ResidualBlock]]:
    """:func:`find_blocks`, also returning the analysis behind it (for callers that go on to prune)."""
    if granularity not in GRANULARITIES:
        raise InvalidArgumentError(f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")
    analysis = analyse(
        model,
        example_inputs,
        policy=policy,
        leaf_modules=leaf_modules,
        count_flops=count_flops,
        frontend=frontend,
        sublayers=granularity == "sublayer",
    )
    return analysis, report(model, analysis, granularity)


def report(model: nn.Module, analysis: Analysis, granularity: str) -> list[ResidualBlock]:
    """The :class:`ResidualBlock` of every unit (or residual branch) of an analysis, in execution order."""
    if not analysis.units:
        return []
    flops = analysis.graph.traced.flops
    if granularity == "sublayer":
        subs = sublayers(analysis)
        graph = analysis.graph
        return [
            dataclasses.replace(
                _sublayer_block(model, analysis, sub, order, flops),
                contains=tuple(o.name for o in subs if o is not sub and graph.index[o.join.node] in sub.join.branch),
            )
            for order, sub in enumerate(subs)
        ]
    graph, blocks = analysis.graph, []
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
                params=_own_parameters(graph, module.parameters(), _inside(graph, name)),
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


@dataclasses.dataclass
class _Unit:
    name: str
    joins: list[_Join]
    reason: str | None
    inp: int | None
    out: int


@dataclasses.dataclass
class Analysis:
    """Block discovery's view of a traced model: the graph and its residual units in execution order."""

    graph: _Graph
    units: list[_Unit]


def analyse(
    model: nn.Module,
    inputs: Any,
    *,
    policy: str = "default",
    leaf_modules: Iterable[type[nn.Module]] = (),
    count_flops: bool = False,
    training: bool = False,
    frontend: str = "auto",
    sublayers: bool = False,
) -> Analysis:
    """Capture ``model`` and find its residual units (the work behind :func:`find_blocks`);
    ``training=True`` analyses its train-mode graph (see :func:`~residual_prune.tracing.trace`);
    ``sublayers=True`` asks for a front-end whose graph sub-layer removal can rewrite (torch.fx)."""
    if policy not in POLICIES:
        raise InvalidArgumentError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    traced = capture(
        model,
        inputs,
        frontend=frontend,
        leaf_modules=leaf_modules,
        count_flops=count_flops,
        training=training,
        needs_fx=sublayers,
    )
    graph = _Graph(traced)
    joins = _find_joins(graph)
    all_joins = {graph.index[j.node]: j for j in joins}
    by_unit: dict[str, list[_Join]] = {}
    for join in joins:
        by_unit.setdefault(_unit_of(graph, join), []).append(join)
    # not residual units: sums of parallel paths inside a bigger unit (or in the top-level forward),
    # and parameter-free modules written with an addition (e.g. a tanh-approximated GELU)
    by_unit = {
        name: unit_joins
        for name, unit_joins in by_unit.items()
        if (any(j.identity for j in unit_joins) or (name and not any(name.startswith(f"{o}.") for o in by_unit if o)))
        and any(True for _ in model.get_submodule(name).parameters())
    }
    units = []
    for name, unit_joins in by_unit.items():
        reason, inp, out = _check_unit(graph, name, unit_joins, all_joins, _POLICIES[policy])
        last = max(graph.index[j.node] for j in unit_joins)
        units.append(_Unit(name, unit_joins, reason, inp, out if out is not None else last))
    if _POLICIES[policy].protect_downsampling:
        for unit in _paper_protected(units, graph):
            if unit.reason is None:
                unit.reason = PAPER_REASON
    units.sort(key=lambda u: u.out)
    return Analysis(graph, units)


PAPER_REASON = "policy='paper' protects the units right before and after a downsampling (Jordao et al., Appendix A.1)"


@dataclasses.dataclass
class Sublayer:
    """One residual branch: the k-th addition of a unit."""

    name: str
    unit: _Unit
    join: _Join
    reason: str | None


def sublayers(analysis: Analysis) -> list[Sublayer]:
    """Every residual addition of the reported units, in execution order, with why it cannot go."""
    graph, found = analysis.graph, []
    for unit in analysis.units:
        for k, join in enumerate(sorted(unit.joins, key=lambda j: graph.index[j.node])):
            found.append(Sublayer(f"{unit.name}#{k}", unit, join, _check_sublayer(graph, unit, join)))
    found.sort(key=lambda sub: graph.index[sub.join.node])
    return found


def _check_sublayer(graph: _Graph, unit: _Unit, join: _Join) -> str | None:
    if unit.reason == PAPER_REASON:
        return PAPER_REASON
    if not join.identity:
        return f"its shortcut is not the identity: {_describe(graph, join.shortcut)}"
    resampling = _unet_skip(graph, join.branch)
    if resampling:
        return f"its branch goes down and back up in resolution ({resampling}), like a U-Net long skip"
    private = set(join.branch) | {graph.index[join.node]}
    shared = [  # shape reads (x.shape) of branch tensors do not count
        i
        for i in join.branch
        if any(graph.index[u] not in private and "tensor_meta" in u.meta for u in graph.nodes[i].users)
    ]
    if shared:
        return f"{_describe(graph, shared)} in its branch is also used outside it"
    modules, tensors = branch_modules(graph, join)
    layers = [i for i in join.branch if graph.ops.weights(graph.nodes[i])]
    if layers and not modules and not [t for t in tensors if t not in graph.traced.constants]:
        return (
            f"its layers ({_describe(graph, layers)}) also run outside it (a module called more than once), so "
            "removing this branch alone would remove no layer"
        )
    return None


def _inside(graph: _Graph, name: str) -> set[int]:
    """Positions of the nodes the module ``name`` makes."""
    return set(_bits(graph.made_by(name)))


def _own_parameters(graph: _Graph, parameters: Iterable[nn.Parameter], inside: set[int]) -> int:
    """How many of ``parameters`` no node outside ``inside`` uses (a shared layer stays when one user goes)."""
    root = graph.traced.root
    elsewhere = {
        id(_tensor(root, name))
        for i, node in enumerate(graph.nodes)
        if i not in inside
        for name in graph.ops.weights(node)
    }
    return sum(p.numel() for p in {id(p): p for p in parameters if id(p) not in elsewhere}.values())


def _tensor(root: nn.Module, name: str) -> Any:
    owner, _, attr = name.rpartition(".")
    return getattr(root.get_submodule(owner), attr)


def branch_modules(graph: _Graph, join: _Join) -> tuple[list[str], list[str]]:
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


def _sublayer_block(
    model: nn.Module, analysis: Analysis, sub: Sublayer, order: int, flops: dict[str, int] | None
) -> ResidualBlock:
    graph, join = analysis.graph, sub.join
    modules, tensors = branch_modules(graph, join)
    params = {id(p): p for m in modules for p in model.get_submodule(m).parameters()}
    direct = []
    for target in tensors:
        if target in graph.traced.constants:
            continue  # a constant torch.fx lifted out of the forward, not a parameter of the model
        owner, _, attr = target.rpartition(".")
        value = getattr(model.get_submodule(owner), attr)
        if isinstance(value, nn.Parameter):
            params[id(value)] = value
            direct.append(target)
    unit_module = model.get_submodule(sub.unit.name)
    return ResidualBlock(
        name=sub.name,
        type=f"{type(unit_module).__name__} branch",
        stage=sub.unit.name,
        index=int(sub.name.rpartition("#")[2]),
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
    )
