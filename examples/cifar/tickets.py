"""Rebuild a network a results record describes (the dense ResNet or a ticket), with its trained weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from residual_prune import PruningPlan, apply_plan, architecture_fingerprint
from residual_prune.capture import count_flops
from residual_prune.models import cifar_resnet

from .budgets import Budget
from .cost import EnergyMeter, training_memory
from .data import CifarData
from .train import train

__all__ = ["batch_of", "build", "load_trained", "run_id", "train_measured"]


def run_id(arch: str, budget: str, criterion: str, p: int, seed: int) -> str:
    """The name of a training run: its checkpoint folder and its record in the store."""
    return f"{arch}-{budget}-{criterion}-p{p}-seed{seed}"


def build(arch: str, removed: Sequence[str] = ()) -> nn.Module:
    """A freshly initialised CIFAR ResNet ``arch`` without the blocks ``removed`` (the current torch seed decides
    the weights)."""
    model = getattr(cifar_resnet, arch)()
    if removed:
        plan = PruningPlan(
            removed=list(removed),
            scores={},
            criterion="record",
            policy="default",  # the records come from policy="paper" plans, whose units "default" allows too
            fingerprint=architecture_fingerprint(model),
            input_shapes=[[1, 3, 32, 32]],  # the plan is checked against the model on CIFAR-sized inputs
        )
        model = apply_plan(model, plan, inplace=True)
    return model


def load_trained(record: dict[str, Any], runs: Path) -> nn.Module:
    """The trained network of a Table 2-style ``record`` from its checkpoint under ``runs`` (in eval mode)."""
    model = build(record["arch"], record["removed"])
    rid = record.get("run_id") or run_id(
        record["arch"], record["budget"], record["criterion"], record["p"], record["seed"]
    )
    path = Path(runs) / rid / "last.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"no checkpoint {path}: the record of {rid} was made where its checkpoints are (they are not committed). "
            f"Delete {rid}.json from the results store, or pass --results with a store of your own, and run the "
            "table again to train it here"
        )
    model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu")["model"])
    return model.eval()


def batch_of(batch: tuple[torch.Tensor, torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images and their labels: those of ``batch`` from the first, repeated as often as needed (a counted
    training memory depends on the batch's shape only, so a calibration batch stands for a training batch)."""
    x, y = batch
    index = torch.arange(n) % len(y)
    return x[index], y[index]  # new tensors of n images: the count reads storages


def train_measured(
    model: nn.Module,
    data: CifarData,
    budget: Budget,
    *,
    seed: int,
    checkpoint_dir: Path,
    batch: tuple[torch.Tensor, torch.Tensor],
    progress: bool,
    meter: EnergyMeter | None,
    keep_epochs: Sequence[int] = (),
    start_epoch: int = 0,
) -> dict[str, Any]:
    """Train ``model`` with the budget (see :func:`.train.train`); the record fields of the network and its run:
    parameters, FLOPs (fvcore's convention, one 32x32 image), training memory (one step on a batch of the budget's
    size made of the images of ``batch``: :func:`batch_of`), the energy region, and the training result."""
    fields = {
        "params": sum(q.numel() for q in model.parameters()),
        "flops": count_flops(model, torch.zeros(1, 3, 32, 32)),
        "training_memory": training_memory(model, *batch_of(batch, budget.schedule.batch_size)),
        "region": meter.country if meter else None,
    }
    result = train(
        model,
        data,
        budget.schedule,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        meter=meter,
        eval_every=budget.eval_every,
        keep_epochs=keep_epochs,
        start_epoch=start_epoch,
    )
    return {**fields, **result.fields()}
