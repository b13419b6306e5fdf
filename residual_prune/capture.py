"""One entry point to the capture front-ends: torch.fx, torch.export and an eager recording.

``frontend="auto"`` tries torch.fx first where it can apply (positional tensor inputs, a model
with real weights), then torch.export (non-strict), then, for a model with real weights, the
eager recording of one run, and says what each front-end reported when all fail. ``"fx"``,
``"export"``, ``"export-strict"`` and ``"eager"`` use one front-end only.
:func:`count_flops` counts a whole model's FLOPs in the same capture.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from .errors import DataError, InvalidArgumentError, TraceError
from .exporting import capture_export
from .inputs import ModelInputs
from .modes import on_meta
from .recording import capture_eager
from .tracing import TracedModel, trace, unanalysable_wrapper

__all__ = ["FRONTENDS", "capture", "count_flops", "frontend_order"]

FRONTENDS = ("auto", "fx", "export", "export-strict", "eager")
"""The capture front-ends: ``"auto"`` (torch.fx, then torch.export, then eager), ``"fx"`` (torch.fx symbolic
tracing, shapes from fake tensors), ``"export"`` (torch.export non-strict, on fake tensors), ``"export-strict"``
(torch.export through TorchDynamo), ``"eager"`` (one real run in eval mode, its ATen operators recorded: the
path that run took, for models whose forward branches on tensor values)."""


def frontend_order(frontend: str, model: nn.Module, inputs: ModelInputs, *, needs_fx: bool = False) -> list[str]:
    """The front-ends to try, in order, for ``frontend``; :class:`InvalidArgumentError` if none can apply."""
    if frontend not in FRONTENDS:
        raise InvalidArgumentError(f"unknown frontend {frontend!r}; choose one of {', '.join(map(repr, FRONTENDS))}")
    weightless = on_meta(model)
    fx_applies = inputs.is_tensor_tuple and not weightless
    if frontend == "auto":
        order = (["fx"] if fx_applies else []) + ([] if needs_fx else ["export"] + ([] if weightless else ["eager"]))
    else:
        order = [frontend]
    if needs_fx and order != ["fx"]:
        raise InvalidArgumentError(
            "the train-mode graph is captured by torch.fx only, so it needs frontend='fx' (or 'auto') and "
            "positional tensor inputs on a model with real weights"
        )
    if order == ["fx"] and not fx_applies:
        why = "the model is on the meta device" if weightless else f"the inputs are {inputs.describe()}"
        raise InvalidArgumentError(
            f"frontend='fx' needs positional tensor inputs and real weights, but {why}; use frontend='export' "
            "(or 'auto')"
        )
    return order


def capture(
    model: nn.Module,
    example_inputs: Any,
    *,
    frontend: str = "auto",
    leaf_modules: Iterable[type[nn.Module]] = (),
    count_flops: bool = True,
    training: bool = False,
) -> TracedModel:
    """Capture ``model``'s graph with the front-ends ``frontend`` names (see :data:`FRONTENDS`).

    ``leaf_modules`` and ``training`` apply to torch.fx only (torch.export traces every module
    down to ATen operators, in eval mode); ``training`` restricts the choice to torch.fx.

    Raises:
        TraceError: every front-end tried failed; the message gives each one's reason and what to do.
        DataError: the inputs do not fit the model.
        InvalidArgumentError: ``frontend`` is unknown or cannot apply to these inputs.
    """
    wrapper = unanalysable_wrapper(model)
    if wrapper:
        raise TraceError(f"cannot capture {type(model).__name__}: {wrapper}.")
    inputs = ModelInputs.of(example_inputs)
    order = frontend_order(frontend, model, inputs, needs_fx=training)
    failures: list[Exception] = []
    for name in order:
        try:
            if name == "fx":
                return trace(model, inputs.args, leaf_modules, count_flops=count_flops, training=training)
            if name == "eager":
                return capture_eager(model, inputs, count_flops=count_flops)
            return capture_export(model, inputs, strict=name == "export-strict", count_flops=count_flops)
        except (TraceError, DataError) as exc:
            if len(order) == 1:
                raise
            failures.append(exc)
    reasons = "\n".join(f"- {name}: {exc}" for name, exc in zip(order, failures))
    error = DataError if any(isinstance(f, DataError) for f in failures) else TraceError  # inputs that do not fit
    raise error(f"no front-end could capture {type(model).__name__}:\n{reasons}") from failures[-1]


def count_flops(model: nn.Module, example_inputs: Any, *, frontend: str = "auto") -> int | None:
    """The FLOPs of ``model`` called with ``example_inputs``, in fvcore's convention (a multiply-add is one
    FLOP), counted while capturing its graph (see :func:`capture`); None, with a
    :class:`~residual_prune.errors.FlopCountWarning`, where the capture works but the count does not."""
    flops = capture(model, example_inputs, frontend=frontend, count_flops=True).flops
    return None if flops is None else flops[""]
