"""Check a plan against the model it is applied to, before anything is changed.

A plan may only remove units that :func:`~residual_prune.find_blocks` reports as removable for
the model, with the plan's policy, granularity and leaf modules, and never two units of which
one contains the other. The model is analysed again (on inputs of the shapes the plan was
made with), so a hand-edited or foreign plan can never remove a layer that is not a residual
unit, half a unit, or a unit whose removal would change more than its residual branch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from .analysis import Analysis, ResidualBlock, analyse
from .errors import PlanError, PlanMismatchError
from .granularity import get_granularity
from .inputs import ModelInputs
from .plan import PruningPlan
from .rewrite import resolve_leaf_modules

__all__ = ["CheckedPlan", "check_plan", "plan_inputs"]


def plan_inputs(model: nn.Module, plan: PruningPlan, example_inputs: Any = None) -> ModelInputs:
    """``example_inputs`` if given, else zeros of the shapes and dtypes the plan was made with (integer zeros
    are valid token ids), on the model's device."""
    if example_inputs is not None:
        return ModelInputs.of(example_inputs)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if plan.inputs is not None:
        return ModelInputs.zeros_from_json(plan.inputs, device)
    if not plan.input_shapes:
        raise PlanError(
            "this plan records no input shapes, so the model cannot be analysed to check it; pass "
            "example_inputs=<inputs the model accepts> (or re-create the plan with plan_pruning)"
        )
    dtypes = [vars(torch)[name] for name in plan.input_dtypes] or [None] * len(plan.input_shapes)  # None: float
    return ModelInputs.of(
        tuple(torch.zeros(shape, dtype=dtype, device=device) for shape, dtype in zip(plan.input_shapes, dtypes))
    )


@dataclasses.dataclass
class CheckedPlan:
    """A plan found valid for a model: the analysis it was checked on and the units it removes."""

    plan: PruningPlan
    analysis: Analysis
    removed: list[ResidualBlock]


def _listing(blocks: dict[str, ResidualBlock]) -> str:
    names = [name for name, b in blocks.items() if b.removable]
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f"its removable units are {shown}" if names else "it has no removable unit"


def check_plan(
    model: nn.Module,
    plan: PruningPlan,
    *,
    example_inputs: Any = None,
    leaf_modules: tuple[type[nn.Module], ...] = (),
) -> CheckedPlan:
    """Raise a :class:`PlanError` unless every name in ``plan.removed`` may be removed from ``model``.

    Checks the plan's fields, the architecture fingerprint, then analyses ``model`` as
    :func:`~residual_prune.find_blocks` would and checks each removed name: a unit it reports, removable,
    not nested in (or holding) another removed unit. Nothing is changed.
    """
    plan.check_fields()
    plan.check_model(model)
    inputs = plan_inputs(model, plan, example_inputs)
    leaves = resolve_leaf_modules(plan.leaf_modules, model, leaf_modules)
    granularity = get_granularity(plan.granularity)
    analysis = analyse(
        model,
        inputs,
        policy=plan.policy,
        leaf_modules=leaves,
        frontend=plan.frontend,
    )
    blocks = {b.name: b for b in granularity.report(model, analysis)}
    removed = []
    for name in plan.removed:
        block = blocks.get(name)
        if block is None:
            raise PlanMismatchError(
                f"the plan removes {name!r}, which is not a {granularity.noun} of this {type(model).__name__} "
                f"(policy {plan.policy!r}, granularity {plan.granularity!r}); {_listing(blocks)}. A plan can only "
                "remove units that find_blocks reports as removable: re-create it with plan_pruning()"
            )
        if not block.removable:
            raise PlanMismatchError(f"the plan removes {name!r}, which cannot be removed: {block.reason}")
        removed.append(block)
    for block in removed:
        inner = [n for n in block.contains if n in plan.removed]
        if inner:
            raise PlanMismatchError(
                f"the plan removes {block.name!r} and {inner[0]!r}, which lies inside it; removing "
                f"{block.name!r} already removes {inner[0]!r}: keep only one of them"
            )
    return CheckedPlan(plan, analysis, removed)
