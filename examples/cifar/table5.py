"""Table 5 of the paper: robustness of the tickets against the dense network, on corrupted images and CIFAR-10.2.

Trains what Table 2 still lacks (same store and checkpoints, resumable), then evaluates every Table 2
network (dense and tickets): clean test accuracy, accuracy on each CIFAR-10-C-style corruption and
severity (generated locally and cached, see :mod:`examples.cifar.robustness` for every deviation from
the published CIFAR-10-C), CIFAR-10.2 accuracy when ``--cifar102`` gives the released
``cifar102_test.npz``, and optionally L-inf PGD accuracy (``--pgd N``, beyond the paper). One record per
network in the store (table ``table5``), skipped when there; a later run with ``--cifar102``/``--pgd``
adds those measurements to the stored records. The tickets are GraSP's by default, with the numbers of
removed blocks of the paper's Table 5 rows for the arch (its Table 4 tickets, ``benchmarks/reference/paper.json``);
``--criteria snip grasp`` adds SNIP tickets, reported as extras.

    python -m examples.cifar.table5 --arch resnet32 --seeds 2 --budget cpu --data ../shared/data/cifar10_jpeg.npz \\
        [--cifar102 PATH] [--limit 1000]
    python -m examples.cifar.table5 --arch resnet32 --criteria snip grasp --densities 1 2 3 4 5 --seeds 2
    python -m examples.cifar.table5 --report        # regenerate the Table 5 section from the store
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import shell_command

from . import distributed, reporting, table2
from .budgets import Budget
from .data import CifarData
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
from .robustness import (
    CACHE,
    CIFAR102_URL,
    CORRUPTIONS,
    DEFAULT_LIMITS,
    SEVERITIES,
    accuracy,
    cifar10c,
    generator_description,
    load_cifar102,
    pgd_accuracy,
)
from .store import ResultsStore, provenance_fields
from .tickets import load_trained, run_id

TABLE = "table5"
DENSITIES = (1, 2, 3, 4, 5)  # numbers of removed blocks for an arch the paper's Table 5 does not have
PGD = {"eps": 8 / 255, "steps": 10, "alpha": 2 / 255}


def run_one(
    source: dict[str, Any],
    data: CifarData,
    *,
    runs: Path,
    corruptions: Sequence[str],
    severities: Sequence[int],
    limit: int | None,
    cache_dir: Path,
    cifar102: tuple[torch.Tensor, torch.Tensor, str] | None,
    pgd: int,
    progress: bool,
    command: str,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The robustness record of the trained network of the Table 2 record ``source``; with ``previous``
    (its stored record) only the CIFAR-10.2 and PGD measurements it lacks are added."""
    start = time.perf_counter()
    model = load_trained(source, runs).to(distributed.device())
    if previous is None:
        images = data.test_x[:limit]
        labels = data.test_y[:limit]
        per: dict[str, dict[str, float]] = {}
        for (c, s), x in cifar10c(data.test_x, corruptions, severities, limit, cache_dir, progress=progress):
            per.setdefault(c, {})[str(s)] = accuracy(model, x, labels)
        values = [a for sev in per.values() for a in sev.values()]
        record = {
            "table": TABLE,
            "run_id": source["run_id"],
            "arch": source["arch"],
            "criterion": source["criterion"],
            "p": source["p"],
            "seed": source["seed"],
            "removed": source["removed"],
            "params": source["params"],
            "table2_accuracy": source["accuracy"],
            "clean_accuracy": accuracy(model, data.test_x, data.test_y),
            "clean_subset_accuracy": accuracy(model, images, labels),
            "corruption_generator": generator_description(),
            "corruption_images": len(labels),
            "corruptions": per,
            "corruption_mean": statistics.mean(values),
            "corruption_by_severity": {str(s): statistics.mean(per[c][str(s)] for c in per) for s in severities},
            "cifar102_accuracy": None,
            "cifar102_source": None,
            "pgd": None,
            **provenance_fields(source["budget"], source["budget_description"], data.source, command),
        }
    else:
        record = dict(previous)
    if cifar102 is not None and record.get("cifar102_accuracy") is None:
        record["cifar102_accuracy"] = accuracy(model, cifar102[0], cifar102[1])
        record["cifar102_source"] = cifar102[2]
    if pgd and record.get("pgd") is None:
        record["pgd"] = {
            **PGD,
            "images": min(pgd, len(data.test_y)),
            "accuracy": pgd_accuracy(model, data.test_x[:pgd], data.test_y[:pgd], **PGD),
        }
    record["eval_seconds"] = record.get("eval_seconds", 0.0) + time.perf_counter() - start
    return record


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
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    limit: int | None = DEFAULT_LIMITS["cpu"],
    cache_dir: Path = CACHE,
    cifar102: str | Path | None = None,
    pgd: int = 0,
    progress: bool = True,
    command: str = "",
) -> list[dict[str, Any]]:
    """Train the missing Table 2 runs, then store the robustness record of every network not measured yet
    (or lacking CIFAR-10.2/PGD that is asked for now); the records written."""
    table2.run_table(
        arch, criteria, densities, seeds, budget, data, store, runs=runs, progress=progress, command=command
    )
    corruptions = list(CORRUPTIONS if corruptions is None else corruptions)
    c102 = None
    if cifar102 is not None:
        x, y = load_cifar102(cifar102)
        name = Path(cifar102).name if Path(cifar102).is_file() else "cifar102_test.npz"
        c102 = (x, y, f"CIFAR-10.2 test set ({name}), {len(y)} images")
    plan = [("dense", 0)] + [(c, p) for c in criteria for p in densities]
    done: list[dict[str, Any]] = []
    for seed in seed_list(seeds):
        for criterion, p in plan:
            rid = run_id(arch, budget.name, criterion, p, seed)
            previous = store.get(TABLE, rid) if store.has(TABLE, rid) else None
            if (
                previous is not None
                and not (c102 is not None and previous.get("cifar102_accuracy") is None)
                and not (pgd and previous.get("pgd") is None)
            ):
                continue
            if progress:
                print(f"[table5] {rid}", flush=True)
            source = store.get(table2.TABLE, rid)
            record = run_one(
                source,
                data,
                runs=runs,
                corruptions=corruptions,
                severities=severities,
                limit=limit,
                cache_dir=cache_dir,
                cifar102=c102,
                pgd=pgd,
                progress=progress,
                command=command,
                previous=previous,
            )
            store.save(TABLE, rid, record)
            done.append(record)
    return done


def _cell(runs: list[dict[str, Any]], dense: dict[int, dict[str, Any]], get: Any, criterion: str) -> list[str]:
    """``[value, difference to dense]`` cells of one measurement over the seeds (``n/a`` where unmeasured)."""
    values = {r["seed"]: get(r) for r in runs if get(r) is not None}
    if not values:
        return ["not measured", ""]
    diffs = [v - get(dense[s]) for s, v in values.items() if s in dense and get(dense[s]) is not None]
    return [mean_std(list(values.values())), "" if criterion == "dense" else signed(diffs)]


MEASURES = {
    "cifar10c": ("CIFAR-10-C − dense", "corruption_mean"),
    "cifar102": ("CIFAR-10.2 − dense", "cifar102_accuracy"),
}
"""The paper's Table 5 columns: our measure's name and the record field it compares."""


def differences(rows: list[dict[str, Any]], field: str) -> dict[tuple[str, int], list[float]]:
    """Ticket - dense accuracy in points of one record ``field`` per (criterion, p), one value per seed measured."""
    dense = {r["seed"]: r.get(field) for r in rows if r["criterion"] == "dense"}
    return {
        ticket: [
            r[field] - dense[r["seed"]] for r in runs if r.get(field) is not None and dense.get(r["seed"]) is not None
        ]
        for ticket, runs in by_ticket(rows)
    }


def claims(reference: Reference, arch: str, rows: list[dict[str, Any]]) -> list[Claim]:
    """The paper's Table 5 for ``arch`` (its Table 4 tickets) next to ours, each column against dense."""
    found = []
    for (criterion, p), values in reference.of(TABLE, arch).items():
        for name, paper in values.items():
            measure, field = MEASURES[name]
            ours = differences(rows, field).get((criterion, p), []) if p is not None else []
            missing = "not measured (`--cifar102 PATH`)" if name == "cifar102" and rows else "not run"
            found.append(Claim(f"{criterion} p={p}", measure, paper, tuple(ours), missing=missing))
    return found


def command(arch: str) -> str:
    return reporting.command(TABLE, arch, "--cifar102 PATH")


def _ordered(rows: list[dict[str, Any]], paper: str) -> list[tuple[tuple[str, int], list[dict[str, Any]]]]:
    """Dense, then the paper's criterion's tickets, then the others' (extras)."""
    return sorted(by_ticket(rows), key=lambda kv: (kv[0][0] != "dense", kv[0][0] != paper, kv[0]))


def report(records: list[dict[str, Any]], reference: Reference | None = None) -> str:
    """The Table 5 section: clean, CIFAR-10-C-style, CIFAR-10.2 (and PGD) accuracy per criterion and p, each
    with the difference to dense in points, the paper's criterion (GraSP) first and the others marked as extras,
    then the paper's numbers (``reference``, by default the shipped copy) next to ours with both verdicts."""
    reference = reference or load_reference()
    paper = reference.text("table4", "criterion")
    sections = []
    for (arch, budget), rows in by_setting(records).items():
        dense = {r["seed"]: r for r in rows if r["criterion"] == "dense"}
        ordered = _ordered(rows, paper)
        label = {c: c if c in ("dense", paper) else f"{c} (extra)" for (c, _), _ in ordered}
        images = sorted({r["corruption_images"] for r in rows})
        names = sorted({c for r in rows for c in r["corruptions"]}, key=CORRUPTIONS.index)
        severities = sorted({int(s) for r in rows for s in r["corruption_by_severity"]})
        c102 = sorted({r["cifar102_source"] for r in rows if r.get("cifar102_source")})
        has_pgd = any(r.get("pgd") for r in rows)
        lines = [
            budget_note(
                rows,
                arch,
                [r["clean_accuracy"] for r in dense.values()],
                "The corruptions are regenerated here, not the published CIFAR-10-C images, so compare the "
                "direction of the differences with the paper's, not their size.",
            ),
            "",
            provenance(rows),
            "",
            f"Corruptions: {rows[0]['corruption_generator']}; {', '.join(map(str, images))} test images per "
            f"corruption and severity; {len(names)} corruptions ({', '.join(names)}) at severities "
            f"{', '.join(map(str, severities))}; CIFAR-10-C accuracy = mean over all of them. Not the published "
            "CIFAR-10-C images (ImageNet-C constants, so stronger per-pixel corruptions than CIFAR-10-C's; glass "
            "blur at 32x32, harsher): `examples/cifar/robustness.py` lists every deviation; compare tickets with "
            "dense here, not with published numbers.",
            "",
            f"CIFAR-10.2: {'; '.join(c102)}."
            if c102
            else f"CIFAR-10.2: not measured (pass `--cifar102 PATH` to `cifar102_test.npz` from {CIFAR102_URL}).",
            "",
            "Clean = the whole test split. Difference = ticket - dense in percentage points, per seed, then "
            f"mean ± std over seeds. Main rows: {paper} tickets, as the paper's Table 5 (its Table 4 tickets); rows "
            "marked (extra) use another criterion, beyond the paper.",
            "",
        ]
        header = ["criterion", "p", "clean, %", "Δ, pp", "CIFAR-10-C, %", "Δ, pp", "CIFAR-10.2, %", "Δ, pp"]
        pgd_note = ""
        if has_pgd:
            spec = next(r["pgd"] for r in rows if r.get("pgd"))
            header += ["PGD, %", "Δ, pp"]
            pgd_note = (
                f"PGD (beyond the paper): L-inf, eps {spec['eps'] * 255:.0f}/255, {spec['steps']} steps of "
                f"{spec['alpha'] * 255:.0f}/255, random start, on the first {spec['images']} test images."
            )
        header.append("seeds")
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for (criterion, p), runs in ordered:
            cells = [label[criterion], str(p)]
            cells += _cell(runs, dense, lambda r: r["clean_accuracy"], criterion)
            cells += _cell(runs, dense, lambda r: r["corruption_mean"], criterion)
            cells += _cell(runs, dense, lambda r: r.get("cifar102_accuracy"), criterion)
            if has_pgd:
                cells += _cell(runs, dense, lambda r: (r.get("pgd") or {}).get("accuracy"), criterion)
            lines.append("| " + " | ".join(cells + [str(len(runs))]) + " |")
        if pgd_note:
            lines += ["", pgd_note]
        lines += [
            "",
            "CIFAR-10-C-style accuracy per severity (mean over the corruptions), %; difference to dense "
            "in points in brackets:",
            "",
            "| criterion | p | " + " | ".join(f"severity {s}" for s in severities) + " |",
            "|---|---|" + "---|" * len(severities),
        ]
        for (criterion, p), runs in ordered:
            cells = [label[criterion], str(p)]
            for s in severities:
                value, diff = _cell(runs, dense, lambda r, s=s: r["corruption_by_severity"].get(str(s)), criterion)
                cells.append(f"{value} ({diff})" if diff else value)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        sections.append(
            Section(
                f"{arch}, budget `{budget}`",
                tuple(lines),
                tuple(claims(reference, arch, rows)),
                command(arch),
                convergence(arch, [r["clean_accuracy"] for r in dense.values()]),
            )
        )
    ran = {arch for arch, _ in by_setting(records)}
    sections += [
        paper_only(arch, claims(reference, arch, []), command(arch))
        for arch in reference.arches(TABLE)
        if arch not in ran
    ]
    intro = [f"{reference.text(TABLE, 'what')}; the paper's tickets are its Table 4's ({paper}).", ""]
    return table_text("## Table 5: robustness", intro, sections, "Table 5")


def main(argv: list[str] | None = None) -> int:
    parser = parser_for("examples.cifar.table5", __doc__)
    reference = load_reference()
    add_ticket_options(parser, criteria=(reference.text("table4", "criterion"),))
    parser.set_defaults(densities=None)  # the paper's Table 5 rows of the arch, below
    add_run_options(parser)
    parser.add_argument(
        "--corruptions",
        nargs="+",
        default=CORRUPTIONS,
        choices=CORRUPTIONS,
        metavar="NAME",
        help="CIFAR-10-C corruptions (default: all 15)",
    )
    parser.add_argument("--severities", nargs="+", type=int, default=SEVERITIES, choices=SEVERITIES)
    parser.add_argument(
        "--limit",
        type=int,
        help="test images per corruption and severity (default: "
        + ", ".join(f"{k} {v or 'all'}" for k, v in DEFAULT_LIMITS.items())
        + ")",
    )
    parser.add_argument("--cache", type=Path, default=CACHE, help="generated corruption sets")
    parser.add_argument("--cifar102", help=f"cifar102_test.npz or its folder ({CIFAR102_URL}); default: not measured")
    parser.add_argument(
        "--pgd",
        type=int,
        default=0,
        metavar="N",
        help="also measure L-inf PGD accuracy (eps 8/255, 10 steps) on N test images; 0: off",
    )
    args = parser.parse_args(argv)
    store = ResultsStore(args.results)
    if not args.report:
        budget, data = prepare(args)
        limit = args.limit if args.limit is not None else DEFAULT_LIMITS.get(args.budget, DEFAULT_LIMITS["cpu"])
        run_table(
            args.arch,
            args.criteria,
            args.densities or reference.densities(TABLE, args.arch) or list(DENSITIES),
            seeds_of(args),
            budget,
            data,
            store,
            runs=args.runs,
            corruptions=args.corruptions,
            severities=args.severities,
            limit=limit,
            cache_dir=args.cache,
            cifar102=args.cifar102,
            pgd=args.pgd,
            progress=not args.quiet,
            command=shell_command("examples.cifar.table5", argv),
        )
    print(report(store.records(TABLE)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
