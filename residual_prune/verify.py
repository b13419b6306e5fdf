"""Check numerically that a pruned model is the original with its removed blocks as identities."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from .errors import VerificationError
from .modes import eval_mode
from .plan import PruningPlan
from .plan_check import check_plan
from .rewrite import zero_sublayers
from .surgery import replace_with_identity
from .tracing import as_input_tuple

__all__ = ["verify"]


def verify(
    original: nn.Module,
    pruned: nn.Module,
    plan: PruningPlan,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> float:
    """Compare ``pruned`` with ``original`` whose removed blocks are replaced by the identity
    (:class:`~residual_prune.surgery.Bypass`), or, for a sub-layer plan, whose removed
    branches are multiplied by zero (``x + 0 * branch``) in the traced graph.

    The plan is checked against ``original`` first (as :func:`apply_plan` does), on
    ``example_inputs``, which must fit ``original`` (else :class:`DataError`). Both models run in
    eval mode under ``no_grad`` (modes are restored; neither model is modified). Returns the largest
    absolute difference over all outputs and raises :class:`VerificationError` when it exceeds
    ``atol + rtol * max|reference|``.
    """
    inputs = as_input_tuple(example_inputs)
    check_plan(original, plan, example_inputs=inputs)
    reference: nn.Module
    if plan.granularity == "sublayer":
        reference = zero_sublayers(copy.deepcopy(original), plan, example_inputs=inputs)
    else:
        reference = replace_with_identity(copy.deepcopy(original), plan.removed)
    with torch.no_grad(), eval_mode(reference), eval_mode(pruned):
        expected, _ = tree_flatten(reference(*inputs))
        try:
            actual, _ = tree_flatten(pruned(*inputs))
        except Exception as exc:
            raise VerificationError(
                f"the pruned model fails on inputs the original accepts: {type(exc).__name__}: {exc}. Was it "
                "pruned with this plan (apply_plan(original, plan))?"
            ) from exc
    expected = [t for t in expected if isinstance(t, torch.Tensor)]
    actual = [t for t in actual if isinstance(t, torch.Tensor)]
    if len(expected) != len(actual) or any(e.shape != a.shape for e, a in zip(expected, actual)):
        raise VerificationError(
            f"the pruned model's outputs {[tuple(a.shape) for a in actual]} do not have the shapes of the "
            f"reference's {[tuple(e.shape) for e in expected]}"
        )
    error, scale = 0.0, 0.0
    for e, a in zip(expected, actual):
        error = max(error, float((e.double() - a.double()).abs().max()) if e.numel() else 0.0)
        scale = max(scale, float(e.double().abs().max()) if e.numel() else 0.0)
    if not error <= atol + rtol * scale:  # also catches NaN
        raise VerificationError(
            f"the pruned model differs from the original with blocks {plan.removed} replaced by the identity: "
            f"max abs error {error:.3g} > {atol + rtol * scale:.3g} (atol {atol:g} + rtol {rtol:g} x {scale:.3g}). "
            "The block removal changed more than the removed branches; please report this model."
        )
    return error
