"""The CIFAR training loop: SGD with step decay, seeded, checkpointed every epoch and resumable.

A run killed at any point and started again with the same arguments resumes from its last
finished epoch and ends with the same weights as an uninterrupted run: the checkpoint holds
the model, the optimizer, the epoch and the state of the one random generator that orders
and augments the data. Checkpoints are written atomically and read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from benchmarks._common import atomic_path

from . import distributed
from .cost import EnergyMeter
from .data import CifarData, normalise
from .sharing import other_load

__all__ = [
    "Schedule",
    "TrainResult",
    "accuracy",
    "bf16_is_native",
    "evaluate",
    "placed",
    "train",
    "training_step",
    "uses_bf16",
]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """SGD with momentum and how each step runs.

    ``decay="step"``: the learning rate is multiplied by ``gamma`` at each milestone (fractions
    of ``epochs``, e.g. 0.5 and 0.75 of the run), set once per epoch (He et al. 2016).
    ``decay="linear"``: set every step, rising linearly from 0 to ``lr`` over the first
    ``warmup`` fraction of the steps, then falling linearly to 0 at the end (a one-cycle
    schedule for runs of few epochs). ``nesterov`` momentum; ``label_smoothing`` of the
    cross-entropy. ``channels_last`` memory format and ``bf16`` autocast (bfloat16 matmuls and
    convolutions, float32 weights and optimizer; the test accuracy is measured in float32) where
    the device computes bfloat16 natively, float32 where it does not (:func:`bf16_is_native`);
    ``compile``: ``torch.compile`` the training forward.
    """

    epochs: int
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    batch_size: int = 128
    decay: str = "step"
    warmup: float = 0.0
    nesterov: bool = False
    label_smoothing: float = 0.0
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.decay not in ("step", "linear"):
            raise ValueError(f"decay must be 'step' or 'linear', got {self.decay!r}")

    def lr_at(self, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
        """The learning rate of step ``step`` (0-based) of epoch ``epoch`` (0-based)."""
        if self.decay == "step":
            passed = sum(epoch >= round(m * self.epochs) for m in self.milestones)
            return self.lr * self.gamma**passed
        total = self.epochs * steps_per_epoch
        now = epoch * steps_per_epoch + step
        rise = max(1, round(self.warmup * total))
        if now < rise:
            return self.lr * (now + 1) / rise
        return self.lr * max(0.0, (total - now) / max(1, total - rise))


@dataclasses.dataclass
class TrainResult:
    accuracy: float  # top-1 test accuracy after the last epoch, in percent
    history: list[dict[str, float]]  # per epoch: loss, accuracy, lr, seconds
    train_seconds: float  # wall-clock of the training epochs (evaluation excluded), summed over resumes
    energy_kwh: float | None = None  # codecarbon's estimate for the training epochs, summed over resumes
    emissions_kg: float | None = None  # CO2-equivalent of that energy
    precision: str = "float32"  # or "bfloat16 autocast": what the training steps computed in
    other_load: float | None = None  # share of the CPU other processes took during the epochs (sharing.other_load)

    def fields(self) -> dict[str, Any]:
        """The result as fields of a results record."""
        return {
            "accuracy": self.accuracy,
            "train_seconds": self.train_seconds,
            "energy_kwh": self.energy_kwh,
            "emissions_kg": self.emissions_kg,
            "precision": self.precision,
            "other_load": self.other_load,
            "history": self.history,
        }


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent on uint8 images ``x``, in eval mode on the model's device (its mode is restored)."""
    was_training = model.training
    dev = next(model.parameters()).device
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=dev)
    with torch.inference_mode():
        for start in range(0, len(y), batch_size):
            logits = model(normalise(x[start : start + batch_size].to(dev)))
            correct += (logits.argmax(1) == y[start : start + batch_size].to(dev)).sum()
    model.train(was_training)
    return 100.0 * int(correct) / len(y)


def evaluate(model: nn.Module, data: CifarData, batch_size: int = 500) -> float:
    """Top-1 accuracy on the test split, in percent (see :func:`accuracy`)."""
    return accuracy(model, data.test_x, data.test_y, batch_size)


def _save_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def bf16_is_native(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 convolutions natively (oneDNN's check on a CPU: AVX-512 or newer).

    Where it does not, autocast emulates them: a ResNet-32 step at batch 256 took 19 s in bfloat16
    against 1.4 s in float32 on a 2-core AMD EPYC with AVX2 only.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def uses_bf16(schedule: Schedule, dev: torch.device) -> bool:
    """Whether ``schedule`` trains in bfloat16 autocast on ``dev``: it asks for it and ``dev`` computes bfloat16
    natively; a warning says when it asks and ``dev`` does not (the run is then float32)."""
    if schedule.bf16 and not bf16_is_native(dev):
        warnings.warn(
            f"this {dev.type} has no native bfloat16, so the schedule's bfloat16 autocast is off and the run trains in "
            "float32 (emulated bfloat16 is over 10x slower); its record says float32",
            stacklevel=3,
        )
        return False
    return schedule.bf16


def placed(model: nn.Module, schedule: Schedule, dev: torch.device) -> nn.Module:
    """``model`` moved to ``dev`` in place, in the schedule's memory format."""
    model.to(dev)
    return model.to(memory_format=torch.channels_last) if schedule.channels_last else model


def training_step(
    model: nn.Module, schedule: Schedule, dev: torch.device, bf16: bool, *, net: nn.Module | None = None
) -> tuple[torch.optim.SGD, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """The optimizer of ``model`` (placed on ``dev``, :func:`placed`) and one SGD step as ``schedule`` trains:
    ``step(x, y)`` moves the batch to ``dev`` in the schedule's memory format, runs ``net`` (default ``model``;
    compiled if the schedule compiles) in bfloat16 autocast if ``bf16``, the label-smoothed cross-entropy in
    float32, backward and the update, and returns the batch's mean loss (detached, on ``dev``)."""
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=schedule.lr,
        momentum=schedule.momentum,
        weight_decay=schedule.weight_decay,
        nesterov=schedule.nesterov,
    )
    forward: Callable[..., torch.Tensor] = net if net is not None else model
    if schedule.compile:
        forward = torch.compile(forward)

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.to(dev, non_blocking=True)
        if schedule.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = forward(x)
        loss = F.cross_entropy(logits.float(), y.to(dev, non_blocking=True), label_smoothing=schedule.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return optimizer, step


def resumed_state(
    last: Path | None, setting: dict[str, Any], model: nn.Module, optimizer: Any, generator: torch.Generator
) -> dict[str, Any] | None:
    """Load the checkpoint ``last`` (if there is one) into the model, optimizer and generator and return it;
    a checkpoint of another training ``setting`` is refused (RuntimeError)."""
    if last is None or not last.exists():
        return None
    state = torch.load(last, weights_only=True, map_location="cpu")
    if state.get("setting") != setting:
        raise RuntimeError(
            f"{last} belongs to another training setting ({state.get('setting')}, now {setting}); delete "
            f"{last.parent} to start this run afresh, or run with the setting it was started with"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return state


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
    meter: EnergyMeter | None = None,
    eval_every: int = 1,
    start_epoch: int = 0,
) -> TrainResult:
    """Train ``model`` in place for ``schedule.epochs`` epochs; resume from ``checkpoint_dir`` if it holds a run.

    The model moves to this process's device (:mod:`.distributed`: the GPU if there is one; one
    GPU per process under ``torchrun``, with DistributedDataParallel).

    ``keep_epochs``: also keep the weights after these epochs as ``theta_<epoch>.pt`` (0 = the
    initial weights), for rewinding (Frankle et al.; Renda et al. 2020). ``meter``: record
    the energy and CO2 of every epoch's training steps. The test accuracy is measured every
    ``eval_every`` epochs and after the last. ``start_epoch``: begin the schedule there, with
    its learning rate: learning-rate rewinding (Renda et al. 2020) of a network rewound to
    ``theta_<start_epoch>``.
    """
    dev = distributed.device()
    bf16 = uses_bf16(schedule, dev)
    precision = "bfloat16 autocast" if bf16 else "float32"
    placed(model, schedule, dev)
    optimizer, sgd_step = training_step(model, schedule, dev, bf16, net=distributed.wrap(model))
    if not distributed.is_main():  # only the first process writes checkpoints and measures energy
        checkpoint_dir, meter = None, None
    generator = torch.Generator(device=data.train_x.device).manual_seed(seed)
    start, history, seconds = start_epoch, [], 0.0
    last = checkpoint_dir / "last.pt" if checkpoint_dir else None
    setting = {
        "schedule": dataclasses.asdict(schedule),
        "train_images": len(data.train_y),
        "seed": seed,
        "data": data.source,
        "precision": precision,  # a checkpoint of one precision is not resumed in the other
        **({"start_epoch": start_epoch} if start_epoch else {}),
    }
    state = resumed_state(last, setting, model, optimizer, generator)
    if state is not None:
        start, history, seconds = state["epoch"], state["history"], state["train_seconds"]
    elif checkpoint_dir is not None and start_epoch in keep_epochs:
        _save_atomic(model.state_dict(), checkpoint_dir / f"theta_{start_epoch}.pt")
    steps = len(data.train_y) // schedule.batch_size
    for epoch in range(start, schedule.epochs):
        lr = schedule.lr_at(epoch, 0, steps)
        model.train()
        began, total, count = time.perf_counter(), torch.zeros((), device=dev), 0
        bar = tqdm(
            data.train_batches(schedule.batch_size, generator),
            total=steps,
            disable=not progress,
            desc=f"epoch {epoch + 1}/{schedule.epochs}",
            unit="batch",
            leave=False,
        )
        with (
            meter.span() if meter else contextlib.nullcontext({}) as energy,
            other_load() if dev.type == "cpu" else contextlib.nullcontext({}) as sharing,  # what a CPU run shares
        ):
            for step, (x, y) in enumerate(bar):
                for group in optimizer.param_groups:
                    group["lr"] = schedule.lr_at(epoch, step, steps)
                loss = sgd_step(*distributed.share(x, y))
                total, count = total + loss * len(y), count + len(y)
            mean_loss = float(total) / max(count, 1)  # waits for the device
        took = time.perf_counter() - began
        seconds += took
        last_epoch = epoch + 1 == schedule.epochs
        record = {
            "epoch": epoch + 1,
            "loss": mean_loss,
            "lr": lr,
            "seconds": took,
            **energy,
            **sharing,
            "accuracy": evaluate(model, data) if last_epoch or (epoch + 1) % eval_every == 0 else None,
        }
        history.append(record)
        if on_epoch is not None:
            on_epoch(epoch + 1, record)
        if checkpoint_dir is not None:
            if epoch + 1 in keep_epochs:
                _save_atomic(model.state_dict(), checkpoint_dir / f"theta_{epoch + 1}.pt")
            _save_atomic(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "epoch": epoch + 1,
                    "history": history,
                    "train_seconds": seconds,
                    "setting": setting,
                },
                last,
            )
    accuracy = history[-1]["accuracy"] if history else evaluate(model, data)
    metered = [h for h in history if "energy_kwh" in h]
    energy = sum(h["energy_kwh"] for h in metered) if metered else None
    emissions = sum(h["emissions_kg"] for h in metered) if metered else None
    return TrainResult(accuracy, history, seconds, energy, emissions, precision, _mean_other_load(history))


def _mean_other_load(history: list[dict[str, Any]]) -> float | None:
    """The epochs' share of the CPU that other processes took, weighted by the epochs' wall-clock."""
    measured = [h for h in history if "other_load" in h]
    seconds = sum(h["seconds"] for h in measured)
    return sum(h["other_load"] * h["seconds"] for h in measured) / seconds if measured and seconds > 0 else None
