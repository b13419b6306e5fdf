"""What the built-in criteria share: the scored weights, labelled batches and the loss."""

from __future__ import annotations

import itertools
import numbers
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from ..blocks import ResidualBlock
from ..errors import CriterionError, DataError, InvalidArgumentError, MissingDataError

__all__ = [
    "accumulate",
    "batch_count",
    "block_modules",
    "block_sums",
    "block_weights",
    "classification_loss",
    "labelled_batches",
    "progress_bar",
    "scored_weights",
    "weight_parameters",
]


def weight_parameters(module: nn.Module, name: str = "weight") -> list[torch.nn.Parameter]:
    """The parameters that ``module.<name>`` is made of, read without computing it.

    The parameter itself; under a ``torch.nn.utils.parametrize`` parametrization
    (``parametrizations.weight_norm``/``spectral_norm``) the parameters of
    ``module.parametrizations.<name>`` (``original``, or ``original0``, ``original1``, ...);
    for the hook-based ``torch.nn.utils.weight_norm``/``spectral_norm``, which keep the weight
    as a plain tensor, the module's ``<name>_*`` parameters (``weight_g``, ``weight_v`` /
    ``weight_orig``). Reading them runs no parametrization, so spectral norm's power
    iteration never updates ``_u``/``_v``.
    """
    if parametrize.is_parametrized(module, name):
        parametrizations = module.parametrizations
        assert isinstance(parametrizations, nn.ModuleDict), "parametrize keeps them in a ModuleDict"
        return list(parametrizations[name].parameters())
    own = module._parameters.get(name)
    if own is not None or name not in module.__dict__:
        return [own] if own is not None else []
    return [p for pname, p in module.named_parameters(recurse=False) if pname.startswith(f"{name}_")]


def scored_weights(*modules: nn.Module) -> list[torch.nn.Parameter]:
    """The weights of the Conv and Linear layers in ``modules`` (no biases, no norms), as the leaf
    parameters the criteria differentiate and read (see :func:`weight_parameters`).

    ``nn.MultiheadAttention`` keeps its input projection as ``in_proj_weight`` (or
    ``q/k/v_proj_weight``) instead of a Linear layer; those count as Linear weights.
    """
    weights: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for m in (sub for module in modules for sub in module.modules()):
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            names = ["weight"]
        elif isinstance(m, nn.MultiheadAttention):
            names = ["in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"]
        else:
            continue
        for w in (w for name in names for w in weight_parameters(m, name)):
            if id(w) not in seen:
                seen.add(id(w))
                weights.append(w)
    return weights


def block_modules(model: nn.Module, block: ResidualBlock) -> list[nn.Module]:
    """The modules holding a block's parameters: the block itself, or the layers of a sub-layer's branch."""
    return [model.get_submodule(name) for name in (block.modules or (block.name,))]


def block_weights(
    model: nn.Module, blocks: Sequence[ResidualBlock]
) -> tuple[dict[str, list[torch.nn.Parameter]], list[torch.nn.Parameter]]:
    """The scored weights of each block, and all of them in one flat list (block order).

    Raises :class:`CriterionError` when no block holds any (their scores would all be zero).
    """
    weights = {b.name: scored_weights(*block_modules(model, b)) for b in blocks}
    flat = [w for ws in weights.values() for w in ws]
    if blocks and not flat:
        raise CriterionError(
            f"none of the {len(blocks)} blocks holds a Conv, Linear or attention weight parameter, which weight- and "
            "gradient-based criteria score; use a criterion that scores the blocks' outputs ('kl', 'expectabs', "
            "'hrank', 'pls') or 'random'"
        )
    return weights, flat


def accumulate(totals: Sequence[torch.Tensor], grads: Iterable[torch.Tensor | None]) -> None:
    """Add each gradient to its running total in place (``None``: the weight did not take part)."""
    for total, grad in zip(totals, grads):
        if grad is not None:
            total += grad


def block_sums(
    blocks: Sequence[ResidualBlock], weights: Mapping[str, Sequence[torch.Tensor]], per_weight: Iterable[torch.Tensor]
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


def _single_pair_as_list(data: Any) -> Any:
    """A single ``(x, y)`` batch as a list of one batch; anything else unchanged."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return [data]
    return data


def _checked_num_batches(num_batches: Any) -> int | None:
    if num_batches is None:
        return None
    if isinstance(num_batches, bool) or not isinstance(num_batches, numbers.Integral) or num_batches < 1:
        raise InvalidArgumentError(
            f"num_batches must be a positive integer (or None for all of data), got {num_batches!r}"
        )
    return int(num_batches)


def batch_count(data: Any, num_batches: int | None) -> int | None:
    """How many batches :func:`labelled_batches` will yield, as far as it is known before reading them."""
    if num_batches is not None:
        return num_batches
    try:
        return len(_single_pair_as_list(data))
    except TypeError:
        return None


def progress_bar(desc: str, total: int | None, progress: bool) -> tqdm:
    """A transient progress bar on stderr (``progress=False``: none); update it after each unit of work."""
    return tqdm(total=total, desc=desc, unit="batch", disable=not progress, leave=False, file=sys.stderr)


def _check_batch(batch: Any, i: int, criterion: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not (
        isinstance(batch, (tuple, list))
        and len(batch) >= 2
        and isinstance(batch[0], torch.Tensor)
        and isinstance(batch[1], torch.Tensor)
    ):
        raise DataError(
            f"batch {i} is a {type(batch).__name__}, not an (inputs, targets) pair of tensors; criterion "
            f"{criterion!r} needs labelled batches such as those of a torchvision classification dataset"
        )
    x, y = batch[0], batch[1]
    if x.dim() == 0 or x.shape[0] == 0 or y.numel() == 0:
        raise DataError(
            f"batch {i} has no samples (inputs {tuple(x.shape)}, targets {tuple(y.shape)}); every batch needs at "
            f"least one sample for criterion {criterion!r}: leave empty batches out of data"
        )
    return x, y


def labelled_batches(
    data: Any, num_batches: int | None, criterion: str, *, progress: bool = True
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield ``(i, x, y)`` from a DataLoader or an iterable of ``(inputs, targets)``, with a progress bar.

    Raises :class:`InvalidArgumentError` unless ``num_batches`` is a positive integer or None (all
    of ``data``), and :class:`DataError` for a batch that is not a pair of tensors or has no samples.
    """
    if data is None:
        raise MissingDataError(
            f"criterion {criterion!r} needs labelled data: pass data=<a DataLoader or an iterable of "
            "(inputs, targets) batches> (and num_batches=...), or choose a data-free criterion such as "
            "'synflow', 'l1' or 'random'"
        )
    data = _single_pair_as_list(data)
    num_batches = _checked_num_batches(num_batches)
    try:
        iterator = iter(data)
    except TypeError:
        raise DataError(
            f"data must be a DataLoader or an iterable of (inputs, targets) batches, got {type(data).__name__}"
        ) from None
    batches = itertools.islice(iterator, num_batches) if num_batches else iterator
    count = 0
    with progress_bar(f"{criterion} scoring", batch_count(data, num_batches), progress) as bar:
        for i, batch in enumerate(batches):
            x, y = _check_batch(batch, i, criterion)
            count += 1
            yield i, x, y
            bar.update()
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
