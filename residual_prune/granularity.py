"""Granularity: how much of a residual unit a plan removes, one strategy object per kind.

``"block"`` removes whole units by module surgery (:mod:`residual_prune.surgery`), ``"sublayer"``
single residual branches, by rewriting the torch.fx graph (:mod:`residual_prune.rewrite`) where
torch.fx captured the model, else by module stand-ins (:mod:`residual_prune.branch_surgery`). Each
strategy reports the units of its kind, applies a checked plan, and builds the reference that
:func:`~residual_prune.verify.verify` compares a pruned model with.
"""

from __future__ import annotations

import abc
import copy
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from .analysis.results import ResidualBlock, sublayer_blocks, unit_blocks
from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from .analysis import Analysis
    from .plan_check import CheckedPlan

__all__ = [
    "GRANULARITIES",
    "BlockGranularity",
    "Granularity",
    "SublayerGranularity",
    "check_inplace",
    "get_granularity",
]


class Granularity(abc.ABC):
    """What a plan of this granularity removes, and how."""

    name: ClassVar[str]
    noun: ClassVar[str]  # what it removes, in messages: "residual unit"

    @abc.abstractmethod
    def report(self, model: nn.Module, analysis: Analysis) -> list[ResidualBlock]:
        """The units (or branches) of this kind, in execution order."""

    @abc.abstractmethod
    def apply(
        self,
        model: nn.Module,
        checked: CheckedPlan,
        *,
        inplace: bool,
        example_inputs: Any,
        leaf_modules: tuple[type[nn.Module], ...],
    ) -> nn.Module:
        """``model`` without what the checked plan removes."""

    @abc.abstractmethod
    def reference(self, original: nn.Module, checked: CheckedPlan, example_inputs: Any) -> nn.Module:
        """A copy of ``original`` in which what the checked plan removes contributes nothing: what a pruned
        model must equal."""

    @abc.abstractmethod
    def check_inplace(self, inplace: bool) -> None:
        """Refuse ``inplace=True`` if this granularity cannot modify a model in place."""


class BlockGranularity(Granularity):
    """Whole units: each is deleted from its ``nn.Sequential`` or replaced by a
    :class:`~residual_prune.surgery.Bypass`."""

    name = "block"
    noun = "residual unit"

    def report(self, model: nn.Module, analysis: Analysis) -> list[ResidualBlock]:
        return unit_blocks(model, analysis)

    def apply(
        self,
        model: nn.Module,
        checked: CheckedPlan,
        *,
        inplace: bool,
        example_inputs: Any,
        leaf_modules: tuple[type[nn.Module], ...],
    ) -> nn.Module:
        from .surgery import remove_blocks  # surgery imports this module

        return remove_blocks(model, checked, inplace=inplace, example_inputs=example_inputs)

    def reference(self, original: nn.Module, checked: CheckedPlan, example_inputs: Any) -> nn.Module:
        from .surgery import replace_with_identity

        return replace_with_identity(copy.deepcopy(original), checked.plan.removed, checked.analysis.graph.traced.calls)

    def check_inplace(self, inplace: bool) -> None:
        """Module surgery can work on the model itself: nothing to refuse."""


def _rewrites(checked: CheckedPlan) -> bool:
    """Whether a sub-layer plan is applied by rewriting the graph (torch.fx captured the model)."""
    return checked.analysis.graph.traced.frontend == "fx"


class SublayerGranularity(Granularity):
    """Single residual branches: each addition is replaced by its shortcut in the torch.fx graph, or the
    module that ends the branch by a stand-in that returns zeros."""

    name = "sublayer"
    noun = "residual branch"

    def report(self, model: nn.Module, analysis: Analysis) -> list[ResidualBlock]:
        return sublayer_blocks(model, analysis)

    def apply(
        self,
        model: nn.Module,
        checked: CheckedPlan,
        *,
        inplace: bool,
        example_inputs: Any,
        leaf_modules: tuple[type[nn.Module], ...],
    ) -> nn.Module:
        if not _rewrites(checked):
            from .branch_surgery import remove_branches  # it imports the analysis, which imports this module

            return remove_branches(model, checked, example_inputs)
        from .rewrite import remove_sublayers

        return remove_sublayers(
            copy.deepcopy(model), checked.plan, example_inputs=example_inputs, leaf_modules=leaf_modules
        )

    def reference(self, original: nn.Module, checked: CheckedPlan, example_inputs: Any) -> nn.Module:
        """``original`` traced, its removed branches multiplied by zero (``x + 0 * branch``); or a copy whose
        branch-ending modules return zeros (they still run)."""
        if not _rewrites(checked):
            from .branch_surgery import leaving_modules, zeroed_outputs

            reference = copy.deepcopy(original)
            zeroed_outputs(reference, leaving_modules(checked.removed))
            return reference
        from .rewrite import zero_sublayers

        return zero_sublayers(copy.deepcopy(original), checked.plan, example_inputs=example_inputs)

    def check_inplace(self, inplace: bool) -> None:
        if inplace:
            raise InvalidArgumentError(
                "sub-layer pruning returns a new model (a torch.fx.GraphModule, or a copy with stand-ins) and "
                "cannot modify the model in place; pass inplace=False (the default)"
            )


_GRANULARITIES: dict[str, Granularity] = {g.name: g for g in (BlockGranularity(), SublayerGranularity())}
GRANULARITIES = tuple(_GRANULARITIES)
"""The granularities of a plan: ``"block"`` (whole residual units) and ``"sublayer"`` (single residual branches)."""


def get_granularity(name: str) -> Granularity:
    """The strategy of the granularity ``name``; :class:`InvalidArgumentError` if there is none."""
    if name not in GRANULARITIES:
        raise InvalidArgumentError(f"unknown granularity {name!r}; choose one of {', '.join(GRANULARITIES)}")
    return _GRANULARITIES[name]


def check_inplace(granularity: str, inplace: bool) -> None:
    """Refuse ``inplace=True`` before any work where ``granularity`` cannot modify a model in place (an unknown
    granularity is left to the validation that follows)."""
    if granularity in GRANULARITIES:
        _GRANULARITIES[granularity].check_inplace(inplace)
