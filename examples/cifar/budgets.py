"""Training budgets: the GPU schedule, a CPU schedule that fits a table into a few hours on 2 cores, a smoke test."""

from __future__ import annotations

import dataclasses

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


BUDGETS = {
    "paper": Budget(
        "paper",
        Schedule(epochs=164),
        None,
        None,
        "the usual CIFAR ResNet schedule (He et al. 2016): 164 epochs of SGD, lr 0.1 divided by 10 at 50% and "
        "75%, momentum 0.9, weight decay 1e-4, batch 128, all 50,000 training images; for a GPU",
    ),
    "cpu": Budget(
        "cpu",
        Schedule(epochs=10),
        5_000,
        None,
        "reduced for a 2-core CPU: 10 epochs on a class-balanced 5,000-image training subset, the same optimiser "
        "and step schedule (lr divided by 10 after epochs 5 and 8), all 10,000 test images",
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
