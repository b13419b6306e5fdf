"""Hugging Face models for the command line: ``hf:PATH_OR_NAME`` loads a local directory (offline) or a hub
name (online) with ``from_pretrained``, its example inputs and calibration batches come from its config
and tokenizer, and a pruned model is written back with ``save_pretrained``.

``from_pretrained`` runs with ``trust_remote_code=False``: a directory that needs its own Python code is
refused, never imported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import DataError, InvalidArgumentError, MissingDataError

__all__ = ["HFModel", "image_batches", "load", "save", "text_batches"]


@dataclasses.dataclass
class HFModel:
    """A loaded model, its tokenizer (None if the directory has none) and the name it was loaded from."""

    module: nn.Module
    tokenizer: Any
    name: str

    @property
    def takes_pixels(self) -> bool:
        return getattr(self.module, "main_input_name", "input_ids") == "pixel_values"

    def example_inputs(self, seq_len: int) -> dict[str, torch.Tensor]:
        """One sample as the model takes it: zeros of ``seq_len`` token ids, or an image of the config's size."""
        if self.takes_pixels:
            config = self.module.config
            size = getattr(config, "image_size", 224)
            size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
            return {"pixel_values": torch.zeros(1, getattr(config, "num_channels", 3), *size)}
        return {"input_ids": torch.zeros(1, seq_len, dtype=torch.long)}


def _auto_classes() -> list[Any]:
    import transformers

    return [
        transformers.AutoModelForCausalLM,
        transformers.AutoModelForMaskedLM,
        transformers.AutoModelForImageClassification,
        transformers.AutoModel,
    ]


def load(name: str) -> HFModel:
    """Load ``name`` (a directory, or a hub name when online) as a causal LM, masked LM, image classifier or
    base model, the first its config fits, with its tokenizer if it has one."""
    try:
        import transformers
    except ImportError as exc:
        raise InvalidArgumentError("hf: models need the transformers package: pip install transformers") from exc
    try:
        config = transformers.AutoConfig.from_pretrained(name, trust_remote_code=False)
    except Exception as exc:  # not a directory with a config.json, offline, unknown name, remote code
        raise InvalidArgumentError(
            f"cannot load the config of hf:{name} ({type(exc).__name__}: {str(exc).splitlines()[0]}); pass a "
            "directory written by save_pretrained (with config.json and the weights), or a hub name when online"
        ) from exc
    failures = []
    for auto in _auto_classes():
        try:
            module = auto.from_pretrained(name, config=config, trust_remote_code=False)
            break
        except ValueError as exc:  # the config is not one of this auto class's
            failures.append(f"{auto.__name__}: {str(exc).splitlines()[0]}")
    else:
        raise InvalidArgumentError(f"hf:{name} is not a model transformers can build: " + "; ".join(failures))
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except Exception:  # a vision model, or a directory saved without its tokenizer
        tokenizer = None
    return HFModel(module.eval(), tokenizer, name)


def text_batches(
    path: str, hf: HFModel, *, seq_len: int, batch_size: int, num_batches: int
) -> list[dict[str, torch.Tensor]]:
    """Calibration batches from a text file: its tokens cut into sequences of ``seq_len``, with
    ``labels = input_ids`` (the model's own language-modelling loss)."""
    if hf.tokenizer is None:
        raise MissingDataError(
            f"--data {path} is text, but hf:{hf.name} has no tokenizer; save the tokenizer into that directory "
            "(tokenizer.save_pretrained(dir)) or choose a data-free criterion (random, l1)"
        )
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read --data {path} as UTF-8 text: {exc}") from exc
    ids = torch.tensor(hf.tokenizer(text)["input_ids"], dtype=torch.long)
    needed = seq_len * batch_size * num_batches
    if ids.numel() < seq_len * batch_size:
        raise DataError(
            f"--data {path} has {ids.numel()} tokens, fewer than one batch of {batch_size} x {seq_len}; pass more "
            "text or a smaller --batch-size / --seq-len"
        )
    ids = ids[: min(needed, ids.numel() // (seq_len * batch_size) * seq_len * batch_size)]
    sequences = ids.view(-1, seq_len)
    return [{"input_ids": chunk, "labels": chunk} for chunk in sequences.split(batch_size)]


def image_batches(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """``(images, labels)`` batches as an image classifier takes them: ``pixel_values`` and ``labels``."""
    return [{"pixel_values": x, "labels": y} for x, y in batches]


def save(out: Path, pruned: nn.Module, hf: HFModel) -> None:
    """Write ``pruned`` with ``save_pretrained`` into ``out``, and the tokenizer beside it if there is one."""
    pruned.save_pretrained(out)  # type: ignore[operator]  # a PreTrainedModel's
    if hf.tokenizer is not None:
        hf.tokenizer.save_pretrained(out)
