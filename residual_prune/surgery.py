"""Physically remove residual blocks from a module tree."""

from __future__ import annotations

import copy
from collections.abc import Iterable

from torch import nn

from .plan import PruningPlan

__all__ = ["apply_plan", "replace_with_identity"]


def _remove_from_parent(model: nn.Module, parent_name: str, keys: list[str]) -> None:
    parent = model.get_submodule(parent_name)
    if isinstance(parent, nn.Sequential) and type(parent).forward is nn.Sequential.forward:
        for key in keys:  # keep the other children's names, so kept weights keep their keys
            del parent._modules[key]
    elif isinstance(parent, nn.ModuleList) and all(k.isdigit() for k in keys):
        for key in sorted(keys, key=int, reverse=True):  # ModuleList renumbers after a deletion
            del parent[int(key)]
    else:  # called by attribute name in the parent's forward: keep the forward, drop the block
        for key in keys:
            setattr(parent, key, nn.Identity())


def replace_with_identity(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Replace each named submodule by ``nn.Identity`` in place (the reference ``verify`` compares to)."""
    for name in names:
        parent, _, key = name.rpartition(".")
        setattr(model.get_submodule(parent), key, nn.Identity())
    return model


def apply_plan(model: nn.Module, plan: PruningPlan, *, inplace: bool = False) -> nn.Module:
    """Return a physically shallower copy of ``model`` without the blocks in ``plan.removed``.

    Blocks are deleted from their ``nn.Sequential`` (the other children keep their names,
    so every kept weight keeps its ``state_dict`` key) or ``nn.ModuleList`` (which
    renumbers, as ``del`` does). A block held as a plain attribute and called by name in
    its parent's forward is replaced by a parameter-free ``nn.Identity``, so the parent
    keeps its class and forward. Kept layers keep their weights. The result is an ordinary
    ``nn.Module``: it trains, saves and traces again.

    Args:
        model: a model of the architecture the plan was made for (checked by fingerprint).
        plan: from :func:`plan_pruning` or :meth:`PruningPlan.load`.
        inplace: modify ``model`` itself instead of a deep copy.

    Raises:
        PlanMismatchError: the model's architecture is not the plan's.
    """
    plan.check_model(model)
    pruned = model if inplace else copy.deepcopy(model)
    by_parent: dict[str, list[str]] = {}
    for name in plan.removed:
        parent, _, key = name.rpartition(".")
        by_parent.setdefault(parent, []).append(key)
    for parent, keys in by_parent.items():
        _remove_from_parent(pruned, parent, keys)
    return pruned
