"""Side-by-side timing: interleaved repeats, warm-up, medians, fixed threads."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["inference", "side_by_side", "train_step"]

K = TypeVar("K", bound=Hashable)


def side_by_side(
    fns: Mapping[K, Callable[[], Any]], *, warmup: int = 2, repeats: int = 7, min_sample: float = 0.02
) -> dict[K, float]:
    """Median seconds per call of each function, measured in one process.

    The functions run round-robin (``a b c a b c ...``) so that drift of the machine (another
    process, thermal throttling) hits every variant alike. Calls shorter than ``min_sample``
    are looped so that each timing sample lasts at least that long.
    """
    loops = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        for _ in range(max(1, warmup)):
            fn()
        single = (time.perf_counter() - start) / max(1, warmup)
        loops[name] = max(1, round(min_sample / single)) if single > 0 else 1
    samples: dict[K, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(loops[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / loops[name])
    return {name: statistics.median(values) for name, values in samples.items()}


def inference(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    """One eval-mode forward under ``torch.inference_mode``."""
    model.eval()

    def run() -> Any:
        with torch.inference_mode():
            return model(x)

    return run


def train_step(model: nn.Module, x: torch.Tensor, num_classes: int) -> Callable[[], Any]:
    """One SGD step (forward, cross-entropy, backward, momentum update) on a fixed batch."""
    y = torch.arange(x.shape[0], device=x.device) % num_classes
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()

    def run() -> Any:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return run
