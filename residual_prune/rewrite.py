"""Sub-layer pruning: remove single residual branches by rewriting the traced graph."""

from __future__ import annotations

import dataclasses
import importlib
import operator

import torch
import torch.fx as fx
from torch import nn

from .blocks import add_operands, analyse, sublayers
from .errors import InvalidArgumentError, PlanError, PlanMismatchError
from .plan import PruningPlan

__all__ = ["check_inplace", "leaf_module_names", "remove_sublayers", "resolve_leaf_modules", "zero_sublayers"]


def leaf_module_names(classes: tuple[type[nn.Module], ...] | list[type[nn.Module]]) -> list[str]:
    """``module:QualName`` of each class, so a plan can name the leaves it was traced with."""
    return sorted(f"{c.__module__}:{c.__qualname__}" for c in classes)


def resolve_leaf_modules(names: list[str]) -> tuple[type[nn.Module], ...]:
    classes = []
    for name in names:
        module_name, _, qualname = name.partition(":")
        try:
            obj = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise PlanError(
                f"the plan was traced with leaf module {name}, which cannot be imported here ({exc}); import the "
                "package that defines it before applying the plan"
            ) from exc
        classes.append(obj)
    return tuple(classes)


@dataclasses.dataclass
class _Branch:
    join: fx.Node
    branch: fx.Node  # the branch's output: the operand of the addition that is not the shortcut
    nodes: set[fx.Node]

    def shortcut(self) -> fx.Node:
        """The other operand, read when needed: removing an earlier branch may have replaced it."""
        return next(a for a in add_operands(self.join) if a is not self.branch)


def _traced_branches(model: nn.Module, plan: PruningPlan) -> tuple[fx.GraphModule, list[_Branch]]:
    """Trace ``model`` as the plan was made and find the branches the plan removes."""
    if not plan.input_shapes:
        raise PlanError("this sub-layer plan has no input_shapes; re-create it with plan_pruning(...)")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    inputs = tuple(torch.zeros(shape, device=device) for shape in plan.input_shapes)
    analysis = analyse(model, inputs, policy=plan.policy, leaf_modules=resolve_leaf_modules(plan.leaf_modules))
    found = {sub.name: sub for sub in sublayers(analysis)}
    missing = [name for name in plan.removed if name not in found]
    if missing:
        raise PlanMismatchError(
            f"the model has no residual branch {', '.join(missing)}; apply the plan to the architecture it was made for"
        )
    nodes, branches = analysis.graph.nodes, []
    for name in plan.removed:
        join = found[name].join
        members = {nodes[i] for i in join.branch}
        a, b = add_operands(join.node)
        branches.append(_Branch(join.node, a if a in members else b, members))
    return analysis.graph.traced.graph_module, branches


_INPLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv}


def _mutates(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` may write into its first input."""
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.endswith("__")
    if node.op == "call_function":
        return node.target in _INPLACE_OPERATORS or bool(node.kwargs.get("inplace")) or (
            getattr(node.target, "__name__", "").endswith("_")
        )
    if node.op == "call_module":
        return bool(getattr(gm.get_submodule(node.target), "inplace", False))
    return False


def remove_sublayers(model: nn.Module, plan: PruningPlan) -> fx.GraphModule:
    """Return ``model`` as a GraphModule without the residual branches of a sub-layer plan.

    Each removed addition is replaced by its shortcut; the branch's nodes, and the modules
    and parameters only they used, are deleted. The graph is traced in eval mode: dropout,
    batch norm, drop path and stochastic depth are modules and keep their train/eval
    behaviour, Python ``if self.training:`` code elsewhere is fixed to eval. Modules are
    shared with ``model`` (pass a copy).
    """
    gm, branches = _traced_branches(model, plan)
    read = set()
    for b in branches:
        read |= {n.target for n in b.nodes if n.op == "get_attr"}
        shortcut = b.shortcut()
        if any(_mutates(gm, user) for user in b.join.users):
            # the addition made a fresh tensor that an in-place op (e.g. ReLU(inplace=True)) then
            # overwrote: keep the shortcut itself intact
            with gm.graph.inserting_before(b.join):
                shortcut = gm.graph.call_method("clone", (shortcut,))
        b.join.replace_all_uses_with(shortcut)
        gm.graph.erase_node(b.join)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    still_read = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for target in sorted(read - still_read):
        owner, _, attr = target.rpartition(".")
        try:
            delattr(gm.get_submodule(owner), attr)
        except AttributeError:  # its module went with delete_all_unused_submodules
            pass
    gm.recompile()
    gm.training = model.training
    return gm


def zero_sublayers(model: nn.Module, plan: PruningPlan) -> fx.GraphModule:
    """``model`` with the plan's branches multiplied out (``x + 0``): the reference ``verify`` uses."""
    gm, branches = _traced_branches(model, plan)
    for b in branches:
        with gm.graph.inserting_before(b.join):
            zero = gm.graph.call_function(torch.zeros_like, (b.branch,))
        b.join.replace_input_with(b.branch, zero)
    gm.recompile()
    return gm


def check_inplace(plan: PruningPlan, inplace: bool) -> None:
    if inplace and plan.granularity == "sublayer":
        raise InvalidArgumentError(
            "sub-layer pruning returns a new torch.fx.GraphModule and cannot modify the model in place; "
            "pass inplace=False (the default)"
        )


