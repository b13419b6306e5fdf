"""Training and evaluation of the byte-level language model: resumable AdamW steps and held-out perplexity.

A run killed at any point and started again with the same arguments resumes from its last checkpoint
(every ``checkpoint_every`` steps) and ends with the same weights as an uninterrupted run: the checkpoint
holds the model, the optimizer, the step and the state of the generator that draws the training windows.
Checkpoints are written atomically and read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from benchmarks._common import atomic_path
from examples.cifar.train import bf16_is_native, resumed_state
from residual_prune import architecture_fingerprint

from .budgets import Schedule
from .corpus import random_windows

__all__ = ["TrainResult", "held_out_nll", "train"]


@dataclasses.dataclass
class TrainResult:
    steps: int  # steps done, all calls together
    resumed_from: int  # the step this call started at (0: a fresh run)
    history: list[dict[str, float]]  # per logged interval: step, mean loss, lr, seconds
    train_seconds: float  # wall-clock of the steps, summed over resumes

    @property
    def loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None

    def fields(self) -> dict[str, Any]:
        return {"steps": self.steps, "loss": self.loss, "train_seconds": self.train_seconds, "history": self.history}


def _save_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _resume(
    last: Path | None, setting: dict[str, Any], model: nn.Module, optimizer: Any, generator: torch.Generator
) -> tuple[int, list[dict[str, float]], float]:
    """Load the checkpoint ``last`` into the model, optimizer and generator; its step, history and seconds."""
    state = resumed_state(last, setting, model, optimizer, generator)
    return (0, [], 0.0) if state is None else (state["step"], state["history"], state["train_seconds"])


def train(
    model: nn.Module,
    tokens: torch.Tensor,
    schedule: Schedule,
    seq_len: int,
    *,
    seed: int,
    data: str = "",
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 100,
    until: int | None = None,
    bf16: bool = False,
    progress: bool = True,
    desc: str = "train",
) -> TrainResult:
    """Train the causal LM ``model`` in place on random windows of ``seq_len`` tokens of ``tokens``
    (next-token loss: the model's own ``labels`` shift).

    Resumes from ``checkpoint_dir/last.pt`` if it holds a run of the same setting (schedule, seed,
    architecture, ``data``: a name of the token stream); checkpoints every ``checkpoint_every`` steps and at
    the end. ``until``: stop after that step (with a checkpoint), as if interrupted. ``bf16``: autocast the
    forward pass to bfloat16 (asked for, so kept where the CPU only emulates it, with a warning).
    """
    if bf16 and not bf16_is_native(torch.device("cpu")):
        warnings.warn(
            "this cpu has no native bfloat16, so --bf16 autocast is emulated and much slower than float32; "
            "drop --bf16 to train in float32",
            UserWarning,
            stacklevel=2,
        )
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=schedule.lr, betas=schedule.betas, weight_decay=schedule.weight_decay
    )
    generator = torch.Generator().manual_seed(seed)
    last = checkpoint_dir / "last.pt" if checkpoint_dir else None
    setting = {
        "schedule": dataclasses.asdict(schedule),
        "seq_len": seq_len,
        "seed": seed,
        "data": data,
        "architecture": architecture_fingerprint(model),
        "bf16": bf16,
    }
    start, history, seconds = _resume(last, setting, model, optimizer, generator)
    stop = schedule.steps if until is None else min(until, schedule.steps)
    total, count, began = torch.zeros(()), 0, time.perf_counter()
    bar = tqdm(range(start, stop), disable=not progress, desc=desc, unit="step", leave=False, total=stop, initial=start)
    for step in bar:
        lr = schedule.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = random_windows(tokens, schedule.batch_size, seq_len, generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), schedule.clip)
        optimizer.step()
        total, count = total + loss.detach().float(), count + 1
        if (step + 1) % checkpoint_every == 0 or step + 1 == stop:
            took = time.perf_counter() - began
            seconds += took
            history.append({"step": step + 1, "loss": float(total) / count, "lr": lr, "seconds": took})
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
            if last is not None:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "setting": setting}
                position = {"generator": generator.get_state(), "step": step + 1, "history": history}
                _save_atomic({**state, **position, "train_seconds": seconds}, last)
            total, count, began = torch.zeros(()), 0, time.perf_counter()
    model.eval()
    return TrainResult(max(start, stop), start, history, seconds)


def held_out_nll(model: nn.Module, windows: torch.Tensor, batch_size: int = 16) -> float:
    """Mean negative log-likelihood (nats per predicted token, in float32) of each window's tokens after its first;
    the held-out perplexity is its ``exp``. The model's mode is restored."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for x in windows.split(batch_size):
            logits = model(input_ids=x).logits[:, :-1].float()
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum"))
            count += x[:, 1:].numel()
    model.train(was_training)
    return total / count


def perplexity(nll: float) -> float:
    return math.exp(nll)
