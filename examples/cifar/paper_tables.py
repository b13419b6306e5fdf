"""Generate ``docs/paper_tables.md`` and its plots from the results store of the table commands.

    python -m examples.cifar.paper_tables            # after any of python -m examples.cifar.table1 ... table5

Every section says which budget, CIFAR-10 copy, command and machine produced its numbers, and shows the paper's
numbers (``benchmarks/reference/paper.json``) next to ours with a verdict for each and a generated summary.
Plots (matplotlib): the accuracy difference to dense against the number of removed blocks,
per criterion (Table 2), and the block scores per stage, like the paper's Figure 3.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
from pathlib import Path
from typing import Any

from . import cka, table1, table2, table3, table4, table5
from .budgets import BUDGETS
from .options import RESULTS, ROOT
from .reference import REFERENCE, Reference, load_reference
from .reporting import by_setting, trained_on
from .store import ResultsStore

DOC = ROOT / "docs" / "paper_tables.md"
CKA_COMMAND = "python -m examples.cifar.cka --budget BUDGET"
HE_ET_AL = (
    "For scale, He et al. (2016, Table 6) report 92.49% (ResNet-32) and 93.03% (ResNet-56) for the dense "
    "networks with the usual 164-epoch schedule."
)


def literature(reference: Reference, path: Path) -> str:
    """The section that says where the paper's numbers come from, how the verdicts are read, what the paper leaves
    unstated, and what a budget is."""
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    unstated = [
        ("Table 1's p", reference.text("table1", "p")),
        ("the training schedule", reference.text("setup_facts", "training_schedule")),
        ("absolute accuracies", reference.text("conventions", "absolute_accuracy")),
    ]
    return "\n".join(
        [
            "## The paper's numbers",
            "",
            f"Every table below shows the paper's numbers next to ours. They ship with the project in `{where}` "
            f"({len(reference.rows)} rows), copied from: {reference.source}. "
            f"Headline claims: {reference.text('setup_facts', 'headline')}.",
            "",
            "How a number becomes a verdict: a ticket *wins* when its accuracy is at least the dense network's "
            "(difference ≥ 0 pp; a printed 0.00 wins), it *saves* when its cost is below the dense network's, it is "
            "*faster* when its speed-up is at least 1. Our verdict comes from our seeds: decided when the mean lies "
            "further from that threshold than the seed spread (one standard deviation over seeds), *undecided* when "
            "it does not and with one seed (no spread to judge by); counted quantities (FLOPs, parameters, memory) "
            "and the side-by-side speed-up (the median of interleaved steps, *timed* in the seeds column) decide "
            f"from their value, and FLOPs saved must match the paper's within {table4.FLOPS_TOLERANCE} pp. "
            "A claim is *reproduced* when both verdicts agree, *contradicted* when they differ, *undecided* when "
            "ours is, *not run* when we have no record for it.",
            "",
            "What the paper leaves unstated, and nothing here fills in: "
            + "; ".join(f"{name}: {text}" for name, text in unstated if text)
            + ". The `paper` budget is a stand-in for its schedule (He et al.'s), labelled as such.",
            "",
            "Every section names the budget and the device its records came from and what that budget can and "
            "cannot show; records of different budgets are never mixed: each budget is a section of its own. "
            f"BUDGET in the commands: one of {', '.join(f'`{b}`' for b in sorted(BUDGETS))} "
            "(`examples/cifar/budgets.py`). " + HE_ET_AL,
            "",
        ]
    )


def cka_section(records: list[dict[str, Any]], reference: Reference) -> str:
    """The CKA section (no table of the paper: its Section 4 text, quoted)."""
    text = cka.report(records) if records else f"## CKA\n\nNo results in the store yet: run `{CKA_COMMAND}`.\n"
    return text.rstrip() + f"\n\nThe paper (Section 4, no table): {reference.text('table2', 'cka_text')}.\n"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def _over_seeds(groups: list[list[float]]) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of each group of per-seed values (std 0 for one seed): bar heights and errors."""
    return ([statistics.mean(g) for g in groups], [statistics.stdev(g) if len(g) > 1 else 0.0 for g in groups])


def paper_differences(reference: Reference, arch: str, criterion: str) -> dict[int, float]:
    """The paper's Table 2 differences to dense of ``arch``'s ``criterion`` tickets, by p (empty where none)."""
    rows = reference.of(table2.TABLE, arch)
    return {p: v["difference"] for (c, p), v in rows.items() if c == criterion and p is not None and "difference" in v}


def plot_differences(records: list[dict[str, Any]], out: Path, reference: Reference) -> list[Path]:
    """Per arch and budget: ticket - dense accuracy (mean, std over seeds) against p, one line per criterion, and
    the paper's Table 2 numbers of the same criterion and arch beside it (dashed, hollow markers)."""
    plt = _pyplot()
    paths = []
    for (arch, budget), rows in by_setting(records).items():
        dense = {r["seed"]: r["accuracy"] for r in rows if r["criterion"] == "dense"}
        curves: dict[str, dict[int, list[float]]] = {}
        for r in rows:
            if r["criterion"] != "dense" and r["seed"] in dense:
                curves.setdefault(r["criterion"], {}).setdefault(r["p"], []).append(r["accuracy"] - dense[r["seed"]])
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.axhline(0, color="grey", lw=0.8, ls="--", label="dense")
        for criterion, points in sorted(curves.items()):
            ps = sorted(points)
            means, stds = _over_seeds([points[p] for p in ps])
            line = ax.errorbar(ps, means, yerr=stds, marker="o", capsize=3, label=f"{criterion}, ours")
            paper = paper_differences(reference, arch, criterion)
            if paper:
                colour = line.lines[0].get_color()
                ax.plot(
                    sorted(paper),
                    [paper[p] for p in sorted(paper)],
                    ls="--",
                    marker="o",
                    mfc="none",
                    color=colour,
                    label=f"{criterion}, paper",
                )
        ax.set(xlabel="blocks removed (p)", ylabel="accuracy - dense (pp)", title=f"{arch}, budget {budget}")
        ax.set_xticks(sorted({p for c in curves.values() for p in c}))
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / f"table2_{arch}_{budget}.png"))
    return paths


def plot_rewinds(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Table 1, per arch, budget and p: ticket - dense accuracy (mean, std over seeds) at each rewind point and for
    re-init, one bar per criterion."""
    plt = _pyplot()
    paths = []
    for (arch, budget), rows in by_setting(records).items():
        by_ticket = table1.differences(rows)
        for p in sorted({p for _, p in by_ticket}):
            cells = {criterion: d for (criterion, q), d in by_ticket.items() if q == p}
            variants = table1.variants(r for r in rows if r["p"] == p)
            width = 0.8 / len(cells)
            fig, ax = plt.subplots(figsize=(6, 3.4))
            ax.axhline(0, color="grey", lw=0.8, ls="--")
            for i, (criterion, by_variant) in enumerate(cells.items()):
                xs = [j + (i - (len(cells) - 1) / 2) * width for j, v in enumerate(variants) if v in by_variant]
                diffs = [by_variant[v] for v in variants if v in by_variant]
                means, stds = _over_seeds(diffs)
                ax.bar(xs, means, width, yerr=stds, capsize=2, label=criterion)
            ax.set_xticks(range(len(variants)), [table1.variant_name(v) for v in variants])
            ax.set(ylabel="accuracy - dense (pp)", title=f"Table 1: {arch}, p = {p}, budget {budget}")
            ax.legend(fontsize=7, ncol=3)
            paths.append(_save(fig, out / f"table1_{arch}_p{p}_{budget}.png"))
    return paths


def plot_block_scores(records: list[dict[str, Any]], out: Path, name: str) -> list[Path]:
    """Per arch and budget: every criterion's block scores (seed 0, scaled to [0, 1]) along the depth, stages
    marked (the paper's Figure 3)."""
    plt = _pyplot()
    paths = []
    for (arch, budget), rows in by_setting(records).items():
        scores = {r["criterion"]: r["scores"] for r in rows if r.get("scores") and r["seed"] == 0}
        if not scores:
            continue
        fig, ax = plt.subplots(figsize=(7, 3.4))
        for criterion, s in sorted(scores.items()):
            blocks = list(s)
            values = [s[b] for b in blocks]
            low, high = min(values), max(values)
            ax.plot(range(len(blocks)), [(v - low) / ((high - low) or 1) for v in values], marker=".", label=criterion)
        stages = [b.split(".")[0] for b in blocks]
        for i in range(1, len(stages)):
            if stages[i] != stages[i - 1]:
                ax.axvline(i - 0.5, color="grey", lw=0.8, ls=":")
        ax.set_xticks(range(len(blocks)), blocks, rotation=90, fontsize=6)
        ax.set(ylabel="importance (min-max scaled)", title=f"scores of the removable blocks, {arch}, budget {budget}")
        ax.legend(fontsize=7)
        paths.append(_save(fig, out / f"{name}_scores_{arch}_{budget}.png"))
    return paths


CPU_FULL = {  # the cpu-full runs of Table 2 (3 seeds) and Table 4 (GraSP at the paper's densities), in this order
    "table2": "python -m examples.cifar.table2 --arch resnet32 --criteria snip grasp --densities 1 2 3 4 5 --seeds 3 "
    "--budget cpu-full --data ../shared/data/cifar10_jpeg.npz",
    "table4": "python -m examples.cifar.table4 --arch resnet32 resnet56 --budget cpu-full "
    "--data ../shared/data/cifar10_jpeg.npz",
}
GPU = "python -m examples.cifar.gpu_run --data data/cifar10_jpeg.npz"


def budgets_section(records: list[dict[str, Any]], results: Path) -> str:
    """What each budget is, and where its runs stand: the records of each, the GPU command's measured wall-clock."""
    lines = ["## Budgets", ""]
    counts = collections.Counter((r["budget"], trained_on(r)) for r in records)
    for name, budget in BUDGETS.items():
        if name == "smoke":
            continue
        where = {place: n for (b, place), n in counts.items() if b == name}
        places = f" ({'; '.join(f'{n} on {place}' for place, n in sorted(where.items()))})" if where else ""
        lines.append(f"- `{name}`: {budget.description}. Table 2 records: {sum(where.values())}{places}.")
    gpu = results / "gpu_run-gpu.json"
    if gpu.exists():
        run = json.loads(gpu.read_text())
        lines.append(
            f"- The GPU command `{GPU}` trained {run['runs']} networks in {run['train_seconds'] / 60:.1f} minutes "
            f"({run['total_seconds'] / 60:.1f} with the step timings) on {run['device']} with {run['workers']} "
            f"processes, torch {run['torch']}."
        )
    else:
        lines.append(
            f"- The GPU command `{GPU}` (Table 2 for ResNet-32, one seed, and the Table 4 rows of ResNet-32 and "
            "ResNet-56, several runs at once on one GPU; target: at most 8 minutes on one H100, dense ResNet-32 at "
            "92.0% or more) is tested at smoke size on the CPU; its runtime and accuracy on an H100 are not yet "
            "measured (no GPU was available)."
        )
    lines += [
        f"- `cpu-full` runs, in the background and resumable: `{CPU_FULL['table2']}`, then `{CPU_FULL['table4']}`. "
        "Costs compare only within one machine: another machine adds `--first-seed K` to train seeds K, K+1, ... "
        "with a dense run of its own, and Table 4 times those networks there.",
        "",
    ]
    return "\n".join(lines)


def generate(results: Path = RESULTS, doc: Path = DOC, reference: Path = REFERENCE) -> str:
    """Write ``doc`` (and its plots next to it, under ``img/``) from the store, with the paper's numbers from
    ``reference`` (by default the copy shipped with the project) next to ours; return the text."""
    store = ResultsStore(results)
    paper = load_reference(reference)
    t1, t2, t3, t4, t5, tc = (store.records(t) for t in ("table1", "table2", "table3", "table4", "table5", "cka"))
    img = doc.parent / "img"
    img.mkdir(parents=True, exist_ok=True)
    parts = [
        "# The paper's CIFAR-10 tables, reproduced",
        "",
        "Generated by `python -m examples.cifar.paper_tables` from the JSON records in "
        f"`{results.relative_to(ROOT) if results.is_relative_to(ROOT) else results}`; do not edit by hand. Each "
        "table was made by the command it names, on the machine and with the budget and data copy it names.",
        "",
        literature(paper, reference),
        budgets_section(t2, results),
    ]
    parts.append(table1.report(t1, paper))
    plots = plot_rewinds(t1, img) + plot_block_scores(t1, img, "table1")
    parts += [f"![{path.stem}](img/{path.name})\n" for path in plots]
    parts.append(table2.report(t2, paper))
    plots = plot_differences(t2, img, paper) + plot_block_scores(t2, img, "table2")
    parts += [f"![{path.stem}](img/{path.name})\n" for path in plots]
    parts.append(cka_section(tc, paper))
    parts.append(table3.report(t2, t3, paper))
    parts.append(table4.report(t2, t4, paper))
    parts.append(table5.report(t5, paper))
    text = "\n".join(parts).rstrip() + "\n"
    doc.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.cifar.paper_tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="results store")
    parser.add_argument("--out", type=Path, default=DOC, help="the Markdown page to write (plots go to img/ beside it)")
    parser.add_argument(
        "--reference",
        type=Path,
        default=REFERENCE,
        help="the paper's numbers (JSON, format in examples/cifar/reference.py)",
    )
    args = parser.parse_args(argv)
    generate(args.results, args.out, args.reference)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
