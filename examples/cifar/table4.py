"""Table 4 of the paper: what a ticket saves in training (FLOPs, memory, energy and CO2, time) against the dense net.

The tickets are Algorithm 2's (Table 2's runs, trained or reused from its store). From each
run's record: FLOPs (fvcore's convention, one 32x32 image), training memory (weights, gradients, momentum
and the activations autograd saves, for one batch of the budget), the energy and CO2 of the
whole training (codecarbon, offline, region in the record) and its wall-clock. Because the
recorded runs ran one after the other on a machine others may have shared, the training
speed-up is also measured side by side in this process: SGD steps of the dense network and
of every ticket, interleaved, after warm-up, medians.

    python -m examples.cifar.table4 --arch resnet32 resnet56 --criterion snip --densities 1 3 5 --budget cpu \\
        --data ../shared/data/cifar10_jpeg.npz
    python -m examples.cifar.table4 --report
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import shell_command
from benchmarks.timing import side_by_side, train_step

from . import table2
from .budgets import Budget
from .data import CifarData
from .options import ARCHS, RUNS, add_run_options, parser_for, prepare
from .reference import PaperColumn, Reference
from .reporting import by_setting, mean_std, provenance, signed
from .store import ResultsStore, provenance_fields
from .tickets import build

TABLE = "table4"
REPEATS = 9


def timing_id(arch: str, budget: str, criterion: str) -> str:
    return f"{arch}-{budget}-{criterion}-steps"


def measure_steps(
    arch: str, removed: dict[int, list[str]], batch_size: int, *, repeats: int = REPEATS
) -> dict[int, float]:
    """Median seconds of one SGD step for the dense network (p = 0) and each ticket, measured side by side."""
    x = torch.randn(batch_size, 3, 32, 32)
    steps = {p: train_step(build(arch, names), x, 10) for p, names in removed.items()}
    return side_by_side(steps, warmup=3, repeats=repeats)


def run_table(
    arch: str,
    criterion: str,
    densities: list[int],
    seeds: int,
    budget: Budget,
    data: CifarData,
    store: ResultsStore,
    *,
    runs: Path = RUNS,
    progress: bool = True,
    command: str = "",
    repeats: int = REPEATS,
) -> dict[str, Any] | None:
    """Train what Table 2's store lacks, then time the training steps side by side (once per arch and budget)."""
    table2.run_table(
        arch, [criterion], densities, seeds, budget, data, store, runs=runs, progress=progress, command=command
    )
    rid = timing_id(arch, budget.name, criterion)
    if store.has(TABLE, rid):
        return None
    records = [
        r
        for r in store.records(table2.TABLE)
        if r["arch"] == arch
        and r["budget"] == budget.name
        and r["seed"] == 0
        and (r["criterion"] == "dense" or (r["criterion"] == criterion and r["p"] in densities))
    ]
    removed = {r["p"]: r["removed"] for r in records}
    if progress:
        print(f"[table4] timing {len(removed)} networks side by side", flush=True)
    seconds = measure_steps(arch, removed, budget.schedule.batch_size, repeats=repeats)
    record = {
        "table": TABLE,
        "run_id": rid,
        "arch": arch,
        "criterion": criterion,
        "batch_size": budget.schedule.batch_size,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "step_seconds": {str(p): s for p, s in seconds.items()},
        **provenance_fields(budget.name, budget.description, data.source, command),
    }
    store.save(TABLE, rid, record)
    return record


def _mb(n: float) -> str:
    return f"{n / 2**20:.0f}"


def report(trained: list[dict[str, Any]], timings: list[dict[str, Any]], reference: Reference | None = None) -> str:
    """The Table 4 section: per ticket, its savings against the dense network of the same arch and budget; with a
    ``reference``, the paper's numbers in a last column."""
    lines = ["## Table 4: training cost of tickets vs the dense network", ""]
    for timing in sorted(timings, key=lambda t: (t["arch"], t["budget"])):
        arch, budget, criterion = timing["arch"], timing["budget"], timing["criterion"]
        rows = by_setting(trained).get((arch, budget), [])
        dense = [r for r in rows if r["criterion"] == "dense"]
        if not dense:
            continue
        step = {int(p): s for p, s in timing["step_seconds"].items()}
        d = dense[0]
        paper = PaperColumn.of(reference, TABLE, arch)
        by_p: dict[int, list[dict[str, Any]]] = {0: dense}
        for r in rows:
            if r["criterion"] == criterion and r["p"] in step:
                by_p.setdefault(r["p"], []).append(r)
        lines += [
            f"### {arch}, budget `{budget}`, {criterion} tickets",
            "",
            provenance(r for runs in by_p.values() for r in runs),
            "",
            f"Energy and CO2: codecarbon {_codecarbon()} in offline mode for region {d.get('region')}, over the "
            f"training epochs of each run; CPU power {_power(d)}. Training memory: one SGD step on "
            f"{timing['batch_size']} images, counted (weights, gradients, momentum, saved activations). Side-by-side "
            f"speed-up: median of {timing['repeats']} interleaved SGD steps per network, {timing['threads']} threads "
            f"(`{timing['command']}`, {timing['date']}). Recorded speed-up: total training wall-clock of the runs, "
            "measured one after the other." + paper.source,
            "",
            "| p | params | FLOPs | FLOPs saved | training memory, MiB | memory saved | energy, Wh | CO2, g | "
            "speed-up (side by side) | speed-up (recorded) | accuracy, % | difference, pp |" + paper.header,
            "|---|---|---|---|---|---|---|---|---|---|---|---|" + paper.rule,
        ]
        dense_acc = {r["seed"]: r["accuracy"] for r in dense}
        for p, runs in sorted(by_p.items()):
            r = runs[0]
            mem = r["training_memory"]["total"]
            energy = statistics.mean(x["energy_kwh"] for x in runs) if r.get("energy_kwh") is not None else None
            co2 = statistics.mean(x["emissions_kg"] for x in runs) if r.get("emissions_kg") is not None else None
            recorded = statistics.mean(x["train_seconds"] for x in dense) / statistics.mean(
                x["train_seconds"] for x in runs
            )
            difference = [x["accuracy"] - dense_acc[x["seed"]] for x in runs if x["seed"] in dense_acc]
            lines.append(
                f"| {p} | {r['params'] / 1e3:.0f}K | {r['flops'] / 1e6:.1f}M | {1 - r['flops'] / d['flops']:.1%} | "
                f"{_mb(mem)} | {1 - mem / d['training_memory']['total']:.1%} | "
                f"{'n/a' if energy is None else f'{energy * 1e3:.2f}'} | "
                f"{'n/a' if co2 is None else f'{co2 * 1e3:.2f}'} | "
                f"{step[0] / step[p]:.2f}x | {recorded:.2f}x | {mean_std([x['accuracy'] for x in runs])} | "
                f"{'' if p == 0 else signed(difference)} |" + paper.cell(criterion, p)
            )
        lines.append("")
    return "\n".join(lines)


def _codecarbon() -> str:
    try:
        import codecarbon

        return codecarbon.__version__
    except ImportError:
        return "(not installed)"


def _power(record: dict[str, Any]) -> str:
    watts = [h["cpu_power_w"] for h in record["history"] if "cpu_power_w" in h]
    return f"{statistics.mean(watts):.1f} W on average (codecarbon's estimate)" if watts else "not recorded"


def main(argv: list[str] | None = None) -> int:
    parser = parser_for("examples.cifar.table4", __doc__)
    parser.add_argument("--arch", nargs="+", default=["resnet32", "resnet56"], choices=ARCHS)
    parser.add_argument("--criterion", default="snip")
    parser.add_argument("--densities", nargs="+", type=int, default=[1, 3, 5], help="numbers of blocks removed")
    add_run_options(parser, seeds=1)
    args = parser.parse_args(argv)
    store = ResultsStore(args.results)
    if not args.report:
        budget, data = prepare(args)
        for arch in args.arch:
            run_table(
                arch,
                args.criterion,
                args.densities,
                args.seeds,
                budget,
                data,
                store,
                runs=args.runs,
                progress=not args.quiet,
                command=shell_command("examples.cifar.table4", argv),
            )
    print(report(store.records(table2.TABLE), store.records(TABLE)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
