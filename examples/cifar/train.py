"""The CIFAR training loop: SGD with step decay, seeded, checkpointed every epoch and resumable.

A run killed at any point and started again with the same arguments resumes from its last
finished epoch and ends with the same weights as an uninterrupted run: the checkpoint holds
the model, the optimizer, the epoch and the state of the one random generator that orders
and augments the data. Checkpoints are written atomically and read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from benchmarks._common import atomic_path

from .data import CifarData

__all__ = ["Schedule", "TrainResult", "evaluate", "train"]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """SGD with momentum; the learning rate is multiplied by ``gamma`` at each milestone
    (given as fractions of ``epochs``, e.g. 0.5 and 0.75 of the run)."""

    epochs: int
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    batch_size: int = 128

    def lr_at(self, epoch: int) -> float:
        passed = sum(epoch >= round(m * self.epochs) for m in self.milestones)
        return self.lr * self.gamma**passed


@dataclasses.dataclass
class TrainResult:
    accuracy: float  # top-1 test accuracy after the last epoch, in percent
    history: list[dict[str, float]]  # per epoch: loss, accuracy, lr, seconds
    train_seconds: float  # wall-clock of the training epochs (evaluation excluded), summed over resumes


def evaluate(model: nn.Module, data: CifarData, batch_size: int = 500) -> float:
    """Top-1 accuracy on the test split, in percent (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    correct = 0
    with torch.inference_mode():
        for x, y in data.test_batches(batch_size):
            correct += int((model(x).argmax(1) == y).sum())
    model.train(was_training)
    return 100.0 * correct / len(data.test_y)


def _save_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def train(
    model: nn.Module,
    data: CifarData,
    schedule: Schedule,
    *,
    seed: int,
    checkpoint_dir: Path | None = None,
    keep_epochs: Sequence[int] = (),
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``schedule.epochs`` epochs; resume from ``checkpoint_dir`` if it holds a run.

    ``keep_epochs``: also keep the weights after these epochs as ``theta_<epoch>.pt`` (0 = the
    initial weights), for rewinding (Frankle et al.; Renda et al. 2020).
    """
    optimizer = torch.optim.SGD(
        model.parameters(), lr=schedule.lr, momentum=schedule.momentum, weight_decay=schedule.weight_decay
    )
    generator = torch.Generator().manual_seed(seed)
    start, history, seconds = 0, [], 0.0
    last = checkpoint_dir / "last.pt" if checkpoint_dir else None
    if last is not None and last.exists():
        state = torch.load(last, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start, history, seconds = state["epoch"], state["history"], state["train_seconds"]
    elif checkpoint_dir is not None and 0 in keep_epochs:
        _save_atomic(model.state_dict(), checkpoint_dir / "theta_0.pt")
    for epoch in range(start, schedule.epochs):
        lr = schedule.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        began, total, count = time.perf_counter(), 0.0, 0
        steps = len(data.train_y) // schedule.batch_size
        bar = tqdm(data.train_batches(schedule.batch_size, generator), total=steps, disable=not progress,
                   desc=f"epoch {epoch + 1}/{schedule.epochs}", unit="batch", leave=False)
        for x, y in bar:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(y), count + len(y)
        seconds += time.perf_counter() - began
        record = {"epoch": epoch + 1, "loss": total / max(count, 1), "accuracy": evaluate(model, data), "lr": lr,
                  "seconds": time.perf_counter() - began}
        history.append(record)
        if on_epoch is not None:
            on_epoch(epoch + 1, record)
        if checkpoint_dir is not None:
            if epoch + 1 in keep_epochs:
                _save_atomic(model.state_dict(), checkpoint_dir / f"theta_{epoch + 1}.pt")
            _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "generator": generator.get_state(), "epoch": epoch + 1, "history": history,
                          "train_seconds": seconds}, last)
    accuracy = history[-1]["accuracy"] if history else evaluate(model, data)
    return TrainResult(accuracy, history, seconds)
