"""Check numerically that a pruned model is the original with its removed blocks as identities."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from .errors import InvalidArgumentError, VerificationError
from .granularity import get_granularity
from .inputs import ModelInputs, container_items
from .modes import eval_mode, rng_forked
from .plan import PruningPlan
from .plan_check import check_plan

__all__ = ["verify"]


_EQUAL_BY_VALUE = (str, bool, type(None))


@dataclasses.dataclass(frozen=True)
class _Leaf:
    """One tensor (or number) of the outputs: where it is, its reference value and the pruned model's."""

    path: str
    expected: torch.Tensor
    actual: torch.Tensor

    def errors(self) -> tuple[float, float]:
        """The largest absolute difference and the largest absolute reference value (NaN-propagating)."""
        if self.expected.numel() == 0:
            return 0.0, 0.0
        dtype = torch.complex128 if self.expected.is_complex() or self.actual.is_complex() else torch.float64
        expected = self.expected.detach().to(dtype)
        actual = self.actual.detach().to(device=expected.device, dtype=dtype)
        return float((expected - actual).abs().max()), float(expected.abs().max())


def _as_number(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(value, dtype=torch.float64)
    return None


def _output_name(path: str) -> str:
    """A leaf's path as a user reads it: ``output logits``, ``output [1]['boxes']``, or ``output`` for the whole."""
    return f"output {path.removeprefix('.')}" if path else "output"


def _structure_error(path: str, what: str) -> VerificationError:
    return VerificationError(
        f"the pruned model's {_output_name(path)} {what}; the pruned model does not return what the original "
        "returns. Was it pruned with this plan (apply_plan(original, plan))?"
    )


def _type_error(path: str, expected: Any, actual: Any) -> VerificationError:
    return _structure_error(
        path, f"is a {type(actual).__name__} where the reference returns a {type(expected).__name__}"
    )


def _paired_leaves(expected: Any, actual: Any, path: str = "") -> list[_Leaf]:
    """The tensor (and number) leaves of both outputs side by side; :class:`VerificationError` at the first
    place where their structures differ (container kind, keys, length, shape, or a non-numeric value)."""
    expected_children, actual_children = container_items(expected), container_items(actual)
    if expected_children is None or actual_children is None:
        if expected_children is not None or actual_children is not None:
            raise _type_error(path, expected, actual)
        return _paired_leaf(expected, actual, path)
    (expected_kind, expected_items), (actual_kind, actual_items) = expected_children, actual_children
    if expected_kind != actual_kind:
        raise _type_error(path, expected, actual)
    expected_keys, actual_keys = [k for k, _ in expected_items], [k for k, _ in actual_items]
    missing = [k for k in expected_keys if k not in actual_keys]
    extra = [k for k in actual_keys if k not in expected_keys]
    if missing:
        raise _structure_error(path + missing[0], "is missing")
    if extra:
        raise _structure_error(path + extra[0], "is not in the reference's output")
    actual_by_key = dict(actual_items)
    return [leaf for key, item in expected_items for leaf in _paired_leaves(item, actual_by_key[key], path + key)]


def _paired_leaf(expected: Any, actual: Any, path: str) -> list[_Leaf]:
    expected_number, actual_number = _as_number(expected), _as_number(actual)
    if expected_number is not None and actual_number is not None:
        if expected_number.shape != actual_number.shape:
            raise _structure_error(
                path,
                f"has shape {tuple(actual_number.shape)} where the reference's has {tuple(expected_number.shape)}",
            )
        return [_Leaf(path, expected_number, actual_number)]
    if type(expected) is not type(actual):
        raise _type_error(path, expected, actual)
    if isinstance(expected, _EQUAL_BY_VALUE) and expected != actual:
        raise _structure_error(path, f"is {actual!r} where the reference's is {expected!r}")
    return []  # another object: only its type can be compared


def verify(
    original: nn.Module,
    pruned: nn.Module,
    plan: PruningPlan,
    example_inputs: Any,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> float:
    """Compare ``pruned`` with ``original`` whose removed blocks are replaced by the identity
    (:class:`~residual_prune.surgery.Bypass`), or, for a sub-layer plan, whose removed
    branches are multiplied by zero (``x + 0 * branch``) in the traced graph.

    ``example_inputs`` is a tensor, a tuple of positional arguments or a dict of keyword arguments
    (see :class:`~residual_prune.inputs.ModelInputs`). The plan is checked against ``original`` first
    (as :func:`apply_plan` does), on ``example_inputs``, which must fit ``original`` (else
    :class:`DataError`). Both models run in eval mode under ``no_grad`` (modes are restored; neither
    model is modified). Their outputs may be tensors, or tuples, lists, dicts and dataclasses (Hugging
    Face's ``ModelOutput``) of them, nested: both must have the same structure and shapes, and every
    tensor (and number) in them must be within ``atol + rtol * max|reference|`` of the reference, the
    maximum taken over that tensor. Both models start from the caller's random number generator
    states (CPU and the models' accelerators), so models that draw random numbers in eval mode
    (random masking, sampling noise) draw the same ones; those states are unchanged afterwards.
    Returns the largest absolute difference over all outputs; raises :class:`VerificationError`
    naming the first output whose structure differs, else the one with the largest error.
    """
    inputs = ModelInputs.of(example_inputs)
    if any(p.is_meta for p in (*original.parameters(), *pruned.parameters())):
        raise InvalidArgumentError(
            "verify runs both models, but one is on the meta device and has no weights; load the weights into "
            "both (model.to_empty(device='cpu') and model.load_state_dict(...)) before verifying"
        )
    with rng_forked((original, pruned), inputs.tensors()):
        checked = check_plan(original, plan, example_inputs=example_inputs)
        reference = get_granularity(plan.granularity).reference(original, checked, example_inputs)
    return compare_outputs(reference, pruned, inputs, plan, rtol=rtol, atol=atol)


def compare_outputs(
    reference: nn.Module, pruned: nn.Module, inputs: ModelInputs, plan: PruningPlan, *, rtol: float, atol: float
) -> float:
    """Run both models on ``inputs`` (eval mode, ``no_grad``, the same random numbers) and compare their outputs
    as :func:`verify` does: the largest absolute difference, or :class:`VerificationError`."""
    with torch.no_grad(), eval_mode(reference), eval_mode(pruned):
        with rng_forked((reference, pruned), inputs.tensors()):  # both draw the same random numbers
            expected = inputs.call(reference)
        try:
            with rng_forked((reference, pruned), inputs.tensors()):
                actual = inputs.call(pruned)
        except Exception as exc:
            raise VerificationError(
                f"the pruned model fails on inputs the original accepts: {type(exc).__name__}: {exc}. Was it "
                "pruned with this plan (apply_plan(original, plan))?"
            ) from exc
    leaves = _paired_leaves(expected, actual)
    if not leaves:
        raise VerificationError(
            f"the models' outputs ({type(expected).__name__}) hold no tensor, so there is nothing to compare; "
            "verify needs a model that returns tensors (or containers of them)"
        )
    return _checked_error(leaves, plan, rtol=rtol, atol=atol)


def _checked_error(leaves: list[_Leaf], plan: PruningPlan, *, rtol: float, atol: float) -> float:
    """The largest absolute error over ``leaves``; :class:`VerificationError` if any is out of tolerance."""
    failures = []
    largest = 0.0
    for leaf in leaves:
        error, scale = leaf.errors()
        largest = max(largest, error)  # only returned when no error is NaN
        tolerance = atol + rtol * scale
        if not error <= tolerance:  # also catches NaN
            failures.append((leaf, error, scale, tolerance))
    if failures:
        leaf, error, scale, tolerance = max(failures, key=lambda f: (f[1] != f[1], f[1]))  # NaN first
        others = f" ({len(failures) - 1} other outputs differ too)" if len(failures) > 1 else ""
        raise VerificationError(
            f"the pruned model differs from the original with blocks {plan.removed} replaced by the identity: "
            f"in its {_output_name(leaf.path)}, max abs error {error:.3g} > {tolerance:.3g} (atol {atol:g} + "
            f"rtol {rtol:g} x {scale:.3g}){others}. The block removal changed more than the removed branches; "
            "please report this model."
        )
    return largest
