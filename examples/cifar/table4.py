"""Table 4 of the paper: what a ticket saves in training (FLOPs, memory, energy and CO2, time) against the dense net.

The tickets are Algorithm 2's (Table 2's runs, trained or reused from its store). From each
run's record: FLOPs (fvcore's convention, one 32x32 image), training memory (weights, gradients, momentum
and the activations autograd saves, for one batch of the budget), the energy and CO2 of the
whole training (codecarbon, offline, region in the record) and its wall-clock; these three only
from runs that had the CPU to themselves (:func:`.sharing.timed_alone`). Because the recorded
runs ran one after the other on a machine others may have shared, the training speed-up is also
measured side by side in this process: SGD steps of the dense network and of every ticket as the
budget trains them (precision, memory format, compilation), interleaved, after warm-up, medians,
once per machine.

The tickets are GraSP's by default, as the paper's ("unless stated otherwise" after its Table 2), with
the numbers of removed blocks of the paper's rows (``benchmarks/reference/paper.json``); ``--criterion
snip`` adds SNIP tickets, reported apart as an extra.

    python -m examples.cifar.table4 --arch resnet32 resnet56 --budget cpu --data ../shared/data/cifar10_jpeg.npz
    python -m examples.cifar.table4 --arch resnet32 --criterion snip --densities 1 3 5 --budget cpu
    python -m examples.cifar.table4 --report
"""

from __future__ import annotations

import functools
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import machine, shell_command
from benchmarks.timing import side_by_side
from residual_prune import find_blocks
from residual_prune.capture import count_flops
from residual_prune.models import cifar_resnet

from . import reporting, table2
from .budgets import BUDGETS, Budget
from .data import CifarData
from .options import ARCHS, RUNS, Seeds, add_run_options, parser_for, prepare, seed_list, seeds_of
from .reference import Reference, load_reference
from .reporting import (
    FASTER,
    SAVES,
    Claim,
    Section,
    budget_note,
    by_setting,
    convergence,
    hardware,
    mean_std,
    paper_only,
    provenance,
    signed,
    table_text,
    trained_on,
)
from .sharing import SHARED, SPREAD, timed_alone, why_shared
from .store import ResultsStore, provenance_fields
from .tickets import build
from .train import Schedule, placed, training_step, uses_bf16

TABLE = "table4"
SHARED_CELL = "not timed alone"  # a cost cell of runs whose wall-clock was not their own (sharing.timed_alone)
REPEATS = 9
FLOPS_TOLERANCE = 0.5  # points of FLOPs saved within which a printed value is that of a number of blocks
DENSITIES = (1, 3, 5)  # numbers of removed blocks for an arch the paper's Table 4 does not have


def timing_id(arch: str, budget: str, criterion: str, machine: dict[str, Any]) -> str:
    """The id of the step timing of ``arch``'s ``criterion`` tickets at ``budget`` on ``machine``: one per machine,
    whose costs compare only with its own runs (:func:`report`)."""
    where = re.sub(r"[^a-z0-9]+", "-", hardware({"machine": machine}).lower()).strip("-")
    return f"{arch}-{budget}-{criterion}-steps-{where}"


def measure_steps(
    arch: str,
    removed: dict[int, list[str]],
    schedule: Schedule,
    device: torch.device,
    bf16: bool,
    *,
    repeats: int = REPEATS,
) -> dict[int, float]:
    """Median seconds of one SGD step for the dense network (p = 0) and each ticket, measured side by side on
    ``device`` as ``schedule`` trains them (:func:`.train.training_step`: its batch, memory format, loss, optimizer
    and compilation; bfloat16 autocast if ``bf16``); a GPU is synchronised after every step."""
    x = torch.randn(schedule.batch_size, 3, 32, 32, device=device)
    y = torch.arange(schedule.batch_size, device=device) % 10
    steps: dict[int, Callable[[], Any]] = {}
    for p, names in removed.items():
        _, step = training_step(placed(build(arch, names), schedule, device), schedule, device, bf16)
        steps[p] = _synchronised(step, x, y) if device.type == "cuda" else functools.partial(step, x, y)
    return side_by_side(steps, warmup=3, repeats=repeats)


def _synchronised(
    step: Callable[[torch.Tensor, torch.Tensor], Any], x: torch.Tensor, y: torch.Tensor
) -> Callable[[], Any]:
    def run() -> Any:
        out = step(x, y)
        torch.cuda.synchronize()
        return out

    return run


def run_table(
    arch: str,
    criterion: str,
    densities: list[int],
    seeds: Seeds,
    budget: Budget,
    data: CifarData,
    store: ResultsStore,
    *,
    runs: Path = RUNS,
    progress: bool = True,
    command: str = "",
    repeats: int = REPEATS,
    device: torch.device | None = None,
) -> dict[str, Any] | None:
    """Train what Table 2's store lacks, then time the training steps side by side (once per arch, budget and
    machine: the first seed's networks, as the budget trains them)."""
    table2.run_table(
        arch, [criterion], densities, seeds, budget, data, store, runs=runs, progress=progress, command=command
    )
    rid = timing_id(arch, budget.name, criterion, machine())
    if store.has(TABLE, rid):
        return None
    first = min(seed_list(seeds))  # one network per ticket: the first seed's
    records = [
        r
        for r in store.records(table2.TABLE)
        if r["arch"] == arch
        and r["budget"] == budget.name
        and r["seed"] == first
        and (r["criterion"] == "dense" or (r["criterion"] == criterion and r["p"] in densities))
    ]
    removed = {r["p"]: r["removed"] for r in records}
    if progress:
        print(f"[table4] timing {len(removed)} networks side by side", flush=True)
    device = device or torch.device("cpu")
    bf16 = uses_bf16(budget.schedule, device)
    seconds = measure_steps(arch, removed, budget.schedule, device, bf16, repeats=repeats)
    record = {
        "table": TABLE,
        "run_id": rid,
        "arch": arch,
        "criterion": criterion,
        "seed": first,
        "batch_size": budget.schedule.batch_size,
        "precision": "bfloat16 autocast" if bf16 else "float32",
        "channels_last": budget.schedule.channels_last,
        "compiled": budget.schedule.compile,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "repeats": repeats,
        "step_seconds": {str(p): s for p, s in seconds.items()},
        **provenance_fields(budget.name, budget.description, data.source, command),
    }
    store.save(TABLE, rid, record)
    return record


def _mb(n: float) -> str:
    return f"{n / 2**20:.0f}"


@functools.cache
def flops_saved_by_blocks(arch: str) -> dict[int, tuple[float, float]]:
    """Percent of the dense ``arch``'s FLOPs that removing k blocks saves, for every k up to the number of blocks
    ``policy="paper"`` may remove: (fewest, most) over which blocks, counted by this library (fvcore's convention,
    one 32x32 image). Removing a block removes exactly its own FLOPs, so the extremes are the k cheapest and the k
    dearest blocks."""
    model = getattr(cifar_resnet, arch)()
    x = torch.zeros(1, 3, 32, 32)
    total = count_flops(model, x)
    blocks = sorted(b.flops for b in find_blocks(model, x, policy="paper") if b.removable and b.flops is not None)
    if not total or not blocks:
        raise RuntimeError(f"could not count the FLOPs of {arch}'s removable blocks")  # a CIFAR ResNet has both
    return {k: (100 * sum(blocks[:k]) / total, 100 * sum(blocks[-k:]) / total) for k in range(1, len(blocks) + 1)}


def _percent_span(low: float, high: float) -> str:
    return f"{low:.2f}%" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}–{high:.2f}%"


def flops_check(reference: Reference, trained: list[dict[str, Any]]) -> list[str]:
    """The paper's FLOPs saved against our count for p removed blocks (and, where trained, our tickets' records),
    with the number of blocks each printed value is that of; a sentence for every row that is not its p's."""
    criterion = reference.text(TABLE, "criterion")
    lines = [
        "### The paper's FLOPs saved against a count of ours",
        "",
        "Ours: FLOPs counted by this library (fvcore's convention, one 32x32 image; `residual_prune.find_blocks` with "
        'policy="paper"); removing p blocks saves between the p cheapest and the p dearest removable blocks\' FLOPs. '
        f"Records: the counted FLOPs of our trained {criterion} tickets. A printed value is that of k blocks when it "
        f"lies within {FLOPS_TOLERANCE} pp of our count for k.",
        "",
        f"| arch | p | paper | ours, p blocks removed | ours, records ({criterion}) | the paper's value is that of |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for arch in reference.arches(TABLE):
        counted = flops_saved_by_blocks(arch)
        dense = {
            (r["budget"], r["seed"]): r["flops"] for r in trained if r["arch"] == arch and r["criterion"] == "dense"
        }
        for (_, p), values in reference.of(TABLE, arch).items():
            paper = values.get("flops_saved_percent")
            if paper is None or p is None:
                continue
            matching = [k for k, (lo, hi) in counted.items() if lo - FLOPS_TOLERANCE <= paper <= hi + FLOPS_TOLERANCE]
            records = sorted(
                {
                    f"{100 * (1 - r['flops'] / dense[r['budget'], r['seed']]):.2f}%"
                    for r in trained
                    if (r["arch"], r["criterion"], r["p"]) == (arch, criterion, p) and (r["budget"], r["seed"]) in dense
                }
            )
            ours = _percent_span(*counted[p]) if p in counted else f"more than the {len(counted)} removable blocks"
            that_of = " or ".join(f"{k} block{'s' * (k > 1)}" for k in matching) or "no number of blocks"
            lines.append(f"| {arch} | {p} | {paper:.2f}% | {ours} | {', '.join(records) or 'not run'} | {that_of} |")
            if p not in matching:
                others = "; ".join(f"{k} blocks save {_percent_span(*counted[k])}" for k in matching)
                notes.append(
                    f"The paper's {arch} p={p} row prints {paper:.2f}% FLOPs saved, but removing {p} blocks saves "
                    f"{ours} by our count"
                    + (f" ({others}): the printed value is that of {that_of}." if matching else ".")
                )
    lines.append("")
    if notes:
        lines += [" ".join(notes) + " Which ticket a row's other numbers belong to cannot be told from the table.", ""]
    else:
        lines += ["Every printed value is that of its p.", ""]
    return lines


def _saved(
    paired: list[tuple[dict[str, Any], dict[str, Any]]], get: Callable[[dict[str, Any]], Any]
) -> tuple[float, ...]:
    """Percent of the dense network's ``get`` that each (ticket, dense) pair's ticket saves, where both have it."""
    return tuple(100 * (1 - get(r) / get(d)) for r, d in paired if get(r) is not None and get(d))


def claims(
    reference: Reference,
    arch: str,
    rows: list[dict[str, Any]],
    timing: dict[str, Any] | None,
) -> list[Claim]:
    """The paper's Table 4 for ``arch`` next to ours (``rows``: the Table 2 records of one arch and budget): whether
    the ticket wins (the paper's Table 2 difference where it prints one), then each saving and the speed-up."""
    criterion = reference.text(TABLE, "criterion")
    dense = {r["seed"]: r for r in rows if r["criterion"] == "dense"}
    step = {int(p): s for p, s in (timing or {}).get("step_seconds", {}).items()}
    found = []
    for (_, p), values in reference.of(TABLE, arch).items():
        runs = [r for r in rows if (r["criterion"], r["p"]) == (criterion, p)]
        paired = [(r, dense[r["seed"]]) for r in runs if r["seed"] in dense]
        alone = [(r, d) for r, d in paired if timed_alone(r) and timed_alone(d)]  # for energy and wall-clock
        shared = SHARED_CELL if paired and not alone else ""
        ticket = f"p={p}"
        found.append(
            Claim(
                ticket,
                "accuracy − dense",
                reference.value("table2", arch, criterion, p, "difference"),
                tuple(r["accuracy"] - d["accuracy"] for r, d in paired),
                paper_missing="not printed",
            )
        )
        found.append(
            Claim(
                ticket,
                "FLOPs saved",
                values.get("flops_saved_percent"),
                _saved(paired, lambda r: r["flops"]),
                SAVES,
                "%",
                exact=True,
                tolerance=FLOPS_TOLERANCE,
            )
        )
        found.append(
            Claim(
                ticket,
                "training memory saved",
                values.get("memory_saved_percent"),
                _saved(paired, lambda r: r["training_memory"]["total"]),
                SAVES,
                "%",
                exact=True,
            )
        )
        found.append(
            Claim(
                ticket,
                "CO2 saved",
                values.get("co2_saved_percent"),
                _saved(alone, lambda r: r["emissions_kg"]),
                SAVES,
                "%",
                excluded=shared,
            )
        )
        if p in step and 0 in step:
            speed = Claim(
                ticket,
                "speed-up (side by side)",
                values.get("speedup"),
                (step[0] / step[p],),
                FASTER,
                "x",
                exact=True,
                basis="timed",
            )
        else:
            recorded = tuple(d["train_seconds"] / r["train_seconds"] for r, d in alone)
            speed = Claim(ticket, "speed-up (recorded)", values.get("speedup"), recorded, FASTER, "x", excluded=shared)
        found.append(speed)
    return found


def command(arch: str) -> str:
    return reporting.command(TABLE, arch)


def _section(
    arch: str, budget: str, criterion: str, rows: list[dict[str, Any]], timing: dict[str, Any] | None
) -> tuple[str, ...]:
    """Our numbers of one arch, budget and criterion: per p, params, FLOPs, memory, energy, CO2, speed-ups and
    accuracy against the dense network of the same arch, budget and machine; energy, CO2 and the recorded
    speed-up from the runs timed alone only (a line names the others)."""
    dense = [r for r in rows if r["criterion"] == "dense"]
    d = dense[0]
    dense_alone = [r for r in dense if timed_alone(r)]
    step = {int(p): s for p, s in (timing or {}).get("step_seconds", {}).items()}
    by_p: dict[int, list[dict[str, Any]]] = {0: dense}
    for r in rows:
        if r["criterion"] == criterion:
            by_p.setdefault(r["p"], []).append(r)
    every = [r for runs in by_p.values() for r in runs]
    timed = (
        f"median of {timing['repeats']} interleaved SGD steps per network ({_stepped(timing, every)}) on "
        f"{timing.get('device', 'cpu')}, {timing['threads']} threads (`{timing['command']}`, {timing['date']})"
        if timing
        else f"not timed for {criterion} at this budget (`{command(arch)}` times it)"
    )
    batch = f"{timing['batch_size']} images" if timing else "one training batch of the budget"
    lines = [
        budget_note(
            every,
            arch,
            [r["accuracy"] for r in dense],
            "Parameters, FLOPs and the counted training memory depend on neither the budget nor the device; energy, "
            "CO2 and speed-ups were measured on the device above, so compare their direction with the paper's, not "
            "their size.",
        ),
        "",
        provenance(every),
        "",
        f"Energy and CO2: codecarbon {_codecarbon()} in offline mode for region {d.get('region')}, over the "
        f"training epochs of each run; CPU power {_power(d)}. Training memory: one SGD step on {batch}, counted "
        f"(weights, gradients, momentum, saved activations). Side-by-side speed-up: {timed}. Recorded speed-up: "
        "total training wall-clock of the runs, measured one after the other. Energy, CO2 and the recorded "
        f"speed-up count only runs that had the CPU to themselves: others took at most {SHARED:.0%} of it in every "
        f"epoch (in runs made before that was measured: no epoch took over {SPREAD}x as long as the fastest).",
        "",
        *_shared_note(every),
        "| p | params | FLOPs | FLOPs saved | training memory, MiB | memory saved | energy, Wh | CO2, g | "
        "speed-up (side by side) | speed-up (recorded) | accuracy, % | difference, pp |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    dense_acc = {r["seed"]: r["accuracy"] for r in dense}
    for p, runs in sorted(by_p.items()):
        r, alone = runs[0], [x for x in runs if timed_alone(x)]
        mem = r["training_memory"]["total"]
        energy, co2 = (_mean(alone, key, 1e3) for key in ("energy_kwh", "emissions_kg"))
        recorded = SHARED_CELL
        if alone and dense_alone:
            seconds = [statistics.mean(x["train_seconds"] for x in group) for group in (dense_alone, alone)]
            recorded = f"{seconds[0] / seconds[1]:.2f}x"
        difference = [x["accuracy"] - dense_acc[x["seed"]] for x in runs if x["seed"] in dense_acc]
        side = f"{step[0] / step[p]:.2f}x" if p in step and 0 in step else "not timed"
        lines.append(
            f"| {p} | {r['params'] / 1e3:.0f}K | {r['flops'] / 1e6:.1f}M | {1 - r['flops'] / d['flops']:.1%} | "
            f"{_mb(mem)} | {1 - mem / d['training_memory']['total']:.1%} | "
            f"{energy} | {co2} | {side} | {recorded} | {mean_std([x['accuracy'] for x in runs])} | "
            f"{'' if p == 0 else signed(difference)} |"
        )
    lines.append("")
    return tuple(lines)


def _stepped(timing: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """How a timing's steps computed and whose networks they were; where that is not how ``rows`` trained (the
    budget's memory format and compilation, each run's precision), a clause that says so."""
    schedule = BUDGETS[timing["budget"]].schedule if timing["budget"] in BUDGETS else None
    layout = {True: "channels-last", False: "contiguous"}
    how = [timing["precision"], layout[timing["channels_last"]], "compiled" if timing["compiled"] else "eager"]
    text = f"{', '.join(how)}; seed {timing['seed']}'s networks"
    if schedule is not None:
        ran = sorted({r.get("precision", "float32") for r in rows})  # records made before it said float32
        trained = [*ran, layout[schedule.channels_last], "compiled" if schedule.compile else "eager"]
        if trained != how:
            text += f"; the runs trained {', '.join(trained)}, so this speed-up is of other steps than theirs"
    return text


def _mean(runs: list[dict[str, Any]], key: str, scale: float) -> str:
    """The mean of ``key`` over ``runs`` (those timed alone) times ``scale``, as a cell."""
    if not runs:
        return SHARED_CELL
    if runs[0].get(key) is None:
        return "n/a"
    return f"{statistics.mean(x[key] for x in runs) * scale:.2f}"


def _shared_note(runs: list[dict[str, Any]]) -> list[str]:
    """A paragraph naming the runs whose wall-clock was not their own, left out of energy, CO2 and recorded speed-up."""
    shared = [r for r in runs if not timed_alone(r)]
    if not shared:
        return []
    named = "; ".join(
        f"{'dense' if r['p'] == 0 else 'p=' + str(r['p'])} seed {r['seed']} ({why_shared(r)})"
        for r in sorted(shared, key=lambda r: (r["p"], r["seed"]))
    )
    return [f"Not timed alone, so left out of energy, CO2 and the recorded speed-up: {named}.", ""]


def _by_place(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs grouped by the machine and precision they trained on: energy, CO2 and wall-clock compare within one."""
    places: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        places.setdefault(trained_on(r), []).append(r)
    return dict(sorted(places.items()))


def report(trained: list[dict[str, Any]], timings: list[dict[str, Any]], reference: Reference | None = None) -> str:
    """The Table 4 section: the paper's FLOPs against our count, then per arch and budget the paper's criterion's
    tickets (GraSP; the paper's numbers next to ours with both verdicts) and, where timed, other criteria's, each
    against the dense network of the same arch and budget trained on the same machine in the same precision (a
    section per machine where runs come from several; ``reference``: by default the shipped copy)."""
    reference = reference or load_reference()
    paper = reference.text(TABLE, "criterion")
    timed = {(t["arch"], t["budget"], t["criterion"], hardware(t)): t for t in timings}
    sections = []
    ran: set[str] = set()  # the arches with tickets of the paper's criterion at some budget
    for (arch, budget), setting in by_setting(trained).items():
        places = _by_place(setting)
        for place, rows in places.items():
            dense = [r["accuracy"] for r in rows if r["criterion"] == "dense"]
            if not dense:
                continue
            machine = hardware(rows[0])
            here = {c for a, b, c, m in timed if (a, b, m) == (arch, budget, machine)}
            ours = {r["criterion"] for r in rows} | here
            where = f", trained on {place}" if len(places) > 1 else ""
            for criterion in ([paper] if paper in ours else []) + sorted(here - {paper}):
                timing = timed.get((arch, budget, criterion, machine))
                body = _section(arch, budget, criterion, rows, timing)
                kind = "(the paper's)" if criterion == paper else f"(extra: the paper's Table 4 uses {paper})"
                title = f"{arch}, budget `{budget}`, {criterion} tickets {kind}{where}"
                found: list[Claim] = []
                if criterion == paper:
                    found = claims(reference, arch, rows, timing)
                    ran.add(arch)
                sections.append(Section(title, body, tuple(found), command(arch), convergence(arch, dense)))
    sections += [
        paper_only(arch, claims(reference, arch, [], None), command(arch), f"{paper} tickets")
        for arch in reference.arches(TABLE)
        if arch not in ran
    ]
    return table_text(
        "## Table 4: training cost of tickets vs the dense network",
        [
            f"{reference.text(TABLE, 'what')}. The accuracy rows take the paper's Table 2 difference of the same "
            "ticket where it prints one.",
            "",
        ],
        sections,
        "Table 4",
        after_summary=flops_check(reference, trained),
    )


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
    reference = load_reference()
    parser.add_argument(
        "--criterion",
        default=reference.text(TABLE, "criterion"),
        help="block criterion of the tickets (the paper's Table 4 uses GraSP tickets; snip and others are extras)",
    )
    parser.add_argument(
        "--densities",
        nargs="+",
        type=int,
        help="numbers of blocks removed (default: the paper's Table 4 rows of each arch, "
        + "; ".join(f"{a}: {' '.join(map(str, reference.densities(TABLE, a)))}" for a in reference.arches(TABLE))
        + f"; {' '.join(map(str, DENSITIES))} for another arch)",
    )
    add_run_options(parser, seeds=1)
    args = parser.parse_args(argv)
    store = ResultsStore(args.results)
    if not args.report:
        budget, data = prepare(args)
        for arch in args.arch:
            run_table(
                arch,
                args.criterion,
                args.densities or reference.densities(TABLE, arch) or list(DENSITIES),
                seeds_of(args),
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
