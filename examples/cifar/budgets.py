"""Training budgets: the GPU schedule, a CPU schedule that fits a table into a few hours on 2 cores, a smoke test."""

from __future__ import annotations

import dataclasses

from .train import Schedule

__all__ = ["BUDGETS", "Budget"]


@dataclasses.dataclass(frozen=True)
class Budget:
    name: str
    schedule: Schedule
    train_limit: int | None  # class-balanced training subset; None = all 50,000 images
    test_limit: int | None
    description: str


BUDGETS = {
    "paper": Budget(
        "paper", Schedule(epochs=164), None, None,
        "the usual CIFAR ResNet schedule (He et al. 2016): 164 epochs of SGD, lr 0.1 divided by 10 at 50% and "
        "75%, momentum 0.9, weight decay 1e-4, batch 128, all 50,000 training images; for a GPU",
    ),
    "cpu": Budget(
        "cpu", Schedule(epochs=15), 10_000, None,
        "reduced for a 2-core CPU: 15 epochs on a class-balanced 10,000-image training subset, the same optimiser "
        "and step schedule, all 10,000 test images",
    ),
    "smoke": Budget(
        "smoke", Schedule(epochs=1, batch_size=32), 320, 200,
        "smoke test: 1 epoch on 320 training images, 200 test images; checks that the pipeline runs, not accuracy",
    ),
}
