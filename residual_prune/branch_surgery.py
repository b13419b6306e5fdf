"""Sub-layer removal by module surgery, where the graph is not a torch.fx one (torch.export, eager).

A residual branch ``y = x + f(x)`` whose value ``f(x)`` is what one module returns (the branch's
``leaves`` module, see :class:`~residual_prune.analysis.BranchEnds`: a transformer layer's
``self_attn`` or ``mlp``) is removed by replacing that module with a :class:`ZeroBranch`, a
parameter-free stand-in that returns zeros of its input's shape: the addition then passes ``x``
on. The other modules that run in the branch alone and whose value only the branch reads
(the sub-layer's normalization; in a post-norm layer, whose branch ends in a norm, the attention or
MLP before it) are replaced by stand-ins too, where the result still equals the model whose branch
ends in zeros, so that what the plan counts as removed no longer runs. The result is the model's
own class, so its ``generate``, its cache and its ``state_dict`` keys stay; a configuration cannot
describe a layer without its attention, so ``save_pretrained`` does not capture the removal
(reload with the plan: ``apply_plan``).

Caches indexed by layer (``layer_idx``): a key/value cache reads the sequence length from its first
layer, which a removed attention no longer fills. The kept modules of the removed one's class that
number themselves with ``layer_idx`` are renumbered ``0, 1, ...`` in their order, as if the removed
ones were deleted from the stack, where the configuration gives every layer the same attention type
(``layer_types``) and the numbers are one per layer, in order. Otherwise (mixed types; a decoder whose
self- and cross-attention share a class and a number) the numbers stay, and removing the module
numbered first (of its type) is refused: the cache reads that type's length and masks from it.
Where the model reads ``layer_idx`` for more than the cache (ImageGPT scales attention by it), the
renumbered model's outputs differ from those of the model with the numbers kept, which is then
returned (or, where that removal needs the renumbering, refused).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .analysis import ResidualBlock
from .errors import PlanError, PruningWarning
from .modes import on_meta
from .plan_check import CheckedPlan, plan_inputs
from .stacks import _configs
from .surgery import Bypass, _copy_without, _difference, replace_with_identity

__all__ = ["ZeroBranch", "leaving_modules", "remove_branches", "zeroed_outputs"]

_CACHE_INDEX = "layer_idx"


class ZeroBranch(Bypass):
    """Parameter-free stand-in for the module a removed residual branch ends in: returns zeros shaped like its
    first input (and, like :class:`~residual_prune.surgery.Bypass`, the constants the module returned after it)."""

    def output(self, first: Any) -> Any:
        return torch.zeros_like(first)


def leaving_modules(blocks: Iterable[ResidualBlock]) -> list[str]:
    """The module each sub-layer's branch ends in (see :class:`~residual_prune.analysis.BranchEnds`)."""
    names = []
    for block in blocks:
        if block.ends is None or block.ends.leaves is None:
            raise PlanError(
                f"{block.name!r} has no module that ends its branch, so no stand-in can remove it here; capture the "
                "model with frontend='fx' if torch.fx can trace it, or keep that sub-layer"
            )
        names.append(block.ends.leaves)
    return names


def _feeding_modules(checked: CheckedPlan, leaves: Sequence[str]) -> list[str]:
    """The other modules of the removed branches that a stand-in can replace: each runs once, inside its branch
    alone (see :func:`~residual_prune.analysis.joins.branch_modules`), and returns what a stand-in can rebuild."""
    traced = checked.analysis.graph.traced
    return [
        name
        for block in checked.removed
        for name in block.modules
        if name not in leaves
        and not any(name.startswith(f"{leaf}.") or leaf.startswith(f"{name}.") for leaf in leaves)
        and traced.call_counts.get(name) == 1
        and name in traced.calls
        and traced.calls[name].returns_one_value
    ]


def _zero_first(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return torch.zeros_like(output)
    return (torch.zeros_like(output[0]), *output[1:])


def zeroed_outputs(model: nn.Module, names: Iterable[str]) -> list[torch.utils.hooks.RemovableHandle]:
    """Make each named module of ``model`` return zeros in place of its output tensor (the first of a tuple)
    while it still runs (and fills a cache); returns the hooks' handles, to remove them."""
    return [model.get_submodule(name).register_forward_hook(lambda m, a, out: _zero_first(out)) for name in names]


def _numbered(model: nn.Module, kind: type[nn.Module]) -> list[tuple[str, int]]:
    """The modules of class ``kind`` that number themselves (``layer_idx``): their names and numbers, in order."""
    found = [(name, getattr(m, _CACHE_INDEX, None)) for name, m in model.named_modules() if type(m) is kind]
    return sorted(((n, i) for n, i in found if isinstance(i, int) and not isinstance(i, bool)), key=lambda x: x[1])


def _mixed_layer_types(model: nn.Module) -> list[Any] | None:
    """The config's attention type per layer (``layer_types``) where the types differ, else None."""
    for config in _configs(model):
        types = getattr(config, "layer_types", None)
        if isinstance(types, (list, tuple)) and len(set(types)) > 1:
            return list(types)
    return None


def _renumbering(model: nn.Module, removed: Sequence[str], follow: bool = True) -> dict[str, int]:
    """The new ``layer_idx`` of each kept module numbered like the removed ones, by name (see the module); none
    where ``follow`` is false (the model reads the numbers for more than its cache).

    Raises:
        PlanError: the numbers cannot follow the removal (layers of mixed attention types, or numbers that are not
            one per layer in order, as where a decoder's self- and cross-attention share a class and a number;
            or not ``follow``), and a removed module holds the number the cache reads first.
    """
    changes: dict[str, int] = {}
    gone = set(removed)
    types = _mixed_layer_types(model)
    for kind in {type(model.get_submodule(name)) for name in removed}:
        numbered = _numbered(model, kind)
        if not gone.intersection(n for n, _ in numbered):
            continue
        if follow and types is None and [i for _, i in numbered] == list(range(len(numbered))):
            changes.update((name, new) for new, name in enumerate(n for n, _ in numbered if n not in gone))
            continue
        firsts = {types.index(t) for t in types} if types else {numbered[0][1]}
        for name, index in numbered:
            if name in gone and index in firsts:
                why = (
                    "whose layers mix attention types (config.layer_types)"
                    if types
                    else f"whose {kind.__name__} modules are not numbered one per layer in order"
                    if follow
                    else f"whose outputs change when its {kind.__name__} modules are renumbered"
                )
                raise PlanError(
                    f"the plan removes {name!r}, the {kind.__name__} numbered {index} ({_CACHE_INDEX}), from which "
                    f"the key/value cache reads the length (and masks) of its layers, in a model {why}, so the "
                    "others cannot be renumbered to take its place. Keep that sub-layer, or remove whole layers "
                    "(granularity='block')"
                )
    return changes


def _stood_in(model: nn.Module, checked: CheckedPlan, names: Sequence[str], renumbering: dict[str, int]) -> nn.Module:
    """A copy of ``model`` whose named modules are :class:`ZeroBranch` stand-ins, with the new numbers set."""
    pruned = replace_with_identity(_copy_without(model, names), names, checked.analysis.graph.traced.calls, ZeroBranch)
    for name, new in renumbering.items():
        setattr(pruned.get_submodule(name), _CACHE_INDEX, new)
    return pruned


def remove_branches(model: nn.Module, checked: CheckedPlan, example_inputs: Any = None) -> nn.Module:
    """A copy of ``model`` whose removed sub-layers' branches end in a :class:`ZeroBranch` (see the module).

    On a model with weights, each candidate (every module of the branches stood in, else only the modules they end
    in; the numbers renumbered, else kept) is compared with the model whose branches end in zeros, on
    ``example_inputs`` (else zeros of the plan's inputs), and the first that equals it is returned; a
    :class:`~residual_prune.errors.PruningWarning` names the modules that still run where only those are stood in.
    """
    leaves = leaving_modules(checked.removed)
    whole = leaves + _feeding_modules(checked, leaves)
    if on_meta(model):  # nothing can run: the rules are trusted
        return _stood_in(model, checked, whole, _renumbering(model, whole))
    inputs = plan_inputs(model, checked.plan, example_inputs)
    attempts = [(whole, True), (whole, False)] + ([(leaves, True)] if whole != leaves else [])
    tried = set()
    handles = zeroed_outputs(model, leaves)  # the reference, for a moment: ``model`` with its branches zeroed
    try:
        for names, follow in attempts:
            try:
                renumbering = _renumbering(model, names, follow)
                key = (tuple(names), tuple(renumbering.items()))
                if key in tried:
                    continue  # nothing to renumber: the same candidate as before
                tried.add(key)
                candidate = _stood_in(model, checked, names, renumbering)
                if _difference(model, candidate, inputs, checked.plan) is None:
                    break
            except Exception:  # noqa: BLE001 - numbers the cache cannot follow, a stand-in the code cannot take
                continue
        else:  # the numbers kept (equal to the reference, with no cache): refused where they cannot follow, or
            if _renumbering(model, leaves):  # where the cache needs them to follow but the outputs change
                _renumbering(model, leaves, follow=False)
            names, candidate = leaves, _stood_in(model, checked, leaves, {})
    finally:
        for handle in handles:
            handle.remove()
    if names != whole:
        warnings.warn(
            f"the modules {', '.join(m for m in whole if m not in leaves)} of the removed branches cannot be "
            f"replaced by stand-ins in {type(model).__name__} (its outputs change): they still run and their output "
            "is ignored, so the parameters and FLOPs the plan counts for those branches are not all saved",
            PruningWarning,
            stacklevel=4,
        )
    return candidate
