"""Command-line options every table command shares: budget, data, where results and checkpoints go."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from . import distributed
from .budgets import BUDGETS, Budget
from .data import CifarData

__all__ = [
    "ARCHS",
    "RESULTS",
    "RUNS",
    "Seeds",
    "add_run_options",
    "add_ticket_options",
    "budget_of",
    "parser_for",
    "prepare",
    "seed_list",
    "seeds_of",
]

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "paper"  # one JSON record per run (committed)
RUNS = ROOT / "runs" / "paper"  # checkpoints (not committed)
ARCHS = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
Seeds = int | Sequence[int]  # a count (seeds 0..N-1) or the seeds themselves


def parser_for(module: str, doc: str) -> argparse.ArgumentParser:
    """A parser for ``python -m <module>`` described by the first paragraph of ``doc``."""
    return argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=doc.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )


def add_ticket_options(
    parser: argparse.ArgumentParser,
    *,
    arch: str = "resnet32",
    criteria: Sequence[str] = ("snip", "grasp"),
    densities: Sequence[int] = (1, 2, 3, 4, 5),
    choices: Sequence[str] | None = None,
) -> None:
    """``--arch``, ``--criteria`` and ``--densities``: which tickets a table trains."""
    parser.add_argument("--arch", default=arch, choices=ARCHS)
    parser.add_argument(
        "--criteria",
        nargs="+",
        default=list(criteria),
        choices=choices,
        help="block criteria (residual_prune.list_criteria())",
    )
    parser.add_argument("--densities", nargs="+", type=int, default=list(densities), help="numbers of blocks removed")


def add_run_options(parser: argparse.ArgumentParser, *, seeds: int = 2) -> None:
    parser.add_argument("--seeds", type=int, default=seeds, help="how many seeds: K..K+N-1 (K: --first-seed)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="K: e.g. 1 on another machine, to train a seed whose dense run is its own (costs compare per machine)",
    )
    parser.add_argument(
        "--budget",
        choices=sorted(BUDGETS),
        default="cpu-full",
        help="paper: the paper's schedule (GPU); gpu: one GPU, few epochs (examples.cifar.gpu_run); cpu-full: all "
        "images, about 10 minutes per ResNet-32 on 2 cores with native bfloat16; cpu: the first CPU budget (5,000 "
        "images), kept for its records; smoke: pipeline check (examples/cifar/budgets.py)",
    )
    parser.add_argument("--epochs", type=int, help="override the budget's number of epochs")
    parser.add_argument(
        "--data",
        help="CIFAR-10: .npz JPEG copy or torchvision root; if unset: RESIDUAL_PRUNE_DATA, the cache, or the download",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="results store")
    parser.add_argument("--runs", type=Path, default=RUNS, help="checkpoints")
    parser.add_argument("--report", action="store_true", help="only print the table from the store")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def seed_list(seeds: Seeds) -> Sequence[int]:
    """The seeds a table trains: 0..N-1 for a count, else the seeds given."""
    return range(seeds) if isinstance(seeds, int) else seeds


def seeds_of(args: argparse.Namespace) -> range:
    """The seeds ``--seeds`` and ``--first-seed`` ask for."""
    return range(args.first_seed, args.first_seed + args.seeds)


def budget_of(args: argparse.Namespace) -> Budget:
    """The budget named by ``--budget``, with ``--epochs`` applied (and said in its name and description)."""
    budget = BUDGETS[args.budget]
    if args.epochs:
        budget = dataclasses.replace(
            budget,
            name=f"{budget.name}-{args.epochs}ep",
            description=f"{budget.description} (here {args.epochs} epochs)",
            schedule=dataclasses.replace(budget.schedule, epochs=args.epochs),
        )
    return budget


def prepare(args: argparse.Namespace) -> tuple[Budget, CifarData]:
    """Join torchrun's process group if launched by it; the budget; the data it trains on."""
    distributed.setup()
    budget = budget_of(args)
    return budget, CifarData.load(args.data, train_limit=budget.train_limit, test_limit=budget.test_limit)
