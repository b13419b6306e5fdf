"""Activation criteria for trained networks: HRank and expectABS, adapted to whole blocks."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..analysis import ResidualBlock
from ..errors import CriterionError, InvalidArgumentError
from ..modes import preserved_state
from ._common import BatchRunner, ForwardFn
from ._registry import register_criterion

__all__ = [
    "block_module",
    "block_statistics",
    "expectabs_importance",
    "hrank_importance",
    "pooled",
]


def block_module(model: nn.Module, block: ResidualBlock, criterion: str = "this criterion") -> nn.Module:
    """The module of a whole block (sub-layers, ``granularity="sublayer"``, have no module of their own)."""
    if block.kind != "block":
        raise InvalidArgumentError(
            f"{criterion} scores the outputs of whole blocks and cannot score the sub-layer {block.name!r}; "
            "use granularity='block'"
        )
    return model.get_submodule(block.name)


def _tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    if not isinstance(value, torch.Tensor):
        raise CriterionError(f"the {what} is a {type(value).__name__}, not a tensor")
    return value


def pooled(output: torch.Tensor) -> torch.Tensor:
    """Global average pooling to one value per channel.

    ``(N, C, *spatial) -> (N, C)`` for 4-D and larger outputs (channels first), tokens
    ``(N, L, D) -> (N, D)`` (the mean token), ``(N, D)`` unchanged.
    """
    if output.dim() >= 4:
        return output.flatten(2).mean(2)
    if output.dim() == 3:
        return output.mean(1)
    if output.dim() == 2:
        return output
    raise InvalidArgumentError(f"cannot pool an output of shape {tuple(output.shape)}: it has no batch dimension")


def block_statistics(
    model: nn.Module,
    blocks: Sequence[ResidualBlock],
    data: Any,
    reduce: Callable[[torch.Tensor, torch.Tensor | None], Any],
    *,
    num_batches: int | None,
    criterion: str,
    progress: bool = True,
    with_input: bool = False,
    with_targets: bool = False,
    forward_fn: ForwardFn | None = None,
) -> list[tuple[torch.Tensor | None, dict[str, Any]]]:
    """Run the batches of ``data`` through the model (with ``forward_fn``, see
    :class:`~residual_prune.criteria._common.BatchRunner`) in eval mode under ``no_grad``, keeping only
    ``reduce(output, input)`` of every block (``input`` is a copy taken before the block runs,
    ``None`` unless ``with_input``). Returns ``(targets, {block name: reduced})`` per batch, the
    targets ``None`` unless ``with_targets`` (then a batch without them is a :class:`DataError`);
    the model is left exactly as it was.
    """
    modules = {b.name: block_module(model, b, criterion) for b in blocks}
    current: dict[str, Any] = {}
    inputs: dict[str, torch.Tensor] = {}

    def hooks(name: str) -> tuple[Callable[..., None], Callable[..., None]]:
        def pre(module: nn.Module, args: tuple[Any, ...]) -> None:
            inputs[name] = _tensor(args, f"input of block {name!r}").clone()  # safe from in-place updates

        def post(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if name in current:
                raise CriterionError(f"block {name!r} ran twice in one forward pass; {criterion} needs one output")
            current[name] = reduce(_tensor(output, f"output of block {name!r}"), inputs.pop(name, None))

        return pre, post

    results = []
    handles = []
    with preserved_state(model, "eval"), torch.no_grad():
        try:
            for name, module in modules.items():
                pre, post = hooks(name)
                if with_input:
                    handles.append(module.register_forward_pre_hook(pre))
                handles.append(module.register_forward_hook(post))
            run = BatchRunner(criterion, forward_fn=forward_fn)
            for batch in run.batches(data, num_batches, progress=progress):
                targets = batch.class_targets(criterion) if with_targets else None
                run.outputs(model, batch)
                missing = [n for n in modules if n not in current]
                if missing:
                    raise CriterionError(f"block(s) {missing} did not run in the forward pass of batch {batch.index}")
                results.append((targets, dict(current)))
                current.clear()
        finally:
            for handle in handles:
                handle.remove()
            inputs.clear()
    return results


def _mean_ranks(output: torch.Tensor, _: Any, relative: bool = False) -> torch.Tensor:
    if output.dim() < 3:
        raise InvalidArgumentError(
            f"hrank needs feature maps (at least 3-D outputs), but a block gave shape {tuple(output.shape)}"
        )
    maps = output.reshape(output.shape[0], -1, *output.shape[-2:]).float()
    ranks = torch.linalg.matrix_rank(maps).double().mean(dim=1).cpu()
    return ranks / min(output.shape[-2:]) if relative else ranks


@register_criterion("hrank", requires_data=True, gradient_based=False, source="builtin")
def hrank_importance(
    model: nn.Module,
    blocks: Sequence[ResidualBlock],
    data: Any,
    *,
    num_batches: int | None = 4,
    relative: bool = False,
    progress: bool = True,
    forward_fn: ForwardFn | None = None,
) -> dict[str, float]:
    """HRank (Lin et al., "HRank: Filter Pruning using High-Rank Feature Map", CVPR 2020), per block.

    Importance of a block = the rank of its output feature maps: the matrix rank of each
    channel's ``H x W`` map, averaged over channels and over the images of ``num_batches``
    batches (``None``: all of ``data``; HRank finds a few hundred images enough). The paper
    ranks single filters; here a block's whole output is ranked. Outputs ``(N, ..., H, W)``
    are read as maps in their last two dimensions (a ViT's ``(N, L, D)``: one ``L x D`` map
    per image). The rank is bounded by ``min(H, W)``, so blocks of high-resolution stages score
    higher; ``relative=True`` divides by that bound to compare stages on an equal footing.
    Needs a trained model and batches ``(x, y)`` or dicts of keyword arguments (labels unused;
    ``forward_fn(model, batch)`` runs other forms); no gradients. Runs in eval mode; the model is
    left exactly as it was. Higher = keep.
    """
    reduce = functools.partial(_mean_ranks, relative=relative)
    batches = block_statistics(
        model,
        blocks,
        data,
        reduce,
        num_batches=num_batches,
        criterion="hrank",
        progress=progress,
        forward_fn=forward_fn,
    )
    return {b.name: float(torch.cat([stats[b.name] for _, stats in batches]).mean()) for b in blocks}


def _abs_change(output: torch.Tensor, block_input: torch.Tensor | None) -> tuple[float, int]:
    assert block_input is not None
    if output.shape != block_input.shape:
        raise InvalidArgumentError(
            f"expectabs needs blocks whose output has the shape of their input, got {tuple(block_input.shape)} "
            f"-> {tuple(output.shape)}"
        )
    return float((output - block_input).abs().sum(dtype=torch.float64)), output.numel()


@register_criterion("expectabs", requires_data=True, gradient_based=False, source="builtin")
def expectabs_importance(
    model: nn.Module,
    blocks: Sequence[ResidualBlock],
    data: Any,
    *,
    num_batches: int | None = 4,
    progress: bool = True,
    forward_fn: ForwardFn | None = None,
) -> dict[str, float]:
    """expectABS (Tan and Motani, "DropNet: Reducing Neural Network Complexity via Iterative
    Pruning", ICML 2020), adapted to residual blocks as in Jordao et al.

    DropNet removes the nodes of smallest expected absolute activation. A block's activation
    here is its contribution to the residual stream, ``out - in``: exactly what removing the
    block takes away. It is the residual branch ``F(x)`` when the addition comes last
    (pre-activation ResNets, transformers), and ``relu(x + F(x)) - x`` after a post-addition
    ReLU. Importance = mean ``|out - in|`` over all elements and the images of ``num_batches``
    batches (``None``: all of ``data``). Needs a trained model and batches ``(x, y)`` or dicts of
    keyword arguments (labels unused; ``forward_fn(model, batch)`` runs other forms); no gradients.
    Runs in eval mode; the model is left exactly as it was. Higher = keep.
    """
    batches = block_statistics(
        model,
        blocks,
        data,
        _abs_change,
        num_batches=num_batches,
        criterion="expectabs",
        progress=progress,
        with_input=True,
        forward_fn=forward_fn,
    )
    return {
        b.name: sum(stats[b.name][0] for _, stats in batches) / sum(stats[b.name][1] for _, stats in batches)
        for b in blocks
    }
