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
from .reporting import by_setting
from .store import ResultsStore

DOC = ROOT / "docs" / "paper_tables.md"
COMMANDS = {
    "table1": "python -m examples.cifar.table1 --arch resnet56 --budget paper",
    "table3": "python -m examples.cifar.table3 --arch resnet32 --budget cpu --data ../shared/data/cifar10_jpeg.npz",
    "table5": "python -m examples.cifar.table5 --arch resnet32 --budget cpu --data ../shared/data/cifar10_jpeg.npz",
    "cka": "python -m examples.cifar.cka --budget cpu --data ../shared/data/cifar10_jpeg.npz",
}
LITERATURE = (
    "## The paper's numbers\n\n"
    "The paper (Jordao, de Araujo, Maia, Pedrini, \"When Layers Play the Lottery, all Tickets Win at "
    "Initialization\") was not available on the machine that generated this page, so its tables are not "
    "reproduced here and no figure of it is typed in from memory. Compare the differences to dense (the signed "
    "points below) with the paper's tables. The paper trains with its full schedule on all 50,000 images "
    "(`--budget paper`); the `cpu` budget below trains much less, so its absolute accuracies are far lower "
    "and only the differences and costs are comparable in kind. For scale, He et al. (2016, Table 6) report "
    "92.49% (ResNet-32) and 93.03% (ResNet-56) for the dense networks with the usual 164-epoch schedule.\n"
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
            means = [statistics.mean(points[p]) for p in ps]
            stds = [statistics.stdev(points[p]) if len(points[p]) > 1 else 0.0 for p in ps]
            ax.errorbar(ps, means, yerr=stds, marker="o", capsize=3, label=criterion)
        ax.set(xlabel="blocks removed (p)", ylabel="accuracy - dense (pp)", title=f"{arch}, budget {budget}")
        ax.set_xticks(sorted({p for c in curves.values() for p in c}))
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / f"table2_{arch}_{budget}.png"))
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


def generate(results: Path = RESULTS, doc: Path = DOC) -> str:
    """Write ``doc`` (and its plots next to it, under ``img/``) from the store; return the text."""
    store = ResultsStore(results)
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
        LITERATURE,
    ]
    parts.append(table1.report(t1) if t1 else _missing("table1"))
    parts += [f"![{path.stem}](img/{path.name})\n" for path in plot_block_scores(t1, img, "table1")]
    parts.append(table2.report(t2) if t2 else _missing("table2"))
    plots = plot_differences(t2, img) + plot_block_scores(t2, img, "table2")
    parts += [f"![{path.stem}](img/{path.name})\n" for path in plots]
    parts.append(cka.report(tc) if tc else _missing("cka"))
    parts.append(table3.report(t2, t3) if t3 else _missing("table3"))
    parts.append(table4.report(t2, t4) if t4 else _missing("table4"))
    parts.append(table5.report(t5) if t5 else _missing("table5"))
    text = "\n".join(parts).rstrip() + "\n"
    doc.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.cifar.paper_tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="results store")
    parser.add_argument("--out", type=Path, default=DOC, help="the Markdown page to write (plots go to img/ beside it)")
    args = parser.parse_args(argv)
    generate(args.results, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
