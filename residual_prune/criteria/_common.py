"""What the built-in criteria share: the scored weights, labelled batches and the loss."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..blocks import ResidualBlock
from ..errors import DataError, InvalidArgumentError, MissingDataError

__all__ = [
    "accumulate", "block_modules", "block_sums", "block_weights", "classification_loss", "labelled_batches",
    "scored_weights",
]


def scored_weights(*modules: nn.Module) -> list[torch.nn.Parameter]:
    """The ``weight`` tensors of the Conv and Linear layers in ``modules`` (no biases, no norms).

    ``nn.MultiheadAttention`` keeps its input projection as ``in_proj_weight`` (or
    ``q/k/v_proj_weight``) instead of a Linear layer; those count as Linear weights.
    """
    weights: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for m in (sub for module in modules for sub in module.modules()):
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            candidates = [m.weight]
        elif isinstance(m, nn.MultiheadAttention):
            candidates = [m.in_proj_weight, m.q_proj_weight, m.k_proj_weight, m.v_proj_weight]
        else:
            continue
        for w in candidates:
            if isinstance(w, torch.nn.Parameter) and id(w) not in seen:
                seen.add(id(w))
                weights.append(w)
    return weights


def block_modules(model: nn.Module, block: ResidualBlock) -> list[nn.Module]:
    """The modules holding a block's parameters: the block itself, or the layers of a sub-layer's branch."""
    return [model.get_submodule(name) for name in (block.modules or (block.name,))]


def block_weights(
    model: nn.Module, blocks: Sequence[ResidualBlock]
) -> tuple[dict[str, list[torch.nn.Parameter]], list[torch.nn.Parameter]]:
    """The scored weights of each block, and all of them in one flat list (block order)."""
    weights = {b.name: scored_weights(*block_modules(model, b)) for b in blocks}
    return weights, [w for ws in weights.values() for w in ws]


def accumulate(totals: Sequence[torch.Tensor], grads: Iterable[torch.Tensor | None]) -> None:
    """Add each gradient to its running total in place (``None``: the weight did not take part)."""
    for total, grad in zip(totals, grads):
        if grad is not None:
            total += grad


def block_sums(
    blocks: Sequence[ResidualBlock], weights: dict[str, list[torch.Tensor]], per_weight: Iterable[torch.Tensor]
) -> dict[str, float]:
    """Sum per-weight scores into one importance per block (``weights`` gives the layout)."""
    scores = iter(per_weight)
    out = {}
    for block in blocks:
        total = torch.zeros((), dtype=torch.float64)
        for _ in weights[block.name]:
            total += next(scores).double().sum().cpu()
        out[block.name] = float(total)
    return out


def labelled_batches(
    data: Any, num_batches: int | None, criterion: str, *, progress: bool = True
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield ``(i, x, y)`` from a DataLoader or an iterable of ``(inputs, targets)``, with a progress bar."""
    if data is None:
        raise MissingDataError(
            f"criterion {criterion!r} needs labelled data: pass data=<a DataLoader or an iterable of "
            "(inputs, targets) batches> (and num_batches=...), or choose a data-free criterion such as "
            "'synflow', 'l1' or 'random'"
        )
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        data = [data]  # a single (x, y) batch
    if num_batches is not None and num_batches < 1:
        raise InvalidArgumentError(f"num_batches must be at least 1, got {num_batches}")
    try:
        iterator = iter(data)
    except TypeError:
        raise DataError(
            f"data must be a DataLoader or an iterable of (inputs, targets) batches, got {type(data).__name__}"
        ) from None
    batches = itertools.islice(iterator, num_batches) if num_batches else iterator
    total = num_batches
    if total is None:
        try:
            total = len(data)
        except TypeError:
            total = None
    count = 0
    for i, batch in enumerate(tqdm(batches, total=total, desc=f"{criterion} scoring", unit="batch",
                                   disable=not progress, leave=False)):
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], torch.Tensor)
                and isinstance(batch[1], torch.Tensor)):
            raise DataError(
                f"batch {i} is a {type(batch).__name__}, not an (inputs, targets) pair of tensors; criterion "
                f"{criterion!r} needs labelled batches such as those of a torchvision classification dataset"
            )
        count += 1
        yield i, batch[0], batch[1]
    if count == 0:
        raise DataError(f"data gave no batches; criterion {criterion!r} needs at least one (inputs, targets) batch")


def _logits(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    raise DataError(f"the model returned a {type(output).__name__}; criteria need class logits as a tensor")


def classification_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_index: int, temperature: float = 1.0
) -> torch.Tensor:
    """Mean cross-entropy of ``model(x) / temperature`` against ``y``; shape errors become :class:`DataError`."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x, y = x.to(device), y.to(device)
    try:
        logits = _logits(model(x))
        return F.cross_entropy(logits / temperature, y.long())
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"batch {batch_index} (inputs {tuple(x.shape)}, targets {tuple(y.shape)}) does not fit the model: "
            f"{type(exc).__name__}: {exc}. Pass batches of inputs the model accepts and integer class targets "
            "of shape (batch,)"
        ) from exc
