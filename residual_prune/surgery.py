"""Physically remove residual blocks from a module tree."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .errors import PruningWarning, VerificationError
from .granularity import check_inplace, get_granularity
from .inputs import ModelInputs
from .modes import on_meta
from .plan import PruningPlan
from .plan_check import CheckedPlan, check_plan, plan_inputs
from .stacks import delete_layers, numbered_stack
from .tracing import ModuleCall, check_leaf_modules

__all__ = ["Bypass", "apply_checked", "apply_plan", "remove_blocks", "replace_with_identity"]


class Bypass(nn.Identity):
    """Parameter-free stand-in for a removed block: returns a copy of its first input, ignores the others.

    Blocks are often called with extra arguments (a feature size, a position bias, a mask);
    ``nn.Identity`` takes only one. A block called with keywords only gets its input under
    ``keyword`` (``layer(hidden_states=x, ...)``); a block that returned a tuple of its output and
    constants (``(hidden_states, None)``, as many Hugging Face layers do) gets ``constants`` back
    after the input. ``attributes`` are plain values of the removed block its owner may read
    (``layer.block_type``, ``layer.layer_idx``).
    """

    keyword: str | None = None  # class defaults: stand-ins pickled before these existed still load
    constants: tuple[Any, ...] | None = None

    def __init__(
        self,
        keyword: str | None = None,
        constants: tuple[Any, ...] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.keyword, self.constants = keyword, constants
        for name, value in (attributes or {}).items():  # what the owner may read of the block it replaces
            setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_"):
                raise
            raise AttributeError(
                f"{name!r}: the model reads `{name}` of a block that apply_plan removed (this Bypass stands in "
                "for it) outside that block's forward, so the block cannot be removed from this model: keep it "
                "(take its name out of the plan's 'removed' list and apply that plan to the original model)"
            ) from None

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003 - whatever the block took
        first = args[0] if args else kwargs[self.keyword] if self.keyword in kwargs else next(iter(kwargs.values()))
        out = self.output(first)
        return out if self.constants is None else (out, *self.constants)

    def output(self, first: Any) -> Any:
        """What the stand-in returns for its first input: a copy. A new tensor, as the block returned: a
        caller that adds to the result in place (``out += ...``) must not write into the input, which it
        may read again."""
        return first.clone() if isinstance(first, torch.Tensor) else first

    def extra_repr(self) -> str:
        parts = [f"keyword={self.keyword!r}"] if self.keyword else []
        return ", ".join(parts + ([f"constants={self.constants!r}"] if self.constants is not None else []))


_PLAIN = (bool, int, float, str, type(None))


def _plain_attributes(module: nn.Module) -> dict[str, Any]:
    """The public attributes of ``module`` that are plain values (a layer's type or index), not state."""
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and name not in ("training", "keyword", "constants") and isinstance(value, _PLAIN)
    }


def _stand_in(calls: Mapping[str, ModuleCall], name: str, module: nn.Module, kind: type[Bypass] = Bypass) -> Bypass:
    """The stand-in of class ``kind`` for the module ``name``, shaped by how it was called (see :class:`Bypass`)."""
    call = calls.get(name)
    keyword, constants = (None, None) if call is None else (call.keyword, call.constants)
    return kind(keyword, constants, _plain_attributes(module))


def _holders(model: nn.Module, module: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every ``(parent, key)`` under which ``module`` is registered (a module may be held twice)."""
    return [(parent, key) for parent in model.modules() for key, child in parent._modules.items() if child is module]


def replace_with_identity(
    model: nn.Module,
    names: Iterable[str],
    calls: Mapping[str, ModuleCall] | None = None,
    kind: type[Bypass] = Bypass,
) -> nn.Module:
    """Replace each named submodule by a :class:`Bypass` (or the stand-in class ``kind``) in place, wherever
    it is held (the reference ``verify`` compares to); ``calls`` (how each was called) shapes the stand-ins."""
    for name in names:
        module = model.get_submodule(name)
        for parent, key in _holders(model, module):
            parent._modules[key] = _stand_in(calls or {}, name, module, kind)
    return model


def _copy_without(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """A deep copy of ``model`` in which the named submodules, which are about to be deleted or
    replaced, are not copied (a placeholder stands in)."""
    modules = [model.get_submodule(name) for name in names]
    memo: dict[int, Any] = {id(m): Bypass(attributes=_plain_attributes(m)) for m in modules}
    return copy.deepcopy(model, memo)


def _run_by_container(checked: CheckedPlan, parent_name: str, parent: nn.Module) -> bool:
    """Whether ``parent``'s children run only through ``parent``'s own ``forward`` in the traced graph.

    An owner that indexes the container (``blocks[0](x)``, ``for b in blocks[1:]``) calls the
    children directly; deleting one would shift the indices that code relies on.
    """
    if parent_name == "":
        return True  # the model itself: its forward is what runs
    children = {f"{parent_name}.{key}" for key in parent._modules}
    return all(parent_name in stack for stack in checked.analysis.graph.stacks if children.intersection(stack))


def _deletable(model: nn.Module, checked: CheckedPlan, name: str) -> bool:
    """A unit is deleted (not bypassed) only from a plain ``nn.Sequential`` that holds it alone and
    whose children run only through its own ``forward``."""
    parent_name = name.rpartition(".")[0]
    parent = model.get_submodule(parent_name)
    call = checked.analysis.graph.traced.calls.get(name)
    return (
        (call is None or (call.keyword is None and call.constants is None))  # it takes and gives one tensor
        and type(parent).forward is nn.Sequential.forward
        and isinstance(parent, nn.Sequential)
        and len(_holders(model, model.get_submodule(name))) == 1
        and _run_by_container(checked, parent_name, parent)
    )


def apply_plan(
    model: nn.Module,
    plan: PruningPlan,
    *,
    inplace: bool = False,
    example_inputs: Any = None,
    leaf_modules: Iterable[type[nn.Module]] = (),
) -> nn.Module:
    """Return a physically shallower copy of ``model`` without the blocks in ``plan.removed``.

    The plan is checked against the model first (:func:`~residual_prune.plan_check.check_plan`):
    its architecture, and that every name is a unit :func:`~residual_prune.find_blocks` reports as
    removable with the plan's policy, granularity and leaf modules. Nothing changes unless all
    of it is valid.

    A block in a plain ``nn.Sequential`` that runs its children through its own ``forward`` is
    deleted (the other children keep their names). A block anywhere else (an ``nn.ModuleList``,
    a Sequential the owner indexes, a plain attribute), or held under several names, is
    replaced by a parameter-free :class:`Bypass` (an ``nn.Identity`` that ignores extra
    arguments) in every place that holds it, so indices, the parent's class and its forward
    stay as they were. Either way every kept weight keeps its value and its ``state_dict`` key.
    The result is an ordinary ``nn.Module``: it trains, saves and traces again.

    A ``granularity="sublayer"`` plan removes single residual branches instead: the result
    is a ``torch.fx.GraphModule`` whose removed additions are replaced by their shortcuts
    (see :func:`residual_prune.rewrite.remove_sublayers`); ``inplace=True`` is refused.

    Args:
        model: a model of the architecture the plan was made for (checked by fingerprint).
        plan: from :func:`plan_pruning` or :meth:`PruningPlan.load`.
        inplace: modify ``model`` itself instead of a deep copy.
        example_inputs: inputs to analyse the model on; by default zeros of the plan's input shapes.
        leaf_modules: module classes to keep opaque, in addition to those the plan names
            (which are looked up among the model's own classes, never imported).

    Raises:
        PlanMismatchError: the model's architecture is not the plan's, or the plan removes
            something that is not a removable unit of this model.
        CorruptPlanError: a field of the plan has an invalid value.
    """
    check_inplace(plan.granularity, inplace)
    leaf_modules = check_leaf_modules(leaf_modules)
    checked = check_plan(model, plan, example_inputs=example_inputs, leaf_modules=leaf_modules)
    return apply_checked(model, checked, inplace=inplace, example_inputs=example_inputs, leaf_modules=leaf_modules)


def apply_checked(
    model: nn.Module,
    checked: CheckedPlan,
    *,
    inplace: bool = False,
    example_inputs: Any = None,
    leaf_modules: tuple[type[nn.Module], ...] = (),
) -> nn.Module:
    """:func:`apply_plan` for a plan already checked against ``model`` (by :func:`check_plan`, or made from the
    same analysis of this model by :func:`~residual_prune.plan_pruning`)."""
    return get_granularity(checked.plan.granularity).apply(
        model, checked, inplace=inplace, example_inputs=example_inputs, leaf_modules=leaf_modules
    )


def _removed(model: nn.Module, checked: CheckedPlan, inplace: bool, stacks: Mapping[str, str | None]) -> nn.Module:
    """``model`` (or a copy) with the plan's units deleted from their Sequential or numbered stack, or bypassed."""
    plan = checked.plan
    deletable = {name: _deletable(model, checked, name) for name in plan.removed}
    pruned = model if inplace else _copy_without(model, plan.removed)
    by_stack: dict[str, list[str]] = {}
    for name in plan.removed:
        stack = stacks.get(name)
        if stack is not None:
            by_stack.setdefault(stack, []).append(name.rpartition(".")[2])
        elif deletable[name]:
            parent_name, _, key = name.rpartition(".")
            del pruned.get_submodule(parent_name)._modules[key]  # the other children keep their names
        else:
            replace_with_identity(pruned, [name], checked.analysis.graph.traced.calls)
    for stack, keys in by_stack.items():
        delete_layers(pruned, stack, keys)
    return pruned


def remove_blocks(
    model: nn.Module, checked: CheckedPlan, *, inplace: bool = False, example_inputs: Any = None
) -> nn.Module:
    """Delete or bypass the units of a checked block plan (see :func:`apply_plan`), in a copy unless ``inplace``.

    Layers of a numbered stack (:mod:`~residual_prune.stacks`) are deleted and the rest renumbered; on a
    model with weights, the result is compared with the model whose removed layers are bypassed, on
    ``example_inputs`` (else zeros of the plan's inputs), and where they differ (the model's code
    relies on a layer's position in a way the renumbering does not follow) the layers are bypassed
    instead, with a :class:`~residual_prune.errors.PruningWarning`.
    """
    stacks = {name: numbered_stack(model, name) for name in checked.plan.removed}
    if not any(stacks.values()):
        return _removed(model, checked, inplace, {})
    renumbered = _removed(model, checked, False, stacks)
    bypassed = None if on_meta(model) else _removed(model, checked, False, {})
    differs = (
        None
        if bypassed is None
        else _difference(bypassed, renumbered, plan_inputs(model, checked.plan, example_inputs), checked.plan)
    )
    if bypassed is None or differs is None:  # on the meta device nothing can run: the rule is trusted
        return _removed(model, checked, True, stacks) if inplace else renumbered
    warnings.warn(
        f"deleting the layers {', '.join(n for n, s in stacks.items() if s)} from their list and renumbering the "
        f"others changed {type(model).__name__}'s outputs ({differs}); they are replaced by stand-ins instead, "
        "which keeps the outputs but not the smaller config",
        PruningWarning,
        stacklevel=4,
    )
    return _removed(model, checked, True, {}) if inplace else bypassed


_EXACT = {"rtol": 1e-5, "atol": 1e-6}  # the same computations, in the same order: equal but for rounding


def _difference(reference: nn.Module, pruned: nn.Module, inputs: ModelInputs, plan: PruningPlan) -> str | None:
    """How ``pruned`` differs from ``reference`` (the model with the plan's units bypassed) on ``inputs``; None if
    it does not."""
    from .verify import compare_outputs  # verify imports the granularities, which import this module

    try:
        compare_outputs(reference, pruned, inputs, plan, **_EXACT)
    except VerificationError as exc:
        return str(exc).partition(":")[2].partition(". The block removal")[0].strip()
    return None
