"""Sub-layer pruning: remove single residual branches by rewriting the traced graph.

Each removed residual addition is replaced by its shortcut and the branch's own nodes are
erased, nothing else: every other node stays, in-place operations whose result is unused
included (``x.add_(pos)`` in torchvision's MViT). What outside the branch reads only the
*sizes* of its tensors goes with it: a check on them (``torch._assert(N == 1 + H * W)`` in
timm's CoaT) is erased, and a size the kept network goes on to use (the feature size timm's
MViTv2 passes to the next block) keeps its traced value, if that value is the same for
another batch size; the pruned graph then refuses inputs whose shape, apart from the batch
size, is not the plan's. Any other use of a branch value outside the branch is refused
(:class:`~residual_prune.errors.PlanError`), so a branch is never half removed. The modules
and parameters only the erased nodes used are deleted.

Train and eval mode: the model is traced in eval mode and in train mode, and the branches
are removed from both graphs. Where the two differ (Python ``if self.training:`` code,
``F.dropout(x, p, training=self.training)``, ...) the result is a :class:`DualGraphModule`,
which runs the train-mode graph while ``training`` is set; otherwise it is a plain
``torch.fx.GraphModule``. Modules (dropout, batch norm, timm's ``DropPath``, torchvision's
``StochasticDepth``) keep their own train/eval behaviour either way. A pruned model in train
mode thus computes what the original computes in train mode without the removed branches:
from the same RNG state, the same dropout masks and drop paths and the same batch-norm
running statistics.

Limits:

* Random ops inside a removed branch no longer draw numbers, so the random ops after it see
  the RNG stream shifted against an original that still runs the branch and multiplies it
  by zero (same distribution, other masks).
* If the train-mode forward cannot be traced, or a branch is not removable in it, the pruned
  model works in eval mode and refuses to run in train mode (:class:`TraceError`, saying why).
* A :class:`DualGraphModule`'s ``graph`` and ``code`` are its eval-mode ones
  (``train_graph`` and ``train_code`` the others): editing ``graph`` and calling
  ``recompile()`` changes eval mode only, and ``torch.jit.script`` cannot compile its mode
  switch (``torch.jit.trace``, ``torch.compile`` and ``torch.export`` can).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .analysis import analyse, sublayers
from .analysis.joins import branch_modules
from .dual_graph import DualGraphModule
from .errors import InvalidArgumentError, PlanError, PlanMismatchError, ResidualPruneError
from .modes import eval_mode, model_state_kept, rng_forked
from .ops import fx_add_operands as add_operands
from .ops import unread
from .plan import PruningPlan
from .tracing import TracedModel, check_leaf_modules, get_notrace_modules

__all__ = [
    "DualGraphModule",
    "leaf_module_names",
    "remove_sublayers",
    "resolve_leaf_modules",
    "zero_sublayers",
]


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def leaf_module_names(classes: Iterable[type[nn.Module]]) -> list[str]:
    """``module:QualName`` of each class, so a plan can name the leaves it was traced with."""
    return sorted(_class_name(c) for c in classes)


def resolve_leaf_modules(
    names: Iterable[str], model: nn.Module, leaf_modules: Iterable[type[nn.Module]] = ()
) -> tuple[type[nn.Module], ...]:
    """The classes to keep opaque when tracing ``model`` for a plan: those the plan's ``names``
    (``module:QualName``) stand for, then the caller's ``leaf_modules``.

    A plan is data: its names are looked up, never imported, among the classes of ``model``'s
    modules (base classes included), the registered not-trace modules (this library's, timm's,
    torchvision's) and ``leaf_modules``, which also match by class name alone (a class the plan
    saw under another module, e.g. ``__main__``).

    Raises:
        PlanMismatchError: a name matches none of these classes.
    """
    given = check_leaf_modules(leaf_modules)
    known: dict[str, type[nn.Module]] = {}
    for cls in (*given, *(c for m in model.modules() for c in type(m).__mro__), *get_notrace_modules()):
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            known.setdefault(_class_name(cls), cls)
    by_qualname = {c.__qualname__: c for c in given}
    classes: list[type[nn.Module]] = []
    unknown: list[str] = []
    for name in names:
        found = known.get(name) or by_qualname.get(name.partition(":")[2])
        if found is None:
            unknown.append(name)
        else:
            classes.append(found)
    if unknown:
        raise PlanMismatchError(
            f"the plan was made with {', '.join(unknown)} kept opaque (leaf_modules), but no module of this "
            f"{type(model).__name__} is of that class, and classes a plan names are never imported. Pass the "
            "classes the plan was made with: leaf_modules=(TheClass, ...)"
        )
    return tuple(dict.fromkeys((*classes, *given)))


def _join_operands(join: fx.Node) -> tuple[fx.Node, fx.Node]:
    """The two operands of a residual addition (a join stays an addition while branches are removed)."""
    operands = add_operands(join)
    assert operands is not None, f"{join.name} is a residual addition"
    return operands


@dataclasses.dataclass
class _Branch:
    name: str
    join: fx.Node
    branch: fx.Node  # the branch's output: the operand of the addition that is not the shortcut
    nodes: set[fx.Node]
    modules: frozenset[str]  # the modules and parameters only the branch uses

    def shortcut(self) -> fx.Node:
        """The other operand, read when needed: removing an earlier branch may have replaced it."""
        return next(a for a in _join_operands(self.join) if a is not self.branch)


def _replay_arguments(
    model: nn.Module, plan: PruningPlan, example_inputs: Any, leaf_modules: Iterable[type[nn.Module]]
) -> tuple[tuple[torch.Tensor, ...], tuple[type[nn.Module], ...]]:
    """The inputs and leaf classes to trace ``model`` with as the plan was made."""
    from .plan_check import plan_inputs  # plan_check imports this module

    plan.check_fields()
    inputs = plan_inputs(model, plan, example_inputs)
    if not inputs.is_tensor_tuple:
        raise InvalidArgumentError(
            f"sub-layer removal rewrites the torch.fx graph, which takes positional tensor inputs, not "
            f"{inputs.describe()}; use a plan with granularity='block'"
        )
    return inputs.args, resolve_leaf_modules(plan.leaf_modules, model, leaf_modules)


def _traced_branches(
    model: nn.Module,
    plan: PruningPlan,
    inputs: tuple[torch.Tensor, ...],
    leaves: tuple[type[nn.Module], ...],
    *,
    training: bool = False,
) -> tuple[TracedModel, list[_Branch]]:
    """Trace ``model`` (its train-mode forward if ``training``) and find the branches the plan removes."""
    analysis = analyse(model, inputs, policy=plan.policy, leaf_modules=leaves, training=training, frontend="fx")
    found = {sub.name: sub for sub in sublayers(analysis)}
    missing = [name for name in plan.removed if name not in found]
    if missing:
        raise PlanMismatchError(
            f"the model has no residual branch {', '.join(missing)}; apply the plan to the architecture it was made for"
        )
    graph, branches = analysis.graph, []
    for name in plan.removed:
        sub = found[name]
        if sub.reason is not None:
            raise PlanMismatchError(f"the residual branch {name} cannot be removed: {sub.reason}")
        members = {graph.nodes[i] for i in sub.join.branch}
        a, b = _join_operands(sub.join.node)
        modules, tensors = branch_modules(graph, sub.join)
        branches.append(_Branch(name, sub.join.node, a if a in members else b, members, frozenset(modules + tensors)))
    return graph.traced, branches


_INPLACE_OPERATORS = {
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.setitem,
    operator.delitem,
}


def _mutates(root: nn.Module, node: fx.Node) -> bool:
    """Whether ``node`` may write into one of its inputs."""
    if node.op == "call_method":
        assert isinstance(node.target, str), "fx: a call_method's target is the method's name"
        return node.target.endswith("_") and not node.target.endswith("__")
    if node.op == "call_function":
        return (
            node.target in _INPLACE_OPERATORS
            or bool(node.kwargs.get("inplace"))
            or (getattr(node.target, "__name__", "").endswith("_"))
        )
    if node.op == "call_module":
        assert isinstance(node.target, str), "fx: a call_module's target is the module's qualified name"
        return bool(getattr(root.get_submodule(node.target), "inplace", False))
    return False


def _goes_with_the_branch(root: nn.Module, node: fx.Node) -> bool:
    """Whether ``node``, which reads a removed branch, can go with it: a size, a check on sizes
    (``torch._assert``), an output of the branch's calls that nothing reads; nothing that computes a
    tensor, returns, calls a module or writes."""
    if unread(node):
        return True
    return "tensor_meta" not in node.meta and node.op not in ("output", "call_module") and not _mutates(root, node)


def _outside_readers(root: nn.Module, branch: _Branch, removed: set[fx.Node]) -> tuple[set[fx.Node], set[fx.Node]]:
    """What reads ``branch`` outside the removed branches: the nodes that go with it (sizes of its
    tensors and the checks on them, e.g. ``torch._assert(q.shape[2] == n)`` in timm's CoaT), and,
    among those, the sizes the kept network goes on to use (e.g. the feature size timm's MViTv2
    passes to the next block), which keep their traced values.

    Raises:
        PlanError: the kept network uses a tensor computed in the branch, or a size without a
            traced value.
    """
    dead: set[fx.Node] = set()
    sizes: set[fx.Node] = set()
    frontier = [(u, n) for n in branch.nodes for u in n.users if u not in removed]
    while frontier:
        node, source = frontier.pop()
        if node in dead:
            continue
        if _goes_with_the_branch(root, node):
            dead.add(node)
            frontier.extend((u, node) for u in node.users if u not in removed)
        elif source in branch.nodes or "value" not in source.meta:
            raise PlanError(
                f"the residual branch {branch.name} cannot be removed: `{node.name}`, outside it, uses "
                f"`{source.name}`, a value computed in it, so removing the branch would change or break the rest "
                "of the network; remove other branches"
            )
        else:
            sizes.add(source)
    return dead, sizes


class _Recorder(fx.Interpreter):
    """Runs a GraphModule and keeps the values of some of its nodes."""

    def __init__(self, gm: fx.GraphModule, wanted: set[fx.Node]):
        super().__init__(gm)
        self.wanted = wanted
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if n in self.wanted:
            self.values[n] = result
        return result


def _check_batch_invariant(traced: TracedModel, inputs: tuple[torch.Tensor, ...], sizes: dict[fx.Node, str]) -> None:
    """Refuse (:class:`PlanError`) unless the ``sizes`` (node -> branch name) have their traced values
    for a batch one larger too: they are fixed in the pruned graph."""
    larger = tuple(torch.cat((t, t[:1])) if t.dim() else t for t in inputs)
    recorder = _Recorder(traced.graph_module, set(sizes))
    try:
        with torch.no_grad(), model_state_kept(traced.root), eval_mode(traced.root):
            recorder.run(*larger)
    except Exception as exc:  # the model may not accept another batch size
        recorder.values = {}
        failure = f" (the model fails on a batch of {larger[0].shape[0]}: {type(exc).__name__}: {exc})"
    else:
        failure = ""
    for node, name in sizes.items():
        if not all(t.dim() for t in inputs) or recorder.values.get(node) != node.meta["value"]:
            raise PlanError(
                f"the residual branch {name} cannot be removed: the rest of the network uses `{node.name}` = "
                f"{node.meta['value']!r}, a size of a tensor in the branch that may depend on the batch size{failure}; "
                "remove other branches"
            )


def _traced_value_for(size: fx.Node) -> Callable[[fx.Node], Any]:
    """For ``fx.node.map_arg``: ``size``'s traced value in place of ``size``, any other node unchanged."""
    return lambda node: size.meta["value"] if node is size else node


def _fix_sizes(graph: fx.Graph, sizes: dict[fx.Node, str], inputs: tuple[torch.Tensor, ...]) -> None:
    """Give the kept users of ``sizes`` their traced values, and make the graph refuse inputs of
    other shapes than ``inputs`` (but any batch size), for which those values would be wrong."""
    for size in sizes:
        traced_value = _traced_value_for(size)
        for user in list(size.users):
            user.args = fx.node.map_arg(user.args, traced_value)
            user.kwargs = fx.node.map_arg(user.kwargs, traced_value)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"][: len(inputs)]
    first = next(n for n in graph.nodes if n.op != "placeholder")
    names = ", ".join(sorted(set(sizes.values())))
    with graph.inserting_before(first):
        for placeholder, t in zip(placeholders, inputs):
            shape = tuple(t.shape[1:])
            tail = graph.call_function(operator.getitem, (graph.call_method("size", (placeholder,)), slice(1, None)))
            message = (
                f"this model was pruned (residual branches {names}) for inputs of shape (batch, "
                f"{', '.join(map(str, shape))}); prune it with example inputs of the shape you use"
            )
            graph.call_function(torch._assert, (graph.call_function(operator.eq, (tail, shape)), message))


def _remove_branches(
    traced: TracedModel, root: nn.Module, branches: list[_Branch], inputs: tuple[torch.Tensor, ...]
) -> None:
    """Replace each branch's addition by its shortcut and erase exactly the branch's nodes (and what
    reads only their sizes); everything else stays, whatever its purity."""
    graph = traced.graph
    inner = set().union(*(b.nodes for b in branches))
    removed = inner | {b.join for b in branches}
    sizes: dict[fx.Node, str] = {}
    for b in branches:
        dead, kept_sizes = _outside_readers(root, b, removed)
        removed |= dead
        sizes.update(dict.fromkeys(kept_sizes, b.name))
    if sizes:
        _check_batch_invariant(traced, inputs, sizes)
        _fix_sizes(graph, sizes, inputs)
    for b in branches:
        if b.join in inner:
            continue  # inside another removed branch: erased with it
        shortcut = b.shortcut()
        if any(_mutates(root, user) for user in b.join.users):
            # the addition made a fresh tensor that an in-place op (e.g. ReLU(inplace=True)) then
            # overwrote: keep the shortcut itself intact
            with graph.inserting_before(b.join):
                shortcut = graph.call_method("clone", (shortcut,))
        b.join.replace_all_uses_with(shortcut)
    for node in reversed(list(graph.nodes)):
        if node in removed:
            graph.erase_node(node)


def remove_sublayers(
    model: nn.Module,
    plan: PruningPlan,
    *,
    example_inputs: Any = None,
    leaf_modules: Iterable[type[nn.Module]] = (),
) -> fx.GraphModule:
    """Return ``model`` as a GraphModule without the residual branches of a sub-layer plan.

    Each removed addition is replaced by its shortcut; exactly the branch's nodes, and the
    modules and parameters only they used, are deleted (see the module docstring). The
    model is traced on ``example_inputs`` (default: zeros of the plan's input shapes and
    dtypes) in eval and in train mode; where the two graphs differ the result is a
    :class:`DualGraphModule`. Modules are shared with ``model`` (pass a copy).

    Raises:
        PlanMismatchError: a branch is not a removable branch of this model, or a leaf module
            the plan names is not found (pass it in ``leaf_modules``).
        PlanError: something outside a branch uses a value computed in it.
    """
    inputs, leaves = _replay_arguments(model, plan, example_inputs, leaf_modules)
    traced, branches = _traced_branches(model, plan, inputs, leaves)
    train, refusal = _train_mode_branches(model, plan, inputs, leaves, traced.graph, branches)
    _remove_branches(traced, model, branches, inputs)
    if train is not None:
        try:
            with rng_forked((model,)):  # a train-mode run draws random numbers
                _remove_branches(train.traced, model, train.branches, inputs)
        except PlanError as exc:
            train, refusal = None, f"in train mode, {exc}"
    for graph in (traced.graph, None if train is None else train.graph):
        if graph is not None:
            graph._tracer_cls = _UnpicklingTracer
    for kept in (traced, None if train is None else train.traced):
        if kept is not None:
            kept.attach_constants(model)
    name = type(model).__name__
    if train is not None and _source(train.graph) == _source(traced.graph):
        return fx.GraphModule(model, traced.graph, class_name=name)
    return DualGraphModule(
        model, traced.graph, None if train is None else train.graph, class_name=name, train_refusal=refusal
    )


class _UnpicklingTracer(fx.Tracer):
    """The tracer a pruned model's graphs name, with which torch.fx re-traces a GraphModule's code
    when unpickling it (the library's own tracer takes arguments).

    It drops fx's ``is_wrapped`` mark from torch's own functions (``_assert_is_none``, which
    tracing with defaulted arguments inserts): the regenerated code would register them for
    wrapping under a dotted name, which makes every later torch.fx trace in the process fail
    with a KeyError (a torch.fx bug).
    """

    def trace(self, root: Any, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        graph = super().trace(root, concrete_args)
        for node in graph.nodes:
            module = getattr(node.target, "__module__", None) or ""
            if node.op == "call_function" and (module == "torch" or module.startswith("torch.")):
                node.meta.pop("is_wrapped", None)
        return graph


@dataclasses.dataclass
class _TrainMode:
    traced: TracedModel
    branches: list[_Branch]

    @property
    def graph(self) -> fx.Graph:
        return self.traced.graph


def _train_mode_branches(
    model: nn.Module,
    plan: PruningPlan,
    inputs: tuple[torch.Tensor, ...],
    leaves: tuple[type[nn.Module], ...],
    eval_graph: fx.Graph,
    eval_branches: list[_Branch],
) -> tuple[_TrainMode | None, str | None]:
    """The train-mode graph and its branches of the plan, or None and why they cannot be had."""
    try:
        with rng_forked((model,)):  # a train-mode run draws random numbers
            traced, branches = _traced_branches(model, plan, inputs, leaves, training=True)
    except ResidualPruneError as exc:
        return None, f"its train-mode forward cannot be analysed: {exc}"
    for e, t in zip(eval_branches, branches):
        differ = [m for m in e.modules - t.modules if _uses(traced.graph, m)]
        differ += [m for m in t.modules - e.modules if _uses(eval_graph, m)]
        if differ:
            return None, (
                f"in train mode, residual branch {e.name} is made of other layers than in eval mode "
                f"({', '.join(sorted(differ))} in one mode's branch only)"
            )
    return _TrainMode(traced, branches), None


def _uses(graph: fx.Graph, target: str) -> bool:
    """Whether ``graph`` calls or reads the module or tensor ``target`` (or anything inside it)."""
    return any(
        n.op in ("call_module", "get_attr") and (n.target == target or n.target.startswith(f"{target}."))
        for n in graph.nodes
    )


def _source(graph: fx.Graph) -> str:
    return graph.python_code(root_module="self").src


def zero_sublayers(
    model: nn.Module,
    plan: PruningPlan,
    *,
    example_inputs: Any = None,
    leaf_modules: Iterable[type[nn.Module]] = (),
) -> fx.GraphModule:
    """``model`` (traced in eval mode) with the plan's branches multiplied out (``x + 0``): the
    reference ``verify`` uses. Arguments as for :func:`remove_sublayers`."""
    inputs, leaves = _replay_arguments(model, plan, example_inputs, leaf_modules)
    traced, branches = _traced_branches(model, plan, inputs, leaves)
    gm = traced.graph_module
    for b in branches:
        with gm.graph.inserting_before(b.join):
            zero = gm.graph.call_function(torch.zeros_like, (b.branch,))
        b.join.replace_input_with(b.branch, zero)
    gm.recompile()
    return gm
