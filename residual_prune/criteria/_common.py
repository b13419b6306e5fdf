"""What the built-in criteria share: the scored weights, the data's batches, the forward pass and the loss."""

from __future__ import annotations

import dataclasses
import itertools
import numbers
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from ..analysis import ResidualBlock
from ..errors import CriterionError, DataError, InvalidArgumentError, MissingDataError, ResidualPruneError
from ..inputs import ModelInputs

__all__ = [
    "Batch",
    "BatchRunner",
    "ForwardFn",
    "LossFn",
    "accumulate",
    "batch_count",
    "block_modules",
    "block_sums",
    "block_weights",
    "classification_loss",
    "logits_of",
    "progress_bar",
    "scored_weights",
    "weight_parameters",
]

ForwardFn = Callable[[nn.Module, Any], Any]
"""``forward_fn(model, batch) -> outputs``: how to run the model on one batch of ``data``."""

LossFn = Callable[[Any, Any], torch.Tensor]
"""``loss_fn(outputs, batch) -> loss``: a scalar loss from the model's outputs on ``batch``."""


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


def _holds_weight_matrix(module: nn.Module) -> bool:
    """Whether ``module`` holds a weight matrix (or tensor) of its own, read without computing it."""
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return False
    return any(w.dim() >= 2 for w in weight_parameters(module, "weight"))


def scored_weights(*modules: nn.Module) -> list[torch.nn.Parameter]:
    """The weights of the Conv and Linear layers in ``modules`` (no biases, no norms), as the leaf
    parameters the criteria differentiate and read (see :func:`weight_parameters`).

    ``nn.MultiheadAttention`` keeps its input projection as ``in_proj_weight`` (or
    ``q/k/v_proj_weight``) instead of a Linear layer; those count as Linear weights. Other layers
    that hold a weight matrix of their own under ``weight`` (Hugging Face's GPT-2 ``Conv1D``, custom
    linear layers) count too; embeddings and norms do not.
    """
    weights: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for m in (sub for module in modules for sub in module.modules()):
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) or _holds_weight_matrix(m):
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


def _is_single_batch(data: Any) -> bool:
    """Whether ``data`` is one batch rather than an iterable of them: an ``(inputs, targets)`` pair or a
    dict of tensors."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return True
    return isinstance(data, Mapping) and any(isinstance(v, torch.Tensor) for v in data.values())


def _single_batch_as_list(data: Any) -> Any:
    """A single batch (see :func:`_is_single_batch`) as a list of one batch; anything else unchanged."""
    return [data] if _is_single_batch(data) else data


def _checked_num_batches(num_batches: Any) -> int | None:
    if num_batches is None:
        return None
    if isinstance(num_batches, bool) or not isinstance(num_batches, numbers.Integral) or num_batches < 1:
        raise InvalidArgumentError(
            f"num_batches must be a positive integer (or None for all of data), got {num_batches!r}"
        )
    return int(num_batches)


def batch_count(data: Any, num_batches: int | None) -> int | None:
    """How many batches :meth:`BatchRunner.batches` will yield, as far as it is known before reading them."""
    if num_batches is not None:
        return num_batches
    try:
        return len(_single_batch_as_list(data))
    except TypeError:
        return None


def progress_bar(desc: str, total: int | None, progress: bool) -> tqdm:
    """A transient progress bar on stderr (``progress=False``: none); update it after each unit of work."""
    return tqdm(total=total, desc=desc, unit="batch", disable=not progress, leave=False, file=sys.stderr)


_LABELS = "labels"
_BATCH_FORMS = (
    "an (inputs, targets) pair of tensors, such as those of a torchvision classification dataset, or a dict of "
    "the model's keyword arguments with the targets under 'labels', as Hugging Face models take"
)


def _to_device(value: Any, device: torch.device) -> Any:
    """``value`` with the tensors in it (also in lists, tuples and dicts) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if type(value) in (list, tuple):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, Mapping):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@dataclasses.dataclass(frozen=True)
class Batch:
    """One batch of ``data`` (``index`` counts from 0), as ``data`` yields it: an ``(inputs, targets)``
    pair (further items are ignored), a dict of the model's keyword arguments (the targets, if any,
    under ``"labels"``), or, for a criterion given a ``forward_fn``, whatever that takes."""

    index: int
    value: Any

    @property
    def is_pair(self) -> bool:
        value = self.value
        return (
            isinstance(value, (tuple, list))
            and len(value) >= 2
            and isinstance(value[0], torch.Tensor)
            and isinstance(value[1], torch.Tensor)
        )

    @property
    def is_dict(self) -> bool:
        return isinstance(self.value, Mapping) and bool(self.value) and all(isinstance(k, str) for k in self.value)

    def describe(self) -> str:
        """The batch's shapes in words, for messages: ``inputs (8, 3, 32, 32), targets (8,)``."""
        if self.is_pair:
            return f"inputs {tuple(self.value[0].shape)}, targets {tuple(self.value[1].shape)}"
        if self.is_dict:
            return ModelInputs((), dict(self.value)).describe()
        return f"a {type(self.value).__name__}"

    def inputs(self, device: torch.device, *, labels: bool) -> ModelInputs:
        """The model's arguments on ``device``: a pair's ``x``; a dict's entries (``"labels"`` only if ``labels``)."""
        if self.is_pair:
            return ModelInputs((self.value[0].to(device),), {})
        if self.is_dict:
            kwargs = {k: _to_device(v, device) for k, v in self.value.items() if labels or k != _LABELS}
            return ModelInputs((), kwargs)
        raise DataError(f"batch {self.index} is {self.describe()}, not {_BATCH_FORMS}")

    def targets(self) -> torch.Tensor | None:
        """A pair's ``y`` or a dict's ``"labels"`` tensor; None if the batch has neither."""
        if self.is_pair:
            return self.value[1]
        labels = self.value.get(_LABELS) if self.is_dict else None
        return labels if isinstance(labels, torch.Tensor) else None

    def class_targets(self, criterion: str) -> torch.Tensor:
        """:meth:`targets`, or :class:`DataError` for a criterion that needs them."""
        targets = self.targets()
        if targets is None:
            raise DataError(
                f"criterion {criterion!r} needs class labels, but batch {self.index} ({self.describe()}) has none: "
                f"pass (inputs, targets) pairs, or dicts with the class ids under {_LABELS!r}"
            )
        return targets

    def check(self, criterion: str, *, any_form: bool) -> None:
        """:class:`DataError` unless the batch has samples and a form the criterion reads (with ``any_form``,
        as a ``forward_fn`` does, any)."""
        if not (self.is_pair or self.is_dict or any_form):
            raise DataError(
                f"batch {self.index} is {self.describe()}, not {_BATCH_FORMS}; pass such batches to criterion "
                f"{criterion!r}, or forward_fn=<a function (model, batch) -> outputs> for batches of another form"
            )
        if self.is_pair:
            x, y = self.value[0], self.value[1]
            empty = x.dim() == 0 or x.shape[0] == 0 or y.numel() == 0
        elif self.is_dict:
            empty = any(isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == 0 for v in self.value.values())
        else:
            empty = False
        if empty:
            raise DataError(
                f"batch {self.index} has no samples ({self.describe()}); every batch needs at least one sample for "
                f"criterion {criterion!r}: leave empty batches out of data"
            )


def logits_of(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise DataError(
        f"the model returned a {type(output).__name__}; criteria need class logits as a tensor (or as the "
        "'logits' of its outputs); pass forward_fn=<a function (model, batch) -> logits> to extract them"
    )


@dataclasses.dataclass(frozen=True)
class BatchRunner:
    """How a data-driven criterion reads ``data``: its batches, the model's outputs on one, and the loss.

    ``forward_fn(model, batch)`` runs the model on a batch as ``data`` yields it (default: ``model(x)``
    for a pair, ``model(**batch)`` for a dict, with the tensors moved to the model's device).
    ``loss_fn(outputs, batch)`` returns the scalar loss (default: the mean cross-entropy of
    ``logits / temperature`` against ``y`` for a pair; the model's own ``outputs.loss`` for a dict
    with ``"labels"``, as Hugging Face models compute it). Errors in either become :class:`DataError`.
    """

    criterion: str
    loss_fn: LossFn | None = None
    forward_fn: ForwardFn | None = None
    temperature: float = 1.0

    def batches(self, data: Any, num_batches: int | None, *, progress: bool = True) -> Iterator[Batch]:
        """Yield the :class:`Batch` es of a DataLoader or an iterable of batches, with a progress bar.

        Raises :class:`MissingDataError` for no data, :class:`InvalidArgumentError` unless
        ``num_batches`` is a positive integer or None (all of ``data``), and :class:`DataError` for a
        batch without samples or of a form the criterion cannot read (see :meth:`Batch.check`).
        """
        if data is None:
            raise MissingDataError(
                f"criterion {self.criterion!r} needs labelled data: pass data=<a DataLoader or an iterable of "
                "(inputs, targets) batches, or of dicts of keyword arguments with 'labels'> (and num_batches=...), "
                "or choose a data-free criterion such as 'synflow', 'l1' or 'random'"
            )
        data = _single_batch_as_list(data)
        num_batches = _checked_num_batches(num_batches)
        try:
            iterator = iter(data)
        except TypeError:
            raise DataError(
                f"data must be a DataLoader or an iterable of batches ({_BATCH_FORMS}), got {type(data).__name__}"
            ) from None
        values = itertools.islice(iterator, num_batches) if num_batches else iterator
        count = 0
        with progress_bar(f"{self.criterion} scoring", batch_count(data, num_batches), progress) as bar:
            for i, value in enumerate(values):
                batch = Batch(i, value)
                batch.check(self.criterion, any_form=self.forward_fn is not None)
                count += 1
                yield batch
                bar.update()
        if count == 0:
            raise DataError(f"data gave no batches; criterion {self.criterion!r} needs at least one batch")

    def outputs(self, model: nn.Module, batch: Batch) -> Any:
        """The model's outputs on the batch's inputs (a dict batch's ``"labels"`` are left out)."""
        return self._guarded(batch, lambda: self._forward(model, batch, labels=False))

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The scalar loss of the model on the batch (see the class docstring)."""
        if self.loss_fn is None:
            self._check_default_loss(batch)

        def compute() -> Any:
            outputs = self._forward(model, batch, labels=True)
            if self.loss_fn is not None:
                return self.loss_fn(outputs, batch.value)
            return self._default_loss(outputs, batch)

        loss = self._guarded(batch, compute)
        if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
            source = "loss_fn" if self.loss_fn is not None else "the model's outputs.loss"
            shape = f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else ""
            raise DataError(
                f"{source} gave a {type(loss).__name__}{shape} for batch {batch.index}; criterion "
                f"{self.criterion!r} needs a scalar loss tensor"
            )
        return loss.reshape(())

    def _forward(self, model: nn.Module, batch: Batch, *, labels: bool) -> Any:
        if self.forward_fn is not None:
            return self.forward_fn(model, batch.value)
        return batch.inputs(_model_device(model), labels=labels).call(model)

    def _check_default_loss(self, batch: Batch) -> None:
        if batch.is_pair or (batch.is_dict and _LABELS in batch.value):
            return
        what = f"a dict without {_LABELS!r} ({batch.describe()})" if batch.is_dict else batch.describe()
        raise DataError(
            f"batch {batch.index} is {what}, so criterion {self.criterion!r} has no loss to compute: add the "
            f"targets to the batches as {_LABELS!r} (Hugging Face models then return outputs.loss), or pass "
            "loss_fn=<a function (outputs, batch) -> scalar loss>"
        )

    def _default_loss(self, outputs: Any, batch: Batch) -> torch.Tensor:
        if batch.is_pair:
            logits = logits_of(outputs)
            return F.cross_entropy(logits / self.temperature, batch.value[1].to(logits.device).long())
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else getattr(outputs, "loss", None)
        if loss is None:
            raise DataError(
                f"the model returned no loss for batch {batch.index}, which has {_LABELS!r}: a model called as "
                "model(**batch) must return outputs with .loss (as Hugging Face models do), or pass "
                "loss_fn=<a function (outputs, batch) -> scalar loss>"
            )
        return loss

    def _guarded(self, batch: Batch, compute: Callable[[], Any]) -> Any:
        """``compute()``, its errors that are not the library's as :class:`DataError`."""
        try:
            return compute()
        except ResidualPruneError:
            raise
        except Exception as exc:
            if self.forward_fn is not None or self.loss_fn is not None:
                advice = "Check that forward_fn and loss_fn accept the batches of data"
            elif batch.is_pair:
                advice = "Pass batches of inputs the model accepts and integer class targets of shape (batch,)"
            else:
                advice = "Pass dicts whose keys are the names of the model's forward arguments"
            raise DataError(
                f"batch {batch.index} ({batch.describe()}) does not fit the model: {type(exc).__name__}: {exc}. "
                f"{advice}"
            ) from exc


def classification_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_index: int, temperature: float = 1.0
) -> torch.Tensor:
    """Mean cross-entropy of ``model(x) / temperature`` against ``y``; shape errors become :class:`DataError`."""
    return BatchRunner("classification", temperature=temperature).loss(model, Batch(batch_index, (x, y)))
