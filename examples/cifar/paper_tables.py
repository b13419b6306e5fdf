"""Generate ``docs/paper_tables.md`` and its plots from the results store of the table commands.

    python -m examples.cifar.paper_tables            # after any of python -m examples.cifar.table1 ... table5

Every section says which budget, CIFAR-10 copy, command and machine produced its numbers.
Plots (matplotlib): the accuracy difference to dense against the number of removed blocks,
per criterion (Table 2), and the block scores per stage, like the paper's Figure 3.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from . import cka, table1, table2, table3, table4, table5
from .options import RESULTS, ROOT
from .reference import REFERENCE, Reference, load_reference
from .reporting import by_setting
from .store import ResultsStore

DOC = ROOT / "docs" / "paper_tables.md"
COMMANDS = {
    "table1": "python -m examples.cifar.table1 --arch resnet56 --budget paper",
    "table3": "python -m examples.cifar.table3 --arch resnet32 --budget cpu --data ../shared/data/cifar10_jpeg.npz",
    "table5": "python -m examples.cifar.table5 --arch resnet32 --budget cpu --data ../shared/data/cifar10_jpeg.npz",
    "cka": "python -m examples.cifar.cka --budget cpu --data ../shared/data/cifar10_jpeg.npz",
}
HE_ET_AL = (
    "For scale, He et al. (2016, Table 6) report 92.49% (ResNet-32) and 93.03% (ResNet-56) for the dense "
    "networks with the usual 164-epoch schedule."
)


def literature(reference: Reference | None, path: Path) -> str:
    """The section that says where the paper's numbers in the Table 2 and 4 columns come from, or how to add them."""
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    if reference is None:
        shown = (
            'The paper (Jordao, de Araujo, Maia, Pedrini, "When Layers Play the Lottery, all Tickets Win at '
            'Initialization") was not available on the machine that generated this page, so its numbers are not '
            "shown and none is typed in from memory. To show them in a `paper` column of Tables 2 and 4, write them "
            f"with their source into `{where}` (format: `examples/cifar/reference.py`) and rerun this command."
        )
    else:
        shown = (
            f"The `paper` columns of Tables 2 and 4 come from `{where}`, {len(reference.rows)} rows taken from: "
            f"{reference.source}."
        )
    return (
        "## The paper's numbers\n\n" + shown + " The paper trains with its full schedule on all 50,000 images "
        "(`--budget paper`); the `cpu` budget below trains much less, so its absolute accuracies are far lower and "
        "only the differences and costs are comparable in kind. " + HE_ET_AL + "\n"
    )


def _missing(table: str) -> str:
    command = COMMANDS.get(table, f"python -m examples.cifar.{table}")
    title = f"Table {table[-1]}" if table.startswith("table") else table.upper()
    return f"## {title}\n\nNo results in the store yet: run `{command}`.\n"


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


def plot_differences(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Per arch and budget: ticket - dense accuracy (mean, std over seeds) against p, one line per criterion."""
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
            ax.errorbar(ps, means, yerr=stds, marker="o", capsize=3, label=criterion)
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


def generate(results: Path = RESULTS, doc: Path = DOC, reference: Path = REFERENCE) -> str:
    """Write ``doc`` (and its plots next to it, under ``img/``) from the store, with the paper's numbers from
    ``reference`` where that file exists; return the text."""
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
    ]
    parts.append(table1.report(t1) if t1 else _missing("table1"))
    plots = plot_rewinds(t1, img) + plot_block_scores(t1, img, "table1")
    parts += [f"![{path.stem}](img/{path.name})\n" for path in plots]
    parts.append(table2.report(t2, paper) if t2 else _missing("table2"))
    plots = plot_differences(t2, img) + plot_block_scores(t2, img, "table2")
    parts += [f"![{path.stem}](img/{path.name})\n" for path in plots]
    parts.append(cka.report(tc) if tc else _missing("cka"))
    parts.append(table3.report(t2, t3) if t3 else _missing("table3"))
    parts.append(table4.report(t2, t4, paper) if t4 else _missing("table4"))
    parts.append(table5.report(t5) if t5 else _missing("table5"))
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
        help="the paper's numbers (JSON, format in examples/cifar/reference.py); used if it exists",
    )
    args = parser.parse_args(argv)
    generate(args.results, args.out, args.reference)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
