"""Table 1 of the paper: layer-pruned lottery tickets of the trained network (Algorithm 1).

For each seed: train the dense ResNet to completion (theta_n, the Table 2 dense run, which
keeps the rewind points theta_i). For each criterion and number ``p`` of removed blocks,
score the blocks of theta_n on a calibration batch, remove the ``p`` least important, and
train the ticket in two ways:

- rewound: the kept weights go back to theta_i and training resumes the schedule at epoch
  i with its learning rate (learning-rate rewinding, Renda et al. 2020), for each rewind
  point i (the paper's theta_0, theta_25, theta_50, theta_75, scaled to the budget's length);
- re-initialised: the ticket's architecture with fresh random weights, trained with the whole
  schedule (Liu et al., "Rethinking the Value of Network Pruning", ICLR 2019).

    python -m examples.cifar.table1 --arch resnet56 --criteria hrank expectabs pls kl random l1 \\
        --densities 2 4 --seeds 1 --budget paper
    python -m examples.cifar.table1 --report
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import shell_command
from residual_prune import PruningPlan, apply_plan, plan_pruning
from residual_prune.criteria import accepted_options, get_criterion_info

from . import reporting, table2
from .budgets import PAPER_REWIND, Budget, rewind_epochs
from .cost import EnergyMeter
from .data import CifarData
from .options import RUNS, Seeds, add_run_options, add_ticket_options, parser_for, prepare, seed_list, seeds_of
from .reference import Reference, load_reference
from .reporting import Claim, Section, budget_note, by_setting, convergence, paper_only, provenance, signed, table_text
from .store import ResultsStore, provenance_fields
from .tickets import build, load_trained, train_measured

TABLE = "table1"
TRAINED_CRITERIA = ["hrank", "expectabs", "pls", "kl", "random", "l1"]
REINIT_SEED = 10_000  # offset of the seed of a re-initialised ticket, so that it differs from theta_0
REINIT = "reinit"


def ticket_id(arch: str, budget: str, criterion: str, p: int, start: int | str, seed: int) -> str:
    """``start``: the paper's rewind epoch, or ``"reinit"``."""
    variant = start if start == REINIT else f"rewind{start}"
    return f"{arch}-{budget}-{criterion}-p{p}-{variant}-seed{seed}"


def trained_plan(dense: dict[str, Any], criterion: str, p: int, data: CifarData, runs: Path) -> PruningPlan:
    """Score the blocks of the trained dense network (theta_n) and choose the ``p`` to remove."""
    model = load_trained(dense, runs)
    quiet = accepted_options(get_criterion_info(criterion), {"progress": False})
    return plan_pruning(
        model, criterion=criterion, n=p, data=table2.calibration_batch(data, dense["seed"]), policy="paper", **quiet
    )


def ticket(dense: dict[str, Any], plan: PruningPlan, start: int | str, budget: Budget, runs: Path) -> tuple[Any, int]:
    """The ticket's network before retraining and the epoch its schedule starts at."""
    if start == REINIT:
        torch.manual_seed(REINIT_SEED + dense["seed"])
        return build(dense["arch"], plan.removed), 0
    epoch = rewind_epochs(budget)[int(start)]
    path = runs / dense["run_id"] / f"theta_{epoch}.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the dense run {dense['run_id']} kept no weights at epoch {epoch}. Delete "
            f"{runs / dense['run_id']} and its record {dense['run_id']}.json in the results store, and run again"
        )
    model = build(dense["arch"])
    model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return apply_plan(model, plan, inplace=True), epoch


def run_table(
    arch: str,
    criteria: list[str],
    densities: list[int],
    rewinds: list[int | str],
    seeds: Seeds,
    budget: Budget,
    data: CifarData,
    store: ResultsStore,
    *,
    runs: Path = RUNS,
    progress: bool = True,
    command: str = "",
) -> list[dict[str, Any]]:
    """Every ticket of the table not in ``store`` yet; the dense runs come from (and go to) Table 2."""
    table2.run_table(arch, [], [], seeds, budget, data, store, runs=runs, progress=progress, command=command)
    dense_runs = {
        r["seed"]: r
        for r in store.records(table2.TABLE)
        if r["arch"] == arch and r["budget"] == budget.name and r["criterion"] == "dense"
    }
    done: list[dict[str, Any]] = []
    meter = EnergyMeter()
    for seed in seed_list(seeds):
        dense = dense_runs[seed]
        batch = table2.calibration_batch(data, seed)[0]  # for the training-memory count
        for criterion in criteria:
            for p in densities:
                todo = [s for s in rewinds if not store.has(TABLE, ticket_id(arch, budget.name, criterion, p, s, seed))]
                if not todo:
                    continue
                plan = trained_plan(dense, criterion, p, data, runs)
                for start in todo:
                    rid = ticket_id(arch, budget.name, criterion, p, start, seed)
                    if progress:
                        print(f"[table1] {rid}", flush=True)
                    model, epoch = ticket(dense, plan, start, budget, runs)
                    measured = train_measured(
                        model,
                        data,
                        budget,
                        seed=seed,
                        checkpoint_dir=runs / rid,
                        batch=batch,
                        progress=progress,
                        meter=meter,
                        start_epoch=epoch,
                    )
                    record = {
                        "table": TABLE,
                        "run_id": rid,
                        "arch": arch,
                        "criterion": criterion,
                        "p": p,
                        "seed": seed,
                        "rewind": start,
                        "start_epoch": epoch,
                        "dense_run": dense["run_id"],
                        "dense_accuracy": dense["accuracy"],
                        "removed": plan.removed,
                        "scores": plan.scores,
                        **measured,
                        **provenance_fields(budget.name, budget.description, data.source, command),
                    }
                    store.save(TABLE, rid, record)
                    done.append(record)
    meter.close()
    return done


def variants(records: Iterable[dict[str, Any]]) -> list[int | str]:
    """The rewind points among ``records`` in the paper's order, re-init last."""
    return sorted({r["rewind"] for r in records}, key=lambda s: (s == REINIT, s if s != REINIT else 0))


def variant_name(start: int | str) -> str:
    return "re-init" if start == REINIT else f"θ_{start}"


def differences(records: Iterable[dict[str, Any]]) -> dict[tuple[str, int], dict[int | str, list[float]]]:
    """Ticket - dense accuracy in points, per (criterion, p) and rewind point, one value per seed."""
    keyed: dict[tuple[str, int], dict[int | str, list[float]]] = {}
    for r in records:
        keyed.setdefault((r["criterion"], r["p"]), {}).setdefault(r["rewind"], []).append(
            r["accuracy"] - r["dense_accuracy"]
        )
    return dict(sorted(keyed.items()))


def claims(reference: Reference, arch: str, rows: list[dict[str, Any]]) -> list[Claim]:
    """The paper's Table 1 differences for ``arch`` next to ours: the paper's row of a criterion (its p is not stated)
    against ours at every p we ran with that criterion, one claim per rewind point."""
    ours = differences(rows)
    found = []
    for (criterion, stated), values in reference.of(TABLE, arch).items():
        ran: Sequence[int | None] = sorted(p for c, p in ours if c == criterion and stated in (None, p))
        for p in ran or [stated]:
            cells = ours.get((criterion, p), {}) if p is not None else {}
            for name, value in values.items():
                start = int(name.removeprefix("theta_"))
                ticket = f"{criterion} p={'?' if p is None else p} {variant_name(start)}"
                found.append(Claim(ticket, "accuracy − dense", value, tuple(cells.get(start, ()))))
    return found


def command(arch: str) -> str:
    return reporting.command(TABLE, arch, "--criteria hrank expectabs pls kl random --densities P")


def report(records: list[dict[str, Any]], reference: Reference | None = None) -> str:
    """The Table 1 section: per criterion and p, the difference to dense (pp) of each rewind point and of re-init,
    then the paper's numbers (``reference``, by default the shipped copy) next to ours with both verdicts."""
    reference = reference or load_reference()
    sections = []
    for (arch, budget), rows in by_setting(records).items():
        points = variants(rows)
        starts = {r["rewind"]: r["start_epoch"] for r in rows}
        dense = list({r["dense_run"]: r["dense_accuracy"] for r in rows}.values())
        body = [
            budget_note(rows, arch, dense),
            "",
            provenance(rows),
            "",
            "Difference to the dense network in percentage points (mean ± std over seeds); θ_i: kept weights "
            "rewound to the paper's epoch i and the schedule resumed there (here epoch "
            + ", ".join(f"{starts[s]} for θ_{s}" for s in points if s != REINIT)
            + "); re-init: the same architecture with new random weights, trained from scratch.",
            "",
            "| criterion | p | " + " | ".join(variant_name(s) for s in points) + " | seeds |",
            "|---|---|" + "---|" * (len(points) + 1),
        ]
        for (criterion, p), cells in differences(rows).items():
            body.append(
                f"| {criterion} | {p} | "
                + " | ".join(signed(cells.get(s, [])) for s in points)
                + f" | {max(map(len, cells.values()))} |"
            )
        body.append("")
        sections.append(
            Section(
                f"{arch}, budget `{budget}`",
                tuple(body),
                tuple(claims(reference, arch, rows)),
                command(arch),
                convergence(arch, dense),
            )
        )
    ran = {arch for arch, _ in by_setting(records)}
    sections += [
        paper_only(arch, claims(reference, arch, []), command(arch))
        for arch in reference.arches(TABLE)
        if arch not in ran
    ]
    unstated = reference.text(TABLE, "p")  # a text where the paper does not state its p
    intro = [
        f"{reference.text(TABLE, 'what')}. Rewinding: {reference.text('setup_facts', 'lth_rewinding')}. "
        + (
            f"The paper's p: {unstated}, so its row of a criterion is compared with ours at every p we ran. "
            if unstated
            else ""
        )
        + f"Re-initialisation, the paper's text only: {reference.text(TABLE, 'reinit_text')}; our re-init column "
        "is therefore not compared row by row.",
        "",
    ]
    return table_text("## Table 1: lottery tickets of the trained network (Algorithm 1)", intro, sections, "Table 1")


def _rewind(value: str) -> int | str:
    return REINIT if value == REINIT else int(value)


def main(argv: list[str] | None = None) -> int:
    parser = parser_for("examples.cifar.table1", __doc__)
    add_ticket_options(parser, arch="resnet56", criteria=TRAINED_CRITERIA, densities=(2, 4))
    parser.add_argument(
        "--rewind",
        nargs="+",
        type=_rewind,
        default=[*PAPER_REWIND, REINIT],
        help="rewind points in epochs of the paper budget (scaled to the budget), and/or reinit",
    )
    add_run_options(parser, seeds=1)
    args = parser.parse_args(argv)
    store = ResultsStore(args.results)
    if not args.report:
        budget, data = prepare(args)
        run_table(
            args.arch,
            args.criteria,
            args.densities,
            args.rewind,
            seeds_of(args),
            budget,
            data,
            store,
            runs=args.runs,
            progress=not args.quiet,
            command=shell_command("examples.cifar.table1", argv),
        )
    print(report(store.records(TABLE)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
