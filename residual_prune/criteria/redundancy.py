"""Layer-redundancy criteria from the pruning of large language models, for any residual network.

Block influence (ShortGPT) and angular distance (Gromov et al.) compare the hidden state a block
(or a run of blocks) receives with the one it passes on; loss drop (SLEB, Shortened LLaMA)
measures the loss without the block. All three run forwards only, on dict batches (Hugging Face
style) as on ``(x, y)`` pairs, and score whole blocks (``granularity="block"``) or single residual
branches (``granularity="sublayer"``: a transformer layer's attention and MLP apart, as FinerCut
does), whose hidden states module hooks read where :class:`~residual_prune.analysis.BranchEnds`
says: a branch ``y = x + f(x)`` receives ``x`` and passes on ``x + f(x)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..analysis import ResidualBlock
from ..branch_surgery import zeroed_outputs
from ..errors import CriterionError, InvalidArgumentError
from ..modes import preserved_state
from ..surgery import _holders, replace_with_identity
from ..tracing import _CONSTANTS, ModuleCall, first_argument
from ._common import BatchRunner, ForwardFn, LossFn
from ._registry import register_criterion
from .activation import _tensor

__all__ = [
    "Reading",
    "angular_distance_importance",
    "block_influence_importance",
    "block_windows",
    "loss_drop_importance",
    "reading",
    "token_cosines",
]

Window = tuple[ResidualBlock, ...]


def token_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of two hidden states per token, in float64.

    Over the last dimension of ``(N, L, D)`` tokens and ``(N, D)`` vectors; over the channels
    (dimension 1) of ``(N, C, *spatial)`` feature maps, one channel vector per position. Two zero
    vectors are equal (cosine 1); a zero vector and another, orthogonal (cosine 0).
    """
    if a.shape != b.shape:
        raise CriterionError(
            f"cannot compare hidden states of shapes {tuple(a.shape)} and {tuple(b.shape)}; the criterion needs "
            "blocks whose output has the shape of their input (find_blocks reports those as removable)"
        )
    if a.dim() < 2:
        raise InvalidArgumentError(f"a hidden state of shape {tuple(a.shape)} has no batch dimension and no features")
    dim = 1 if a.dim() >= 4 else -1
    a, b = a.double(), b.double()
    squares = (a * a).sum(dim) * (b * b).sum(dim)
    both_zero = (a == 0).all(dim) & (b == 0).all(dim)
    # dot / sqrt(|a|^2 |b|^2): exactly 1 for equal vectors and positive powers of two of them, -1 for their negation
    cos = torch.where(squares > 0, (a * b).sum(dim) / squares.sqrt().clamp_min(1e-300), both_zero.double())
    return cos.clamp(-1.0, 1.0)


def _first_input(args: tuple[Any, ...], kwargs: Mapping[str, Any], name: str) -> torch.Tensor:
    """What a module was called with first: its first positional argument, else its first keyword argument."""
    return _tensor(first_argument(args, dict(kwargs))[1], f"input of {name!r}")


@dataclasses.dataclass(frozen=True)
class Reading:
    """Where module hooks read the hidden states a scored unit receives and passes on.

    The input is the first argument of ``enters``; the output is what ``leaves`` returns (its tensor,
    or the first of its tuple), plus the input where ``adds_input`` (a sub-layer: ``leaves`` returns
    its branch ``f(x)``, the unit passes on ``x + f(x)``). A block enters and leaves by its own module.
    """

    name: str
    enters: str
    leaves: str
    adds_input: bool


def reading(block: ResidualBlock, criterion: str) -> Reading:
    """The :class:`Reading` of a block or sub-layer; :class:`CriterionError` for a sub-layer no module call bounds."""
    if block.kind == "block":
        return Reading(block.name, block.name, block.name, False)
    ends = block.ends
    if ends is None or ends.enters is None or ends.leaves is None:
        raise CriterionError(
            f"{criterion} reads the hidden states a sub-layer receives and passes on with module hooks, but no "
            f"module called once receives the input of {block.name!r} or returns its branch; score it with a "
            "criterion that reads weights ('snip', 'grasp', 'synflow', 'l1'), or use granularity='block'"
        )
    return Reading(block.name, ends.enters, ends.leaves, True)


def _follows(a: ResidualBlock, b: ResidualBlock) -> bool:
    """Whether ``b`` takes ``a``'s output: for sub-layers, as its input (:attr:`ResidualBlock.follows`); for
    blocks, ``b`` runs right after ``a`` (units are in the order their outputs are made, so only the units
    nested in ``b`` come between) and is the child of ``a``'s container right after it."""
    if a.kind == "sublayer":
        return b.follows == a.name
    return b.order == a.order + 1 + len(b.contains) and b.index == a.index + 1


def block_windows(blocks: Sequence[ResidualBlock], n: int) -> list[Window]:
    """Every run of ``n`` of ``blocks`` that run one after the other, by execution order of their first block:
    blocks that are consecutive children of one container (same ``stage``, consecutive ``index``), sub-layers
    each of which takes the previous one's output (a layer's MLP, then the next layer's attention)."""
    if n < 1:
        raise InvalidArgumentError(f"a run of blocks has at least one block, got n={n!r}")
    groups: dict[str, list[ResidualBlock]] = {}
    for block in sorted(blocks, key=lambda b: b.index if b.kind == "block" else b.order):
        groups.setdefault(block.stage if block.kind == "block" else "", []).append(block)
    found = [
        tuple(members[i : i + n])
        for members in groups.values()
        for i in range(len(members) - n + 1)
        if all(_follows(a, b) for a, b in zip(members[i : i + n - 1], members[i + 1 : i + n]))
    ]
    return sorted(found, key=lambda window: window[0].order)


def _window_means(
    model: nn.Module,
    windows: Sequence[Window],
    data: Any,
    measure: Callable[[torch.Tensor], torch.Tensor],
    *,
    criterion: str,
    num_batches: int | None,
    progress: bool,
    forward_fn: ForwardFn | None,
) -> list[float]:
    """For each window, the mean of ``measure(cosines)`` over the tokens of every batch, the cosines (see
    :func:`token_cosines`) between the input of its first unit and the output of its last (see :class:`Reading`).

    Runs in eval mode under ``no_grad``; the model is left exactly as it was.
    """
    readings = {b.name: reading(b, criterion) for window in windows for b in (window[0], window[-1])}
    ending = {name: [i for i, w in enumerate(windows) if w[-1].name == name] for name in readings}
    totals = [0.0] * len(windows)
    counts = [0] * len(windows)
    inputs: dict[str, torch.Tensor] = {}
    measured: set[int] = set()

    def enter(r: Reading) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            inputs[r.name] = _first_input(args, kwargs, r.enters).clone()  # safe from in-place updates

        return hook

    def received(name: str, what: str) -> torch.Tensor:
        if name not in inputs:
            raise CriterionError(f"{what} {name!r} did not receive its input before; {criterion} needs them in order")
        return inputs[name]

    def leave(r: Reading) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            out = _tensor(output, f"output of {r.leaves!r}")
            if r.adds_input:
                out = received(r.name, "the sub-layer") + out  # x + f(x), as the residual addition computes it
            for i in ending[r.name]:
                values = measure(token_cosines(received(windows[i][0].name, "the first unit of a window"), out))
                totals[i] += float(values.sum())
                counts[i] += values.numel()
                measured.add(i)

        return hook

    handles = []
    with preserved_state(model, "eval"), torch.no_grad():
        try:
            for r in readings.values():
                handles.append(model.get_submodule(r.enters).register_forward_pre_hook(enter(r), with_kwargs=True))
                if ending[r.name]:
                    handles.append(model.get_submodule(r.leaves).register_forward_hook(leave(r)))
            run = BatchRunner(criterion, forward_fn=forward_fn)
            for batch in run.batches(data, num_batches, progress=progress):
                run.outputs(model, batch)
                missing = [windows[i][-1].name for i in range(len(windows)) if i not in measured]
                if missing:
                    raise CriterionError(f"{missing} did not run in the forward pass of batch {batch.index}")
                measured.clear()
                inputs.clear()
        finally:
            for handle in handles:
                handle.remove()
            inputs.clear()
    return [total / count for total, count in zip(totals, counts)]


@register_criterion("block_influence", requires_data=True, gradient_based=False, source="builtin")
def block_influence_importance(
    model: nn.Module,
    blocks: Sequence[ResidualBlock],
    data: Any,
    *,
    num_batches: int | None = 4,
    progress: bool = True,
    forward_fn: ForwardFn | None = None,
) -> dict[str, float]:
    """Block Influence (Men et al., "ShortGPT: Layers in Large Language Models are More Redundant Than
    You Expect", 2024).

    Importance of a block = ``BI = 1 - cos(x_in, x_out)``, the cosine between the hidden state the
    block receives and the one it returns, averaged over the tokens of ``num_batches`` batches
    (``None``: all of ``data``). ShortGPT scores the layers of a language model on its ``(N, L, D)``
    token states; here any block the library finds: tokens and ``(N, D)`` vectors are compared over
    their last dimension, feature maps ``(N, C, H, W)`` by their channel vector at every position
    (channels first). The input is the block's first positional argument (else its first keyword
    argument), the output the tensor it returns (or the first of its tuple). A block that returns
    its input (or a positive multiple of it) scores 0; one that negates it, 2. A sub-layer
    (``granularity="sublayer"``, FinerCut's attention and MLP apart) compares its input ``x`` with
    ``x + f(x)`` (see :class:`Reading`). Needs a trained model and batches ``(x, y)`` or dicts of keyword
    arguments (labels unused; ``forward_fn(model, batch)`` runs other forms); no gradients. Runs in
    eval mode; the model is left exactly as it was. Higher = keep.
    """
    means = _window_means(
        model,
        [(b,) for b in blocks],
        data,
        lambda cos: 1.0 - cos,
        criterion="block_influence",
        num_batches=num_batches,
        progress=progress,
        forward_fn=forward_fn,
    )
    return {b.name: mean for b, mean in zip(blocks, means)}


def _window_scores(
    blocks: Sequence[ResidualBlock], windows: Sequence[Window], distances: Sequence[float]
) -> dict[str, float]:
    """Per block, the smallest distance of the windows it is in, such that the ``n`` lowest scores are exactly the
    best window (the first in execution order among equals): the blocks of a window that ties with it score the
    next float above, blocks in no window 1 (the largest angular distance) or more."""
    best = min(range(len(windows)), key=lambda i: (distances[i], windows[i][0].order))
    chosen, floor = {b.name for b in windows[best]}, math.nextafter(distances[best], math.inf)
    smallest = dict.fromkeys((b.name for b in blocks), 1.0)
    for window, distance in zip(windows, distances):
        for block in window:
            smallest[block.name] = min(smallest[block.name], distance)
    return {name: distances[best] if name in chosen else max(value, floor) for name, value in smallest.items()}


@register_criterion("angular_distance", requires_data=True, gradient_based=False, source="builtin")
def angular_distance_importance(
    model: nn.Module,
    blocks: Sequence[ResidualBlock],
    data: Any,
    *,
    n: int = 1,
    num_batches: int | None = 4,
    progress: bool = True,
    forward_fn: ForwardFn | None = None,
) -> dict[str, float]:
    """Angular distance (Gromov et al., "The Unreasonable Ineffectiveness of the Deeper Layers", 2024).

    To remove ``n`` consecutive blocks, Gromov et al. drop the run ``l .. l+n-1`` whose input
    ``x_l`` and output ``x_{l+n}`` are closest: ``d = arccos(cos(x_l, x_{l+n})) / pi``, in
    ``[0, 1]``. Here a window is ``n`` blocks that are consecutive children of one container and
    run one after the other; ``d`` compares the input of its first block with the output of its
    last, per token (as :func:`block_influence_importance` reads hidden states; the paper uses the
    last token only), averaged over the tokens of ``num_batches`` batches (``None``: all of
    ``data``). :func:`~residual_prune.plan_pruning` passes ``n``, the number of blocks it removes.
    Score of a block = the smallest ``d`` of the windows it is in; the best window (the first in
    execution order among equal ones) scores ``d``, every other block more (the next float above
    where it ties, 1 or more where it is in no window), so the plan removes exactly that window.
    ``n=1`` scores each block alone. Sub-layers (``granularity="sublayer"``) form windows of ``n``
    that run one after the other anywhere in the model (a layer's MLP, then the next layer's
    attention), read as :func:`block_influence_importance` reads them. Needs a trained
    model and batches ``(x, y)`` or dicts of keyword arguments (labels unused; ``forward_fn(model,
    batch)`` runs other forms); no gradients. Runs in eval mode; the model is left exactly as it
    was. Higher = keep.

    Raises:
        InvalidArgumentError: no ``n`` of the blocks are consecutive in one container (sub-layers: none run
            one after the other).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidArgumentError(f"n must be a non-negative integer (the number of blocks to remove), got {n!r}")
    size = max(n, 1)  # n=0 removes nothing: score the blocks alone
    windows = block_windows(blocks, size)
    if not windows:
        raise InvalidArgumentError(
            f"angular_distance removes {size} consecutive blocks (of one container; sub-layers: each taking the "
            f"previous one's output), but no {size} of the {len(blocks)} removable blocks run so; pass a smaller "
            "n, or use a criterion that scores blocks alone ('block_influence', 'loss_drop')"
        )
    distances = _window_means(
        model,
        windows,
        data,
        lambda cos: torch.arccos(cos) / math.pi,
        criterion="angular_distance",
        num_batches=num_batches,
        progress=progress,
        forward_fn=forward_fn,
    )
    return _window_scores(blocks, windows, distances)


def _module_call(name: str, keyword: str | None, output: Any) -> ModuleCall:
    """How a stand-in for block ``name`` must answer, from what the block returned: the tensor, or a tuple of
    it and constants (tensors after the first count as None, as find_blocks reads removable blocks)."""
    if isinstance(output, torch.Tensor):
        return ModuleCall(None, True, keyword)
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        rest = tuple(None if isinstance(o, torch.Tensor) else o for o in output[1:])
        if all(isinstance(o, _CONSTANTS) for o in rest):
            return ModuleCall(None, True, keyword, rest)
    raise CriterionError(
        f"block {name!r} returned a {type(output).__name__} that a stand-in cannot rebuild from its input; "
        "loss_drop needs blocks that return their hidden state (alone or first in a tuple of constants)"
    )


@contextlib.contextmanager
def _recorded_calls(modules: Mapping[str, nn.Module]) -> Iterator[dict[str, ModuleCall]]:
    """While inside, record how each block is called (see :class:`~residual_prune.surgery.Bypass`)."""
    keywords: dict[str, str | None] = {}
    calls: dict[str, ModuleCall] = {}

    def enter(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            keywords[name] = first_argument(args, kwargs)[0]

        return hook

    def leave(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            calls[name] = _module_call(name, keywords.get(name), output)

        return hook

    handles = [m.register_forward_pre_hook(enter(name), with_kwargs=True) for name, m in modules.items()]
    handles += [m.register_forward_hook(leave(name)) for name, m in modules.items()]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _stood_in(model: nn.Module, name: str, calls: Mapping[str, ModuleCall]) -> Iterator[None]:
    """While inside, block ``name`` is replaced by its stand-in wherever it is held, as ``apply_plan`` would."""
    module = model.get_submodule(name)
    holders = _holders(model, module)
    replace_with_identity(model, [name], calls)
    try:
        yield
    finally:
        for parent, key in holders:
            parent._modules[key] = module


@contextlib.contextmanager
def _without(model: nn.Module, block: ResidualBlock, calls: Mapping[str, ModuleCall]) -> Iterator[None]:
    """While inside, ``block`` is removed: a block replaced by its stand-in, as ``apply_plan`` would replace it;
    a sub-layer's branch made to return zeros (the module that ends it still runs, its output is zeroed)."""
    if block.kind == "block":
        with _stood_in(model, block.name, calls):
            yield
        return
    leaves = block.ends.leaves if block.ends else None
    if leaves is None:
        raise CriterionError(
            f"loss_drop removes a sub-layer by zeroing the output of the module that ends its branch, but the "
            f"branch of {block.name!r} ends in no module called once; use granularity='block'"
        )
    handles = zeroed_outputs(model, [leaves])
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@register_criterion("loss_drop", requires_data=True, gradient_based=False, source="builtin")
def loss_drop_importance(
    model: nn.Module,
    blocks: Sequence[ResidualBlock],
    data: Any,
    *,
    num_batches: int | None = 4,
    progress: bool = True,
    loss_fn: LossFn | None = None,
    forward_fn: ForwardFn | None = None,
) -> dict[str, float]:
    """Loss drop: the loss increase without the block (SLEB, Song et al., "SLEB: Streamlining LLMs through
    Redundancy Verification and Elimination of Transformer Blocks", 2024; Kim et al., "Shortened LLaMA:
    Depth Pruning for Large Language Models", 2024).

    Importance of a block = ``L(without block) - L(model)``, the calibration loss with the block
    alone removed minus the loss of the full model, averaged over ``num_batches`` batches
    (``None``: all of ``data``). SLEB and Shortened LLaMA use a language model's perplexity (SLEB
    removes blocks one at a time, scoring again after each); here the loss of any model, all blocks
    scored once against the full model: the model's own ``outputs.loss`` for dict batches with
    ``"labels"``, the cross-entropy for ``(x, y)`` pairs, or ``loss_fn(outputs, batch)``
    (``forward_fn(model, batch)`` runs other forms). The block is removed as ``apply_plan``
    removes it: replaced by its stand-in (:class:`~residual_prune.surgery.Bypass`, shaped by how
    the block was called), then put back. A sub-layer (``granularity="sublayer"``, FinerCut's
    attention and MLP apart) is removed by zeroing its branch ``f(x)``, the output of the module
    that ends it (:class:`~residual_prune.analysis.BranchEnds`). Needs a
    trained model and labelled batches; no gradients; one extra forward pass per block and batch.
    Runs in eval mode; the model is left exactly as it was. Higher = keep.
    """
    modules = {b.name: model.get_submodule(b.name) for b in blocks if b.kind == "block"}
    totals = {b.name: 0.0 for b in blocks}
    batches = 0
    with preserved_state(model, "eval"), torch.no_grad():
        run = BatchRunner("loss_drop", loss_fn=loss_fn, forward_fn=forward_fn)
        for batch in run.batches(data, num_batches, progress=progress):
            with _recorded_calls(modules) as calls:
                base = float(run.loss(model, batch))
            for block in blocks:
                with _without(model, block, calls):
                    totals[block.name] += float(run.loss(model, batch)) - base
            batches += 1
    return {name: total / batches for name, total in totals.items()}
