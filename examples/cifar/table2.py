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

from pathlib import Path
from typing import Any

import torch

from benchmarks._common import shell_command
from residual_prune import apply_plan, plan_pruning
from residual_prune.data import balanced_indices
from residual_prune.models import cifar_resnet

from . import reporting
from .budgets import Budget, rewind_epochs
from .cost import EnergyMeter
from .data import CifarData, normalise
from .options import RUNS, Seeds, add_run_options, add_ticket_options, parser_for, prepare, seed_list, seeds_of
from .reference import Reference, load_reference
from .reporting import (
    Claim,
    Section,
    budget_note,
    by_setting,
    by_ticket,
    convergence,
    mean_std,
    paper_only,
    provenance,
    signed,
    table_text,
)
from .store import ResultsStore, provenance_fields
from .tickets import run_id, train_measured

TABLE = "table2"
CALIBRATION = 256  # images in the one calibration batch of SNIP/GraSP (class-balanced)


def calibration_batch(data: CifarData, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    index = torch.from_numpy(balanced_indices(data.train_y.numpy(), CALIBRATION, seed))
    return [(normalise(data.train_x[index]), data.train_y[index])]


def run_one(
    arch: str,
    criterion: str,
    p: int,
    seed: int,
    budget: Budget,
    data: CifarData,
    *,
    runs: Path,
    progress: bool,
    meter: EnergyMeter | None = None,
    command: str = "",
    plan_data: CifarData | None = None,
) -> dict[str, Any]:
    """Build, (prune at initialization,) train and evaluate one network; the record of the run. ``plan_data``: the
    data on the CPU, for the calibration batch, where ``data`` is on a GPU (the default: ``data``)."""
    torch.manual_seed(seed)
    model = getattr(cifar_resnet, arch)()
    removed, scores, plan = [], {}, None
    calibration = calibration_batch(plan_data or data, seed)
    if criterion != "dense":
        plan = plan_pruning(model, criterion=criterion, n=p, data=calibration, policy="paper", progress=False)
        model = apply_plan(model, plan, inplace=True)
        removed, scores = plan.removed, plan.scores
    rid = run_id(arch, budget.name, criterion, p, seed)
    keep = sorted(set(rewind_epochs(budget).values())) if criterion == "dense" else []  # for Table 1
    measured = train_measured(
        model,
        data,
        budget,
        seed=seed,
        checkpoint_dir=runs / rid,
        batch=calibration[0],
        progress=progress,
        meter=meter,
        keep_epochs=keep,
    )
    return {
        "table": TABLE,
        "run_id": rid,
        "arch": arch,
        "criterion": criterion,
        "p": p,
        "seed": seed,
        "removed": removed,
        "scores": scores,
        "plan": plan.to_dict() if plan else None,
        **measured,
        **provenance_fields(budget.name, budget.description, data.source, command),
    }


def run_table(
    arch: str,
    criteria: list[str],
    densities: list[int],
    seeds: Seeds,
    budget: Budget,
    data: CifarData,
    store: ResultsStore,
    *,
    runs: Path = RUNS,
    progress: bool = True,
    command: str = "",
) -> list[dict[str, Any]]:
    """Every run of the table that is not in ``store`` yet (dense first, then the tickets)."""
    plan = [("dense", 0)] + [(c, p) for c in criteria for p in densities]
    done: list[dict[str, Any]] = []
    meter = EnergyMeter()
    for seed in seed_list(seeds):
        for criterion, p in plan:
            rid = run_id(arch, budget.name, criterion, p, seed)
            if store.has(TABLE, rid):
                continue
            if progress:
                print(f"[table2] {rid}", flush=True)
            record = run_one(
                arch, criterion, p, seed, budget, data, runs=runs, progress=progress, meter=meter, command=command
            )
            store.save(TABLE, rid, record)
            done.append(record)
    meter.close()
    return done


def differences(rows: list[dict[str, Any]]) -> dict[tuple[str, int], list[float]]:
    """Ticket - dense accuracy in points per (criterion, p), one value per seed that has a dense run."""
    dense = {r["seed"]: r["accuracy"] for r in rows if r["criterion"] == "dense"}
    return {
        ticket: [r["accuracy"] - dense[r["seed"]] for r in runs if r["seed"] in dense]
        for ticket, runs in by_ticket(rows)
        if ticket[0] != "dense"
    }


def claims(reference: Reference, arch: str, rows: list[dict[str, Any]]) -> list[Claim]:
    """The paper's Table 2 differences for ``arch`` next to ours (from ``rows``, one arch and budget)."""
    ours = differences(rows)
    return [
        Claim(f"{criterion} p={p}", "accuracy − dense", values["difference"], tuple(ours.get((criterion, p), ())))
        for (criterion, p), values in reference.of(TABLE, arch).items()
        if p is not None
    ]


def command(arch: str) -> str:
    return reporting.command(TABLE, arch, "--criteria snip grasp --densities 1 2 3 4 5 --seeds 3")


def report(records: list[dict[str, Any]], reference: Reference | None = None) -> str:
    """The Table 2 section: accuracy per criterion and p and the difference to dense in points, then the paper's
    numbers (``reference``, by default the shipped copy) next to ours with both verdicts."""
    reference = reference or load_reference()
    sections = []
    for (arch, budget), rows in by_setting(records).items():
        dense = [r["accuracy"] for r in rows if r["criterion"] == "dense"]
        ours = differences(rows)
        body = [
            budget_note(rows, arch, dense),
            "",
            provenance(rows),
            "",
            "Difference = ticket - dense in percentage points, per seed, then mean ± std over seeds. Training costs "
            "and speed-ups: Table 4.",
            "",
            "| criterion | p | params | FLOPs | accuracy, % | difference, pp | seeds |",
            "|---|---|---|---|---|---|---|",
        ]
        for (criterion, p), runs in by_ticket(rows):
            flops = runs[0]["flops"]
            body.append(
                f"| {criterion} | {p} | {runs[0]['params'] / 1e3:.0f}K | "
                f"{f'{flops / 1e6:.1f}M' if flops else 'n/a'} | {mean_std([r['accuracy'] for r in runs])} | "
                f"{'' if criterion == 'dense' else signed(ours[criterion, p])} | {len(runs)} |"
            )
        body.append("")
        title = f"{arch}, budget `{budget}`"
        sections.append(
            Section(title, tuple(body), tuple(claims(reference, arch, rows)), caveat=convergence(arch, dense))
        )
    ran = {arch for arch, _ in by_setting(records)}
    sections += [
        paper_only(arch, claims(reference, arch, []), command(arch))
        for arch in reference.arches(TABLE)
        if arch not in ran
    ]
    return table_text(
        "## Table 2: pruning at initialization (ResNet, Algorithm 2)",
        [reference.text(TABLE, "what") + ".", ""],
        sections,
        "Table 2",
    )


def main(argv: list[str] | None = None) -> int:
    parser = parser_for("examples.cifar.table2", __doc__)
    add_ticket_options(parser)
    add_run_options(parser)
    args = parser.parse_args(argv)
    store = ResultsStore(args.results)
    if not args.report:
        budget, data = prepare(args)
        run_table(
            args.arch,
            args.criteria,
            args.densities,
            seeds_of(args),
            budget,
            data,
            store,
            runs=args.runs,
            progress=not args.quiet,
            command=shell_command("examples.cifar.table2", argv),
        )
    print(report(store.records(TABLE)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
