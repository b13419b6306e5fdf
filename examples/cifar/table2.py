"""Table 2 of the paper: layer pruning at initialization (Algorithm 2) against the dense network.

For each seed: train the dense ResNet; and for each criterion and number ``p`` of removed
blocks, score the untrained network with the criterion on one calibration batch, remove the
``p`` least important blocks (``policy="paper"``), and train the shallower ticket from its
initial weights with the same schedule. Every run is one JSON record in the results store,
skipped when already there; an interrupted run resumes from its last epoch.

    python -m examples.cifar.table2 --arch resnet32 --criteria snip grasp --densities 1 2 3 4 5 --seeds 2 \\
        --budget cpu --data ../shared/data/cifar10_jpeg.npz
    python -m examples.cifar.table2 --report        # regenerate the Table 2 section from the store
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import machine
from residual_prune import apply_plan, plan_pruning
from residual_prune.data import balanced_indices
from residual_prune.flops import count_flops_by_module
from residual_prune.models import cifar_resnet

from .budgets import BUDGETS, Budget
from .data import CifarData, normalise
from .store import ResultsStore
from .train import train

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "paper"
RUNS = ROOT / "runs" / "paper"  # checkpoints (not committed)
TABLE = "table2"
CALIBRATION = 256  # images in the one calibration batch of SNIP/GraSP (class-balanced)


def run_id(arch: str, budget: str, criterion: str, p: int, seed: int) -> str:
    return f"{arch}-{budget}-{criterion}-p{p}-seed{seed}"


def calibration_batch(data: CifarData, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    index = torch.from_numpy(balanced_indices(data.train_y.numpy(), CALIBRATION, seed))
    return [(normalise(data.train_x[index]), data.train_y[index])]


def run_one(
    arch: str, criterion: str, p: int, seed: int, budget: Budget, data: CifarData, *, runs: Path, progress: bool
) -> dict[str, Any]:
    """Build, (prune at initialization,) train and evaluate one network; the record of the run."""
    torch.manual_seed(seed)
    model = getattr(cifar_resnet, arch)()
    removed, scores = [], {}
    if criterion != "dense":
        plan = plan_pruning(model, criterion=criterion, n=p, data=calibration_batch(data, seed), policy="paper",
                            progress=False)
        model = apply_plan(model, plan, inplace=True)
        removed, scores = plan.removed, plan.scores
    x = torch.zeros(1, 3, 32, 32)
    flops = count_flops_by_module(model, (x,))
    result = train(model, data, budget.schedule, seed=seed, checkpoint_dir=runs / run_id(arch, budget.name,
                   criterion, p, seed), progress=progress)
    return {
        "table": TABLE, "arch": arch, "criterion": criterion, "p": p, "seed": seed, "budget": budget.name,
        "budget_description": budget.description, "data": data.source, "removed": removed, "scores": scores,
        "params": sum(q.numel() for q in model.parameters()), "flops": flops[""] if flops else None,
        "accuracy": result.accuracy, "train_seconds": result.train_seconds, "history": result.history,
        "machine": machine(), "date": time.strftime("%Y-%m-%d"), "command": "python -m examples.cifar.table2 "
        + " ".join(sys.argv[1:]),
    }


def run_table(
    arch: str, criteria: list[str], densities: list[int], seeds: int, budget: Budget, data: CifarData,
    store: ResultsStore, *, runs: Path = RUNS, progress: bool = True,
) -> list[dict[str, Any]]:
    """Every run of the table that is not in ``store`` yet (dense first, then the tickets)."""
    plan = [("dense", 0)] + [(c, p) for c in criteria for p in densities]
    done = []
    for seed in range(seeds):
        for criterion, p in plan:
            rid = run_id(arch, budget.name, criterion, p, seed)
            if store.has(TABLE, rid):
                continue
            if progress:
                print(f"[table2] {rid}", flush=True)
            record = run_one(arch, criterion, p, seed, budget, data, runs=runs, progress=progress)
            store.save(TABLE, rid, record)
            done.append(record)
    return done


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def report(records: list[dict[str, Any]]) -> str:
    """The Table 2 section: accuracy per criterion and p, and the difference to dense in points."""
    lines = ["## Table 2: pruning at initialization (ResNet, Algorithm 2)", ""]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["arch"], r["budget"]), []).append(r)
    for (arch, budget), rows in sorted(groups.items()):
        dense = {r["seed"]: r["accuracy"] for r in rows if r["criterion"] == "dense"}
        lines += [
            f"### {arch}, budget `{budget}`", "",
            f"Budget: {rows[0]['budget_description']}. Data: {rows[0]['data']}. Command: `{rows[0]['command']}` "
            f"({rows[0]['machine']['cpu']}, {rows[0]['machine']['cores']} cores).", "",
            "Difference = ticket - dense in percentage points, per seed, then mean ± std over seeds; a winning "
            "ticket has difference ≥ 0.", "",
            "| criterion | p | params | FLOPs | accuracy, % | difference, pp | seeds | training time vs dense |",
            "|---|---|---|---|---|---|---|---|",
        ]
        dense_time = statistics.mean(r["train_seconds"] for r in rows if r["criterion"] == "dense") if dense else None
        keyed: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for r in rows:
            keyed.setdefault((r["criterion"], r["p"]), []).append(r)
        for (criterion, p), runs in sorted(keyed.items(), key=lambda kv: (kv[0][0] != "dense", kv[0])):
            diffs = [r["accuracy"] - dense[r["seed"]] for r in runs if r["seed"] in dense]
            diff = _mean_std(diffs).replace("-", "−") if diffs else "n/a"
            speed = (f"{dense_time / statistics.mean(r['train_seconds'] for r in runs):.2f}x"
                     if dense_time and criterion != "dense" else "")
            flops = runs[0]["flops"]
            sign = "+" if diffs and statistics.mean(diffs) >= 0 else ""
            lines.append(
                f"| {criterion} | {p} | {runs[0]['params'] / 1e3:.0f}K | "
                f"{f'{flops / 1e6:.1f}M' if flops else 'n/a'} | {_mean_std([r['accuracy'] for r in runs])} | "
                f"{'' if criterion == 'dense' else sign + diff} | {len(runs)} | {speed} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.cifar.table2", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet32", choices=["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"])
    parser.add_argument("--criteria", nargs="+", default=["snip", "grasp"])
    parser.add_argument("--densities", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--epochs", type=int, help="override the budget's number of epochs")
    parser.add_argument("--data", help="CIFAR-10: .npz JPEG copy or torchvision root (default: RESIDUAL_PRUNE_DATA, "
                        "the cache, or the download)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"results store (default {RESULTS})")
    parser.add_argument("--runs", type=Path, default=RUNS, help=f"checkpoints (default {RUNS})")
    parser.add_argument("--report", action="store_true", help="only print the Table 2 section from the store")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    store = ResultsStore(args.results)
    if not args.report:
        budget = BUDGETS[args.budget]
        if args.epochs:
            budget = dataclasses.replace(
                budget, name=f"{budget.name}-{args.epochs}ep", description=f"{budget.description} (here {args.epochs} "
                "epochs)", schedule=dataclasses.replace(budget.schedule, epochs=args.epochs))
        data = CifarData.load(args.data, train_limit=budget.train_limit, test_limit=budget.test_limit)
        run_table(args.arch, args.criteria, args.densities, args.seeds, budget, data, store, runs=args.runs,
                  progress=not args.quiet)
    print(report(store.records(TABLE)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
