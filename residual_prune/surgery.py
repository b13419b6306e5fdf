"""Physically remove residual blocks from a module tree."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from torch import nn

from .plan import PruningPlan
from .rewrite import check_inplace, remove_sublayers

__all__ = ["Bypass", "apply_plan", "replace_with_identity"]


class Bypass(nn.Identity):
    """Parameter-free stand-in for a removed block: returns its first input, ignores the others.

    Blocks are often called with extra arguments (a feature size, a position bias, a mask);
    ``nn.Identity`` takes only one.
    """

    def forward(self, input, *args, **kwargs):  # noqa: A002 - nn.Identity's argument name
        return input


def replace_with_identity(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Replace each named submodule by a :class:`Bypass` in place (the reference ``verify`` compares to)."""
    for name in names:
        parent, _, key = name.rpartition(".")
        setattr(model.get_submodule(parent), key, Bypass())
    return model


def _copy_without(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """A deep copy of ``model`` in which the named submodules, which are about to be deleted or
    replaced, are not copied (a placeholder stands in). A module held in more than one place is
    copied as usual, so every other reference keeps its copy."""
    references: dict[int, int] = {}
    for parent in model.modules():
        for child in parent._modules.values():
            if child is not None:
                references[id(child)] = references.get(id(child), 0) + 1
    memo: dict[int, Any] = {}
    for name in names:
        module = model.get_submodule(name)
        if references.get(id(module)) == 1:
            memo[id(module)] = Bypass()
    return copy.deepcopy(model, memo)


def apply_plan(model: nn.Module, plan: PruningPlan, *, inplace: bool = False) -> nn.Module:
    """Return a physically shallower copy of ``model`` without the blocks in ``plan.removed``.

    Blocks are deleted from their ``nn.Sequential`` (the other children keep their names).
    A block in an ``nn.ModuleList`` (whose owner may index it, e.g. ``if i == 0``) or held as
    a plain attribute is replaced by a parameter-free :class:`Bypass` (an ``nn.Identity``
    that ignores extra arguments), so indices, the parent's class and its forward stay as
    they were. Either way every kept weight keeps its value and its ``state_dict`` key. The
    result is an ordinary ``nn.Module``: it trains, saves and traces again.

    A ``granularity="sublayer"`` plan removes single residual branches instead: the result
    is a ``torch.fx.GraphModule`` whose removed additions are replaced by their shortcuts
    (see :func:`residual_prune.rewrite.remove_sublayers`); ``inplace=True`` is refused.

    Args:
        model: a model of the architecture the plan was made for (checked by fingerprint).
        plan: from :func:`plan_pruning` or :meth:`PruningPlan.load`.
        inplace: modify ``model`` itself instead of a deep copy.

    Raises:
        PlanMismatchError: the model's architecture is not the plan's.
    """
    plan.check_model(model)
    if plan.granularity == "sublayer":
        check_inplace(plan, inplace)
        return remove_sublayers(copy.deepcopy(model), plan)
    pruned = model if inplace else _copy_without(model, plan.removed)
    for name in plan.removed:
        parent_name, _, key = name.rpartition(".")
        parent = pruned.get_submodule(parent_name)
        if isinstance(parent, nn.Sequential) and type(parent).forward is nn.Sequential.forward:
            del parent._modules[key]  # the other children keep their names, so kept weights keep their keys
        else:  # a ModuleList (whose owner may index it) or an attribute called by name
            replace_with_identity(pruned, [name])
    return pruned
