"""Training budgets: the paper's schedule, one GPU's, a CPU schedule for 2 cores, the first CPU schedule, a smoke test.

What each can show: ``paper`` is the converged regime the paper reports (164 epochs). ``gpu`` and
``cpu-full`` train on all 50,000 images with a one-cycle schedule for few epochs, to a dense
accuracy near (``gpu``) or well short of (``cpu-full``, at least 80%) the converged one:
differences of tickets to the dense network there are those of networks trained to that
point, not of converged ones. ``cpu`` (10 epochs on 5,000 images, dense ResNet-32 near 45%)
is kept for its old records only: that far from convergence a shallower network simply
learns faster, so its tables say nothing about the paper's claims.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .train import Schedule

__all__ = ["BUDGETS", "PAPER_REWIND", "Budget", "rewind_epochs"]


@dataclasses.dataclass(frozen=True)
class Budget:
    name: str
    schedule: Schedule
    train_limit: int | None  # class-balanced training subset; None = all 50,000 images
    test_limit: int | None
    description: str
    eval_every: int = 1  # epochs between test-set evaluations (the last epoch is always evaluated)


CPU_EPOCHS = 8
# few epochs on all 50,000 images: Nesterov SGD, label smoothing, lr up to 0.4 then linearly down, channels-last,
# bf16 (where the device has it natively: train.bf16_is_native)
ONE_CYCLE: dict[str, Any] = {
    "lr": 0.4,
    "weight_decay": 5e-4,
    "decay": "linear",
    "nesterov": True,
    "label_smoothing": 0.1,
    "channels_last": True,
    "bf16": True,
}

BUDGETS = {
    "paper": Budget(
        "paper",
        Schedule(epochs=164),
        None,
        None,
        "the usual CIFAR ResNet schedule (He et al. 2016): 164 epochs of SGD, lr 0.1 divided by 10 at 50% and "
        "75%, momentum 0.9, weight decay 1e-4, batch 128, all 50,000 training images; for a GPU",
    ),
    "gpu": Budget(
        "gpu",
        Schedule(epochs=40, batch_size=512, warmup=0.15, compile=True, **ONE_CYCLE),
        None,
        None,
        "one GPU, several runs at once (python -m examples.cifar.gpu_run): 40 epochs on all 50,000 images, batch "
        "512, SGD with Nesterov momentum 0.9, weight decay 5e-4, label smoothing 0.1, the learning rate rising "
        "linearly to 0.4 over the first 15% of the steps then falling linearly to 0; bfloat16 autocast, "
        "channels-last, torch.compile; all 10,000 test images",
        eval_every=40,
    ),
    "cpu-full": Budget(
        "cpu-full",
        Schedule(epochs=CPU_EPOCHS, batch_size=256, warmup=0.2, **ONE_CYCLE),
        None,
        None,
        f"a 2-core CPU, about 10 minutes per ResNet-32 run where it has native bfloat16: {CPU_EPOCHS} epochs on all "
        "50,000 images, batch 256, SGD with Nesterov momentum 0.9, weight decay 5e-4, label smoothing 0.1, the "
        "learning rate rising linearly to 0.4 over the first 20% of the steps then falling linearly to 0; "
        "channels-last and bfloat16 autocast, float32 on a CPU without native bfloat16 (each record says which; "
        "the test accuracy in float32); all 10,000 test images",
        eval_every=CPU_EPOCHS,
    ),
    "cpu": Budget(
        "cpu",
        Schedule(epochs=10),
        5_000,
        None,
        "reduced for a 2-core CPU: 10 epochs on a class-balanced 5,000-image training subset, the same optimiser "
        "and step schedule (lr divided by 10 after epochs 5 and 8), all 10,000 test images; superseded by "
        "cpu-full (too short to say anything about the paper's converged regime)",
        eval_every=5,
    ),
    "smoke": Budget(
        "smoke",
        Schedule(epochs=1, batch_size=32),
        320,
        200,
        "smoke test: 1 epoch on 320 training images, 200 test images; checks that the pipeline runs, not accuracy",
    ),
}


PAPER_REWIND = (0, 25, 50, 75)
"""The rewind points of the paper's Table 1 (theta_0, theta_25, theta_50, theta_75), in epochs of the paper budget."""


def rewind_epochs(budget: Budget, paper_epochs: tuple[int, ...] = PAPER_REWIND) -> dict[int, int]:
    """Each paper rewind epoch mapped to the same point of ``budget``'s schedule (scaled by its length, rounded)."""
    scale = budget.schedule.epochs / BUDGETS["paper"].schedule.epochs
    return {e: min(round(e * scale), budget.schedule.epochs - 1) for e in paper_epochs}
