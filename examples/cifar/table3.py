"""Table 3 of the paper: layer pruning against filter pruning at the same number of filters, both at initialization.

For each seed, criterion and number ``p`` of removed blocks: the layer-pruned ticket of Table 2
(Algorithm 2: the ``p`` least important blocks by SNIP or GraSP on one calibration batch, removed
from the untrained network) keeps some number of filters (conv output channels). The same untrained
dense network is filter-pruned with torch-pruning, scoring filters with the same criterion on the
same calibration batch (:mod:`examples.cifar.filters`), to the closest reachable number of filters,
and trained from its initial weights with the same schedule. The dense network and the layer tickets
are Table 2's runs (shared through the results store, so nothing is trained twice); every filter
ticket is one record under ``table3``, skipped when already there.

    python -m examples.cifar.table3 --arch resnet32 --criteria snip grasp --densities 1 2 3 4 5 --seeds 2 \\
        --budget cpu --data ../shared/data/cifar10_jpeg.npz
    python -m examples.cifar.table3 --report        # regenerate the Table 3 section from the store
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import shell_command
from residual_prune.models import cifar_resnet

from . import reporting, table2
from .budgets import Budget
from .cost import EnergyMeter
from .data import CifarData
from .filters import IMPORTANCES, conv_widths, count_filters, prune_to_filters
from .options import RUNS, Seeds, add_run_options, add_ticket_options, parser_for, prepare, seed_list, seeds_of
from .reference import Reference, load_reference
from .reporting import (
    LAYER_AHEAD,
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
from .table2 import calibration_batch
from .tickets import build, run_id, train_measured

TABLE = "table3"


def filter_run_id(arch: str, budget: str, criterion: str, p: int, seed: int) -> str:
    """``<arch>-<budget>-filter-<criterion>-p<p>-seed<seed>``."""
    return run_id(arch, budget, f"filter-{criterion}", p, seed)


def run_one(
    layer: dict[str, Any],
    budget: Budget,
    data: CifarData,
    *,
    runs: Path,
    progress: bool,
    meter: EnergyMeter | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Filter-prune the dense network of the Table 2 ``layer`` ticket's seed to the ticket's filter count, train
    it from its initial weights and evaluate it; the record of the run."""
    arch, criterion, p, seed = layer["arch"], layer["criterion"], layer["p"], layer["seed"]
    rid = filter_run_id(arch, budget.name, criterion, p, seed)
    target = count_filters(build(arch, layer["removed"]))
    torch.manual_seed(seed)  # the same initial weights as the dense network and the layer ticket of this seed
    dense = getattr(cifar_resnet, arch)()
    dense_filters = count_filters(dense)
    batch = calibration_batch(data, seed)[0]  # the batch that scored the blocks of the layer ticket
    model, ratio = prune_to_filters(dense, criterion, target, batch)
    measured = train_measured(
        model, data, budget, seed=seed, checkpoint_dir=runs / rid, batch=batch, progress=progress, meter=meter
    )
    return {
        "table": TABLE,
        "run_id": rid,
        "arch": arch,
        "criterion": criterion,
        "p": p,
        "seed": seed,
        "layer_run_id": layer.get("run_id") or run_id(arch, budget.name, criterion, p, seed),
        "filters": count_filters(model),
        "target_filters": target,
        "dense_filters": dense_filters,
        "filter_ratio": ratio,
        "widths": conv_widths(model),
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
    """Table 2's runs that are missing (dense, layer tickets), then every filter ticket not in ``store`` yet;
    the new Table 3 records."""
    table2.run_table(
        arch, criteria, densities, seeds, budget, data, store, runs=runs, progress=progress, command=command
    )
    done: list[dict[str, Any]] = []
    meter = EnergyMeter()
    for seed in seed_list(seeds):
        for criterion in criteria:
            for p in densities:
                rid = filter_run_id(arch, budget.name, criterion, p, seed)
                if store.has(TABLE, rid):
                    continue
                if progress:
                    print(f"[table3] {rid}", flush=True)
                layer = store.get(table2.TABLE, run_id(arch, budget.name, criterion, p, seed))
                record = run_one(layer, budget, data, runs=runs, progress=progress, meter=meter, command=command)
                store.save(TABLE, rid, record)
                done.append(record)
    meter.close()
    return done


def _span(values: list[float], fmt: Callable[[float], str]) -> str:
    """One value, or ``min–max`` where seeds differ (each seed removes its own blocks)."""
    low, high = min(values), max(values)
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


def _k(v: float) -> str:
    return f"{v / 1e3:.0f}K"


def _m(v: float) -> str:
    return f"{v / 1e6:.1f}M"


def differences(
    layer: dict[tuple[str, int, int], dict[str, Any]], rows: list[dict[str, Any]]
) -> dict[tuple[str, int], dict[str, list[float]]]:
    """Per (criterion, p), one value per seed: layer - dense, filter - dense and layer - filter accuracy in points
    (``layer``: the Table 2 records of the arch and budget by (criterion, p, seed); ``rows``: the filter tickets)."""
    dense = {seed: r["accuracy"] for (c, _, seed), r in layer.items() if c == "dense"}
    found: dict[tuple[str, int], dict[str, list[float]]] = {}
    for (criterion, p), runs in by_ticket(rows):
        seeds = [r["seed"] for r in runs]
        ticket = {s: layer[(criterion, p, s)]["accuracy"] for s in seeds if (criterion, p, s) in layer}
        filtered = {r["seed"]: r["accuracy"] for r in runs}
        found[criterion, p] = {
            "layer": [a - dense[s] for s, a in ticket.items() if s in dense],
            "filter": [a - dense[s] for s, a in filtered.items() if s in dense],
            "layer - filter": [a - filtered[s] for s, a in ticket.items()],
        }
    return found


def claims(reference: Reference, arch: str, ours: dict[tuple[str, int], dict[str, list[float]]]) -> list[Claim]:
    """The paper's Table 3 for ``arch`` next to ours: each ticket against dense, and layer against filter (the
    difference of the paper's two numbers)."""
    found = []
    for (criterion, p), values in reference.of(TABLE, arch).items():
        mine = ours.get((criterion, p), {}) if p is not None else {}
        for kind in ("layer", "filter"):
            if kind in values:
                found.append(
                    Claim(f"{kind} {criterion} p={p}", "accuracy − dense", values[kind], tuple(mine.get(kind, ())))
                )
        if {"layer", "filter"} <= set(values):
            found.append(
                Claim(
                    f"{criterion} p={p}",
                    "layer − filter",
                    round(values["layer"] - values["filter"], 2),
                    tuple(mine.get("layer - filter", ())),
                    LAYER_AHEAD,
                )
            )
    return found


def command(arch: str) -> str:
    return reporting.command(TABLE, arch, "--criteria snip grasp --densities 1 --seeds 3")


def report(
    records_table2: list[dict[str, Any]], records_table3: list[dict[str, Any]], reference: Reference | None = None
) -> str:
    """The Table 3 section: per criterion and p, filters, params, FLOPs and accuracy of the layer-pruned and the
    filter-pruned ticket, each against dense, then the paper's numbers (``reference``, by default the shipped copy)
    next to ours with both verdicts."""
    reference = reference or load_reference()
    sections = []
    for (arch, budget), rows in by_setting(records_table3).items():
        layer = {
            (r["criterion"], r["p"], r["seed"]): r
            for r in records_table2
            if r["arch"] == arch and r["budget"] == budget
        }
        seeds = {r["seed"] for r in rows}
        dense = {seed: r for (c, _, seed), r in layer.items() if c == "dense" and seed in seeds}
        first = rows[0]
        trained = [layer[k] for k in dict.fromkeys((r["criterion"], r["p"], r["seed"]) for r in rows) if k in layer]
        ours = differences({k: v for k, v in layer.items() if k[2] in seeds}, rows)
        body = [
            budget_note([*rows, *trained, *dense.values()], arch, [r["accuracy"] for r in dense.values()]),
            "",
            provenance([*rows, *trained, *dense.values()]),
            "",
            "Layer: Table 2's ticket (p blocks removed at initialization). Filter: the dense network filter-pruned "
            "at initialization by torch-pruning (the same criterion per filter group, the same calibration batch, "
            "the same fraction of every layer's channels) to the reachable number of filters closest to the layer "
            "ticket's; both trained from their initial weights with the dense network's schedule. Filters = conv "
            "output channels. Differences to dense in percentage points per seed, then mean ± std over seeds.",
            "",
            "| criterion | p | filters (layer / filter) | params (layer / filter) | FLOPs (layer / filter) | "
            "accuracy layer, % | accuracy filter, % | layer − dense, pp | filter − dense, pp | seeds |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        if dense:
            d = list(dense.values())
            body.append(
                f"| dense | 0 | {first['dense_filters']} | {_span([r['params'] for r in d], _k)} "
                f"| {_span([r['flops'] for r in d], _m)} | {mean_std([r['accuracy'] for r in d])} | | | | {len(d)} |"
            )
        for (criterion, p), runs in by_ticket(rows):
            ticket = [layer[(criterion, p, r["seed"])] for r in runs if (criterion, p, r["seed"]) in layer]
            layer_acc = [t["accuracy"] for t in ticket]
            filters = f"{_span([r['target_filters'] for r in runs], str)} / {_span([r['filters'] for r in runs], str)}"
            params = (
                f"{_span([t['params'] for t in ticket], _k) if ticket else 'n/a'} / "
                f"{_span([r['params'] for r in runs], _k)}"
            )
            flops = (
                f"{_span([t['flops'] for t in ticket], _m) if ticket else 'n/a'} / "
                f"{_span([r['flops'] for r in runs], _m)}"
            )
            body.append(
                f"| {criterion} | {p} | {filters} | {params} | {flops} | {mean_std(layer_acc) if layer_acc else 'n/a'} "
                f"| {mean_std([r['accuracy'] for r in runs])} | {signed(ours[criterion, p]['layer'])} "
                f"| {signed(ours[criterion, p]['filter'])} | {len(runs)} |"
            )
        body.append("")
        sections.append(
            Section(
                f"{arch}, budget `{budget}`",
                tuple(body),
                tuple(claims(reference, arch, ours)),
                command(arch),
                convergence(arch, [r["accuracy"] for r in dense.values()]),
            )
        )
    ran = {arch for arch, _ in by_setting(records_table3)}
    sections += [
        paper_only(arch, claims(reference, arch, {}), command(arch))
        for arch in reference.arches(TABLE)
        if arch not in ran
    ]
    intro = [
        f"{reference.text(TABLE, 'what')}. The paper's filter counts: {reference.text(TABLE, 'filters_text')}. "
        "Layer − filter: the difference of the paper's two numbers, against ours per seed.",
        "",
    ]
    return table_text("## Table 3: layer vs filter pruning at matched filter sparsity", intro, sections, "Table 3")


def main(argv: list[str] | None = None) -> int:
    parser = parser_for("examples.cifar.table3", __doc__)
    add_ticket_options(parser, choices=IMPORTANCES)
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
            command=shell_command("examples.cifar.table3", argv),
        )
    print(report(store.records(table2.TABLE), store.records(TABLE)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
