"""A model's example inputs in every form users pass them: one tensor, positional arguments
(tensors, or lists/tuples of tensors as detection models take), or keyword arguments
(a dict, called as ``model(**inputs)`` as Hugging Face models are).

Also their JSON form, which a plan keeps so that the model can be analysed again without the
original inputs (tensors are stored as shape and dtype; a plan's zeros stand in for them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .errors import DataError

__all__ = ["ModelInputs", "batch_inputs", "container_items"]

_SCALARS = (bool, int, float, str, type(None))
_EXAMPLE = (
    "pass a tensor (torch.randn(1, 3, 224, 224)), a tuple of positional arguments (tensors, or lists of "
    "tensors such as ([image],) for detection models), or a dict of keyword arguments "
    "({'input_ids': ids, 'attention_mask': mask} for Hugging Face models)"
)


def _check_leaves(value: Any, where: str, depth: int = 0) -> None:
    if isinstance(value, torch.Tensor) or isinstance(value, _SCALARS):
        return
    if isinstance(value, (list, tuple)) and depth < 4:
        for i, item in enumerate(value):
            _check_leaves(item, f"{where}[{i}]", depth + 1)
        return
    raise DataError(f"example_inputs{where} is a {type(value).__name__}, which cannot be an input here; {_EXAMPLE}")


def _leaf_to_json(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, (list, tuple)):
        return {"list": [_leaf_to_json(v) for v in value]}
    return {"value": value}


def _leaf_from_json(value: Any, device: torch.device) -> Any:
    if not isinstance(value, dict) or len(value) not in (1, 2):
        raise ValueError(f"an input must be a {{'shape', 'dtype'}}, {{'list'}} or {{'value'}} object, got {value!r}")
    if "shape" in value:
        shape, dtype_name = value.get("shape"), value.get("dtype")
        dtype = vars(torch).get(dtype_name) if isinstance(dtype_name, str) else None
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"{dtype_name!r} is not a torch dtype")
        if not (
            isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise ValueError(f"a shape must be a list of non-negative integers, got {shape!r}")
        return torch.zeros(shape, dtype=dtype, device=device)  # integer zeros are valid token ids
    if "list" in value and isinstance(value["list"], list):
        return [_leaf_from_json(v, device) for v in value["list"]]
    if "value" in value and isinstance(value["value"], _SCALARS):
        return value["value"]
    raise ValueError(f"not an input: {value!r}")


def container_items(value: Any) -> tuple[str, list[tuple[str, Any]]] | None:
    """A container's kind (``"keyed"`` or ``"indexed"``) and its ``(path suffix, item)`` pairs; None for a leaf.

    Dataclasses (Hugging Face's ``ModelOutput``) and named tuples are read by field name (``.logits``),
    other mappings by key (``['boxes']``), lists and tuples by index (``[1]``).
    """
    if isinstance(value, torch.Tensor):
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return "keyed", [(f".{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value)]
    if isinstance(value, Mapping):
        return "keyed", [(f"[{key!r}]", item) for key, item in value.items()]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return "keyed", [(f".{field}", item) for field, item in zip(value._fields, value)]
    if isinstance(value, (list, tuple)):
        return "indexed", [(f"[{i}]", item) for i, item in enumerate(value)]
    return None


def batch_inputs(batch: Any) -> Any:
    """A data batch's inputs: one sample of an ``(inputs, targets)`` pair's inputs, or a dict batch (Hugging
    Face style) without its ``"labels"`` (all of it); :class:`DataError` if they hold no tensor."""
    if isinstance(batch, Mapping):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if not any(isinstance(v, torch.Tensor) for v in inputs.values()):
            raise DataError(
                f"the first batch is a dict whose inputs (all but 'labels': {sorted(inputs)}) hold no tensor; pass "
                "dicts of the model's keyword arguments, or example_inputs"
            )
        return inputs
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(x, torch.Tensor):
        raise DataError(f"the first batch's inputs are a {type(x).__name__}, not a tensor")
    return x[:1]


@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """Positional and keyword arguments for one call of a model."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @classmethod
    def of(cls, example_inputs: Any) -> ModelInputs:
        """Normalise what a user passes as ``example_inputs`` (see the module docstring)."""
        if isinstance(example_inputs, ModelInputs):
            return example_inputs
        if isinstance(example_inputs, torch.Tensor):
            return cls((example_inputs,), {})
        if isinstance(example_inputs, Mapping) and example_inputs:
            kwargs = dict(example_inputs)
            for key, value in kwargs.items():
                if not isinstance(key, str):
                    raise DataError(f"example_inputs keys must be argument names (str), got {key!r}; {_EXAMPLE}")
                _check_leaves(value, f"[{key!r}]")
            inputs = cls((), kwargs)
        elif isinstance(example_inputs, (tuple, list)) and example_inputs:
            args = tuple(example_inputs)
            for i, value in enumerate(args):
                _check_leaves(value, f"[{i}]")
            inputs = cls(args, {})
        else:
            raise DataError(f"example_inputs cannot be {type(example_inputs).__name__} {example_inputs!r}; {_EXAMPLE}")
        if not inputs.tensors():
            raise DataError(f"example_inputs hold no tensor; {_EXAMPLE}")
        return inputs

    def call(self, model: nn.Module) -> Any:
        """``model(*args, **kwargs)``."""
        return model(*self.args, **self.kwargs)

    def map_tensors(self, fn: Callable[[torch.Tensor], Any]) -> ModelInputs:
        """The same call with ``fn`` applied to every tensor (also those in lists and tuples)."""

        def apply(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return fn(value)
            if isinstance(value, (list, tuple)):
                return type(value)(apply(item) for item in value)
            return value

        return ModelInputs(tuple(apply(a) for a in self.args), {k: apply(v) for k, v in self.kwargs.items()})

    def tensors(self) -> list[torch.Tensor]:
        """The tensors, in argument order (positional first, then keyword)."""
        found: list[torch.Tensor] = []
        self.map_tensors(found.append)
        return found

    @property
    def is_tensor_tuple(self) -> bool:
        """Whether the inputs are positional tensors only (the form torch.fx tracing takes)."""
        return not self.kwargs and all(isinstance(a, torch.Tensor) for a in self.args)

    def describe(self) -> str:
        """The inputs' shapes in words, e.g. ``(1, 3, 224, 224)`` or ``input_ids=(1, 8)``."""

        def shape_of(value: Any) -> str:
            if isinstance(value, torch.Tensor):
                return str(tuple(value.shape))
            if isinstance(value, (list, tuple)):
                return "[" + ", ".join(shape_of(v) for v in value) + "]"
            return repr(value)

        parts = [shape_of(a) for a in self.args] + [f"{k}={shape_of(v)}" for k, v in self.kwargs.items()]
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """Shapes, dtypes and non-tensor values, as a plan stores them."""
        return {
            "args": [_leaf_to_json(a) for a in self.args],
            "kwargs": {k: _leaf_to_json(v) for k, v in self.kwargs.items()},
        }

    @classmethod
    def zeros_from_json(cls, spec: Any, device: torch.device | str = "cpu") -> ModelInputs:
        """Inputs of the stored shapes and dtypes, filled with zeros; :class:`ValueError` if malformed."""
        if not (
            isinstance(spec, dict)
            and set(spec) == {"args", "kwargs"}
            and isinstance(spec["args"], list)
            and isinstance(spec["kwargs"], dict)
        ):
            raise ValueError("the inputs must be an object with 'args' (a list) and 'kwargs' (an object)")
        device = torch.device(device)
        args = tuple(_leaf_from_json(a, device) for a in spec["args"])
        kwargs = {str(k): _leaf_from_json(v, device) for k, v in spec["kwargs"].items()}
        inputs = cls(args, kwargs)
        if not inputs.tensors():
            raise ValueError("the inputs hold no tensor")
        return inputs
