"""Devices and multi-GPU training: one process per GPU with ``torchrun`` and DistributedDataParallel.

    torchrun --nproc_per_node 4 -m examples.cifar.table2 --budget paper ...

Every process draws the same shuffled, augmented global batch (one seeded generator) and trains
on its share ``x[rank::world_size]``; DDP averages the gradients, so a step equals a one-GPU
step on the whole batch (batch norm statistics are per process, as in the usual DDP recipes).
Only the first process writes checkpoints and results, and measures energy. Without
``torchrun`` everything runs in one process, on the GPU if there is one.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["device", "is_main", "rank_and_world", "setup", "share", "wrap"]


def setup() -> None:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); nothing otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """The process that writes checkpoints and results."""
    return rank_and_world()[0] == 0


def device() -> torch.device:
    """This process's GPU (``LOCAL_RANK`` under torchrun), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def wrap(model: nn.Module) -> nn.Module:
    """``model`` in DistributedDataParallel when running under torchrun, else itself."""
    if rank_and_world()[1] == 1:
        return model
    dev = device()
    return nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


def share(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's part of a global batch."""
    rank, world = rank_and_world()
    return (x, y) if world == 1 else (x[rank::world], y[rank::world])
