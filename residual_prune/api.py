"""The one-call entry points: plan which blocks to remove, and prune."""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .analysis import ResidualBlock, discover
from .criteria import CriterionInfo, accepted_options, get_criterion_info, warn_if_collapsed
from .errors import (
    CriterionError,
    DataError,
    InvalidArgumentError,
    MissingDataError,
    NoRemovableBlocksError,
    ResidualPruneError,
)
from .granularity import check_inplace
from .inputs import ModelInputs, batch_inputs
from .plan import PruningPlan, architecture_fingerprint
from .plan_check import CheckedPlan
from .rewrite import leaf_module_names
from .surgery import apply_checked
from .tracing import check_leaf_modules

__all__ = ["plan_pruning", "prune_layers"]


def _check_one_of(n: int | None, ratio: float | None) -> None:
    if (n is None) == (ratio is None):
        raise InvalidArgumentError(
            "give exactly one of n (number of blocks to remove) and ratio (fraction of the removable blocks), "
            f"e.g. n=2 or ratio=0.25; got n={n!r}, ratio={ratio!r}"
        )


def _count(n: int | None, ratio: float | None, available: int) -> int:
    """How many of ``available`` blocks to remove (``n`` and ``ratio`` already checked by ``_check_one_of``)."""
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidArgumentError(f"n must be a non-negative integer, got {n!r}")
        if n > available:
            raise InvalidArgumentError(
                f"n={n} but the model has only {available} removable blocks; pass n <= {available} "
                "(find_blocks(model, example_inputs) lists them and says why the others are kept)"
            )
        return n
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
        raise InvalidArgumentError(f"ratio must be a number in [0, 1], got {ratio!r}")
    return int(math.floor(ratio * available + 0.5))


def _first_inputs(data: Any) -> tuple[Any, Any]:
    """The first batch's inputs (see :func:`~residual_prune.inputs.batch_inputs`) and a ``data`` that still
    yields every batch."""
    if (isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor)) or isinstance(
        data, Mapping
    ):  # a single batch
        return batch_inputs(data), data
    try:
        iterator = iter(data)
    except TypeError:
        raise DataError(
            f"data must be a DataLoader or an iterable of (inputs, targets), got {type(data).__name__}"
        ) from None
    try:
        first = next(iterator)
    except StopIteration:
        raise DataError("data gave no batches; pass at least one (inputs, targets) batch") from None
    if iterator is data:  # a one-shot iterator: put the batch back
        data = itertools.chain([first], iterator)
    return batch_inputs(first), data


def _validated(scores: Any, blocks: Sequence[ResidualBlock], criterion: str) -> dict[str, float]:
    if not isinstance(scores, Mapping):
        raise CriterionError(
            f"criterion {criterion!r} returned a {type(scores).__name__}, not a mapping of block name -> score"
        )
    missing = [b.name for b in blocks if b.name not in scores]
    if missing:
        raise CriterionError(
            f"criterion {criterion!r} returned no score for block(s) {', '.join(missing)}; a criterion must score "
            "every block it is given"
        )
    out = {}
    for b in blocks:
        try:
            value = float(scores[b.name])
        except OverflowError:
            value = math.inf
        except (TypeError, ValueError):
            raise CriterionError(
                f"criterion {criterion!r} gave block {b.name} the non-numeric score {scores[b.name]!r}"
            ) from None
        if not math.isfinite(value):
            raise CriterionError(
                f"criterion {criterion!r} gave block {b.name} the score {value}; scores must be finite. Check the "
                "data (NaN inputs?), the model's numerics, or the criterion's options (e.g. temperature)."
            )
        out[b.name] = value
    return out


def _related(a: ResidualBlock, b: ResidualBlock) -> bool:
    return a.name in b.contains or b.name in a.contains


def _capacity(blocks: Sequence[ResidualBlock]) -> int:
    """The most of ``blocks`` that can be removed together: units nest like a tree, so this is the
    number of those with none of the others inside them."""
    names = {b.name for b in blocks}
    return sum(1 for b in blocks if not names.intersection(b.contains))


def _check_capacity(blocks: Sequence[ResidualBlock], k: int) -> None:
    capacity = _capacity(blocks)
    if k > capacity:
        outer = next(b for b in blocks if any(c in {o.name for o in blocks} for c in b.contains))
        raise InvalidArgumentError(
            f"{k} blocks were asked for, but only {capacity} of the {len(blocks)} removable blocks can be removed "
            f"together: some lie inside others (e.g. {outer.name} contains {outer.contains[0]}, and removing it "
            f"removes both). Pass n <= {capacity}."
        )


def _select(blocks: Sequence[ResidualBlock], scores: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` least important blocks (ties broken by execution order), never one inside another.

    Greedy by score, except that a block is passed over when taking it would leave too few
    blocks to reach ``k`` (``k`` is at most :func:`_capacity`, checked before scoring).
    """
    chosen: list[ResidualBlock] = []
    free = sorted(blocks, key=lambda b: (scores[b.name], b.order))
    for block in list(free):
        if len(chosen) == k:
            break
        if block not in free:
            continue  # related to a block already chosen
        free.remove(block)
        rest = [b for b in free if not _related(b, block)]
        if len(chosen) + 1 + _capacity(rest) >= k:
            chosen.append(block)
            free = rest
    return [b.name for b in sorted(chosen, key=lambda b: b.order)]


def _score(
    info: CriterionInfo,
    model: nn.Module,
    blocks: list[ResidualBlock],
    data: Any,
    example_inputs: Any,
    criterion_kwargs: dict[str, Any],
    functions: dict[str, Any],
    n: int,
) -> Any:
    """Call the criterion; a wrong option is the caller's error, anything raised inside it the criterion's.

    ``functions``: the ``loss_fn``/``forward_fn`` the caller gave (not None), which the criterion must accept.
    ``n``: how many blocks the plan removes, for a criterion that takes it (one that scores runs of ``n`` blocks).
    """
    for name, fn in functions.items():
        if not callable(fn):
            raise InvalidArgumentError(f"{name} must be a function, got {type(fn).__name__}")
    candidates = {"example_inputs": example_inputs, "n": n, **functions}
    options = accepted_options(info, candidates)  # where the signature takes them
    ignored = sorted(set(functions) - set(options))
    if ignored:
        raise InvalidArgumentError(
            f"criterion {info.name!r} does not take {' or '.join(ignored)}, which would be ignored; leave it out, "
            "or use a criterion that takes it (loss_fn: snip, grasp, loss_drop; forward_fn: also kl, pls, hrank, "
            "expectabs, block_influence, angular_distance)"
        )
    try:
        inspect.signature(info.fn).bind(model, blocks, data, **options, **criterion_kwargs)
    except TypeError as exc:
        raise InvalidArgumentError(
            f"criterion {info.name!r} does not accept the options {sorted(criterion_kwargs)} ({exc}); check their "
            "names against the criterion's documentation"
        ) from None
    except ValueError:  # no signature to check (a builtin): let the call decide
        pass
    try:
        return info.fn(model, blocks, data, **options, **criterion_kwargs)
    except ResidualPruneError:
        raise
    except Exception as exc:
        raise CriterionError(f"criterion {info.name!r} failed: {type(exc).__name__}: {exc}") from exc


def _planned(
    model: nn.Module,
    *,
    criterion: str = "grasp",
    n: int | None = None,
    ratio: float | None = None,
    data: Any = None,
    example_inputs: Any = None,
    policy: str = "default",
    leaf_modules: Iterable[type[nn.Module]] = (),
    granularity: str = "block",
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    forward_fn: Callable[[nn.Module, Any], Any] | None = None,
    frontend: str = "auto",
    **criterion_kwargs: Any,
) -> CheckedPlan:
    """:func:`plan_pruning`, also returning the analysis the plan was made on (so it need not be redone)."""
    info = get_criterion_info(criterion)
    _check_one_of(n, ratio)
    if info.requires_data and data is None:
        raise MissingDataError(
            f"criterion {criterion!r} needs labelled data: pass data=<a DataLoader or an iterable of (inputs, "
            "targets) batches>, or use a data-free criterion ('synflow', 'l1', 'random')"
        )
    if example_inputs is None:
        if data is None:
            raise InvalidArgumentError(
                "pass example_inputs (e.g. torch.randn(1, 3, 224, 224)) so the model can be traced, or data"
            )
        example_inputs, data = _first_inputs(data)
    leaf_modules = check_leaf_modules(leaf_modules)
    inputs = ModelInputs.of(example_inputs)
    if info.reads_weights and any(p.is_meta for p in model.parameters()):
        raise InvalidArgumentError(
            f"criterion {criterion!r} reads the weights, but {type(model).__name__} is on the meta device and has "
            "none; plan on the architecture alone with criterion='random', or load the weights first "
            "(model.to_empty(device='cpu') and model.load_state_dict(...))"
        )
    analysis, blocks = discover(
        model,
        inputs,
        policy=policy,
        leaf_modules=leaf_modules,
        granularity=granularity,
        count_flops=False,
        frontend=frontend,
    )
    removable = [b for b in blocks if b.removable]
    if not removable:
        found = (
            f"{len(blocks)} residual units were found but none is removable, e.g. {blocks[0].name}: {blocks[0].reason}"
            if blocks
            else "no residual connection (identity shortcut + addition) was found"
        )
        raise NoRemovableBlocksError(
            f"{type(model).__name__} has no removable residual block: {found}. Layer pruning needs a residual "
            "network; try policy='default' if you used 'paper', or a filter-pruning library for plain networks."
        )
    k = _count(n, ratio, len(removable))
    _check_capacity(removable, k)
    functions = {name: fn for name, fn in (("loss_fn", loss_fn), ("forward_fn", forward_fn)) if fn is not None}
    raw = _score(info, model, removable, data, example_inputs, dict(criterion_kwargs), functions, k)
    scores = _validated(raw, removable, criterion)
    if info.gradient_based:
        warn_if_collapsed(model, removable, scores, criterion)
    plan = PruningPlan(
        removed=_select(removable, scores, k),
        scores=scores,
        criterion=criterion,
        policy=policy,
        fingerprint=architecture_fingerprint(model),
        model=type(model).__name__,
        num_params=sum(p.numel() for p in model.parameters()),
        criterion_kwargs=dict(criterion_kwargs),
        granularity=granularity,
        input_shapes=[list(t.shape) for t in inputs.tensors()],
        leaf_modules=leaf_module_names(leaf_modules),
        input_dtypes=[str(t.dtype).removeprefix("torch.") for t in inputs.tensors()],
        frontend=analysis.graph.traced.frontend,
        inputs=inputs.to_json(),
    )
    return CheckedPlan(plan, analysis, [b for b in removable if b.name in plan.removed])


def plan_pruning(
    model: nn.Module,
    *,
    criterion: str = "grasp",
    n: int | None = None,
    ratio: float | None = None,
    data: Any = None,
    example_inputs: Any = None,
    policy: str = "default",
    leaf_modules: Iterable[type[nn.Module]] = (),
    granularity: str = "block",
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    forward_fn: Callable[[nn.Module, Any], Any] | None = None,
    frontend: str = "auto",
    **criterion_kwargs: Any,
) -> PruningPlan:
    """Score the removable residual blocks of ``model`` and choose the least important ones.

    Args:
        model: the network (never modified).
        criterion: a name from :func:`list_criteria` (built-in: random, l1, snip, grasp,
            synflow; for trained networks: hrank, expectabs, pls, kl, block_influence, loss_drop,
            angular_distance).
        n: number of blocks to remove, or ``ratio``: the fraction of the removable blocks.
        data: batches for data-driven criteria: a DataLoader or an iterable of ``(x, y)`` pairs, or of
            dicts of keyword arguments (Hugging Face style, called as ``model(**batch)``; the targets
            under ``"labels"``, the loss the model's ``outputs.loss``).
        example_inputs: what the model is called with, for capturing its graph: a tensor, a tuple of
            positional arguments, or a dict of keyword arguments (see :func:`find_blocks`); defaults to
            one sample of the first batch of ``data`` (for dict batches: the first batch without its
            ``"labels"``).
        policy: ``"default"`` or ``"paper"`` (see :func:`find_blocks`).
        leaf_modules: module classes to keep opaque while tracing.
        granularity: ``"block"`` (remove whole residual units) or ``"sublayer"`` (remove single
            residual branches, e.g. only the MLP of a transformer block; see :func:`find_blocks`).
        loss_fn: ``loss_fn(outputs, batch) -> scalar loss`` for the gradient criteria (snip, grasp),
            in place of the cross-entropy of ``(x, y)`` pairs or the ``outputs.loss`` of dict batches.
        forward_fn: ``forward_fn(model, batch) -> outputs`` for data-driven criteria, in place of
            ``model(x)`` / ``model(**batch)``: for batches of other forms (it moves them to the
            model's device itself). Neither is stored in the plan.
        frontend: the capture front-end, ``"auto"``, ``"fx"``, ``"export"``, ``"export-strict"`` or ``"eager"``
            (see :func:`find_blocks`); the plan records the one that found the blocks.
        **criterion_kwargs: options of the criterion, e.g. ``num_batches=4``, ``bn_mode="eval"``, ``seed=1``.

    Raises:
        UnknownCriterionError: no criterion has that name (the message lists the known ones).
        MissingDataError: a data-driven criterion was given no ``data``.
        InvalidArgumentError: ``n``/``ratio``, ``policy``, ``granularity`` or a criterion option is invalid,
            or the criterion does not take ``loss_fn``/``forward_fn``.
        NoRemovableBlocksError: the model has no removable residual unit.
        TraceError: no front-end can capture the model (the message gives each one's reason, the
            failing module or line, and what to pass instead).
        DataError: the inputs or batches do not fit the model.
        CriterionError: the criterion failed, returned NaN/inf, or missed a block.
    """
    return _planned(
        model,
        criterion=criterion,
        n=n,
        ratio=ratio,
        data=data,
        example_inputs=example_inputs,
        policy=policy,
        leaf_modules=leaf_modules,
        granularity=granularity,
        loss_fn=loss_fn,
        forward_fn=forward_fn,
        frontend=frontend,
        **criterion_kwargs,
    ).plan


def prune_layers(
    model: nn.Module,
    *,
    criterion: str = "grasp",
    n: int | None = None,
    ratio: float | None = None,
    data: Any = None,
    example_inputs: Any = None,
    policy: str = "default",
    inplace: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Plan and apply in one call: return ``model`` without its ``n`` (or ``ratio``) least important blocks.

    Examples:
        >>> pruned = prune_layers(resnet56(), criterion="grasp", n=4, data=loader, num_batches=2)

    The model is copied unless ``inplace=True``. See :func:`plan_pruning` for the arguments;
    use :func:`plan_pruning` + :func:`apply_plan` to keep the plan.
    """
    check_inplace(kwargs.get("granularity", "block"), inplace)  # before any scoring
    checked = _planned(
        model, criterion=criterion, n=n, ratio=ratio, data=data, example_inputs=example_inputs, policy=policy, **kwargs
    )
    leaf_modules = check_leaf_modules(kwargs.get("leaf_modules", ()))
    return apply_checked(model, checked, inplace=inplace, leaf_modules=leaf_modules)
