"""Decode latency and throughput of several models, measured side by side in one process.

Greedy ``generate`` of exactly ``new_tokens`` tokens from one prompt, batch 1, key/value cache on. Each model
is warmed up first; then the models take turns (the order reversed every round, so that neither always runs
first), and each model's time is the median of its runs: a background load that comes and goes hits all
models alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["decode_speed"]


def _generate_seconds(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> float:
    began = time.perf_counter()
    out = model.generate(  # type: ignore[operator]  # a PreTrainedModel's
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        use_cache=True,
    )
    took = time.perf_counter() - began
    if out.shape[1] != prompt.shape[1] + new_tokens:
        raise RuntimeError(f"generate made {out.shape[1] - prompt.shape[1]} tokens, not {new_tokens}")
    return took


def decode_speed(
    models: Mapping[str, nn.Module], prompt: torch.Tensor, new_tokens: int, repeats: int, warmup: int = 1
) -> dict[str, dict[str, Any]]:
    """Per model: the median seconds of ``repeats`` greedy decodes of ``new_tokens`` tokens from ``prompt``
    (``(1, P)`` token ids), milliseconds per token, tokens per second and every run's seconds."""
    names = list(models)
    runs: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for name in names:
            models[name].eval()
            for _ in range(warmup):
                _generate_seconds(models[name], prompt, new_tokens)
        for round_ in range(repeats):
            for name in names if round_ % 2 == 0 else reversed(names):
                runs[name].append(_generate_seconds(models[name], prompt, new_tokens))
    result = {}
    for name, seconds in runs.items():
        median = statistics.median(seconds)
        result[name] = {
            "seconds": median,
            "ms_per_token": 1000 * median / new_tokens,
            "tokens_per_second": new_tokens / median,
            "runs": seconds,
        }
    return result
