"""Generate ``docs/llm_depth.md`` and its plot from the records of ``python -m examples.llm_depth.run``.

    python -m examples.llm_depth.report

Every section says which budget, corpus, command and machine produced its numbers; with no records, the page
says how to produce them.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from examples.cifar.paper_tables import _pyplot, _save
from examples.cifar.reporting import provenance
from examples.cifar.store import ResultsStore

from .budgets import RESULTS, ROOT

__all__ = ["generate", "perplexity_section", "plot_perplexity", "speed_section"]

DOC = ROOT / "docs" / "llm_depth.md"
RUN = "python -m examples.llm_depth.run --budget cpu"
REPORT = "python -m examples.llm_depth.report"
ORDER = ("dense", "block_influence", "angular_distance", "loss_drop", "random", "drop_last", "finercut")


def _by_budget(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["budget"], []).append(r)
    return dict(sorted(groups.items()))


def _rank(criterion: str) -> tuple[int, str]:
    return (ORDER.index(criterion) if criterion in ORDER else len(ORDER), criterion)


def pairs(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """The (before, after fine-tuning) records of each model: dense first, then by ratio and criterion."""
    cells: dict[tuple[float, tuple[int, str]], list[dict[str, Any] | None]] = {}
    for r in rows:
        cells.setdefault((r["ratio"], _rank(r["criterion"])), [None, None])[int(r["finetuned"])] = r
    return [(before, after) for _, (before, after) in sorted(cells.items())]


def _ppl(record: dict[str, Any] | None) -> str:
    if record is None:
        return "n/a"
    return f"{record['perplexity']:.3f} ({record['perplexity'] / record['dense_perplexity']:.2f}×)"


def _setup(r: dict[str, Any]) -> str:
    m, training, corpus, ft = r["model"], r["training"], r["corpus"], r["finetune_schedule"]
    loss = f", final training loss {training['loss']:.3f}" if training.get("loss") is not None else ""
    return (
        f"Model: `LlamaForCausalLM`, {m['layers']} layers, width {m['hidden']}, {m['heads']} heads, MLP "
        f"{m['intermediate']}, {r['dense_params'] / 1e6:.2f}M parameters, byte tokens (vocabulary 257), trained "
        f"{training['steps']} steps of {training['schedule']['batch_size']} x {m['seq_len']} tokens "
        f"({training['train_seconds'] / 60:.0f} min{loss}). Corpus: {corpus['train_files']} training files "
        f"({corpus['train_tokens']:,} tokens) and {corpus['held_out_files']} held-out files "
        f"({corpus['held_out_tokens']:,} tokens) of the Python {corpus['python']} standard library, split by "
        f"file: {corpus['split_rule']}. Perplexity: exp of the mean next-token loss over {r['held_out_windows']} "
        f"windows of {m['seq_len']} tokens spread over the held-out files. Fine-tuning: {ft['steps']} AdamW "
        f"steps at lr {ft['lr']:g}, the same batches for every model; the dense row's fine-tuned column is the "
        "control (the dense model given the same extra steps)."
    )


def perplexity_section(records: list[dict[str, Any]]) -> str:
    """The held-out perplexity of the dense model and of every pruned one, before and after fine-tuning."""
    lines = ["## Held-out perplexity", ""]
    if not records:
        return "\n".join([*lines, f"Not yet measured: run `{RUN}`.", ""])
    for budget, rows in _by_budget(records).items():
        lines += [f"### Budget `{budget}`", "", provenance(rows), "", _setup(rows[0]), ""]
        lines += [
            "Perplexity (× the dense model's) with no fine-tuning and after the short fine-tuning.",
            "",
            "| criterion | removed | which (0 = first layer; #0 attention, #1 MLP) | params | perplexity | "
            "after fine-tuning |",
            "|---|---|---|---|---|---|",
        ]
        for before, after in pairs(rows):
            r = before or after
            assert r is not None
            which = ", ".join(map(str, r["removed_indices"])) or "–"
            sublayers = r.get("removed_sublayers", 0)
            removed = (
                f"{sublayers} of {2 * r['layers']} sub-layers"
                if sublayers
                else f"{r['removed_layers']} of {r['layers']}"
            )
            lines.append(
                f"| {r['criterion']} | {removed} ({100 * r['ratio']:.0f}%) | {which} | "
                f"{r['params'] / 1e6:.2f}M | {_ppl(before)} | {_ppl(after)} |"
            )
        lines.append("")
    return "\n".join(lines)


def speed_section(records: list[dict[str, Any]]) -> str:
    """Decode latency and throughput of each pruned depth against the dense model, measured side by side."""
    lines = ["## Decode speed", ""]
    if not records:
        return "\n".join([*lines, f"Not yet measured: run `{RUN}`.", ""])
    for budget, rows in _by_budget(records).items():
        r = rows[0]
        lines += [
            f"### Budget `{budget}`",
            "",
            provenance(rows),
            "",
            f"Greedy `generate` of {r['new_tokens']} tokens after a {r['prompt_tokens']}-token prompt, batch 1, "
            f"key/value cache on, {r['threads']} threads; per model the median of {r['repeats']} runs after a "
            "warm-up, the dense and the pruned model taking turns in one process; the pruned model is the first "
            "criterion's at that depth (which layers are gone does not change the cost). The speed-up approaches the "
            "layer ratio only as far as the layers dominate the cost: the embedding, the output layer and the "
            "per-token work of `generate` do not shrink.",
            "",
            "| layers kept | dense ms/token | pruned ms/token | dense tokens/s | pruned tokens/s | speed-up | "
            "layer ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sorted(rows, key=lambda r: r["ratio"]):
            dense, pruned = r["dense"], r["pruned"]
            lines.append(
                f"| {r['kept_layers']} of {r['layers']} | {dense['ms_per_token']:.2f} | {pruned['ms_per_token']:.2f} "
                f"| {dense['tokens_per_second']:.0f} | {pruned['tokens_per_second']:.0f} | {r['speedup']:.2f}× | "
                f"{r['layer_ratio']:.2f}× |"
            )
        lines.append("")
    return "\n".join(lines)


def _plain_numbers(ax: Any) -> None:
    """Label a log axis with plain numbers (minor ticks too, when it spans less than a decade)."""
    from matplotlib import ticker

    low, high = ax.get_ylim()
    plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain if high < 10 * low else ticker.NullFormatter())


def plot_perplexity(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Per budget: held-out perplexity against the layers removed, one line per criterion (from the dense model at
    0), without and with fine-tuning side by side."""
    plt = _pyplot()
    paths = []
    for budget, rows in _by_budget(records).items():
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
        for ax, finetuned in zip(axes, (False, True)):
            shown = [r for r in rows if r["finetuned"] == finetuned]
            dense = [r for r in shown if r["criterion"] == "dense"]
            curves: dict[str, list[tuple[int, float]]] = {}
            for r in shown:
                if r["criterion"] != "dense":
                    curves.setdefault(r["criterion"], []).append((r["removed_layers"], r["perplexity"]))
            for criterion in sorted(curves, key=_rank):
                points = sorted(curves[criterion] + [(0, dense[0]["perplexity"])] * bool(dense))
                ax.plot(*zip(*points), marker="o", label=criterion)
            if dense:
                label = "dense, fine-tuned the same" if finetuned else "dense"
                ax.axhline(dense[0]["perplexity"], color="grey", lw=0.8, ls="--", label=label)
            ax.set_yscale("log")
            ax.set_xticks(sorted({r["removed_layers"] for r in rows}))
            ax.set(
                xlabel=f"layers removed (of {rows[0]['layers']})",
                title="after fine-tuning" if finetuned else "no fine-tuning",
            )
        axes[0].set_ylabel("held-out perplexity")
        _plain_numbers(axes[0])
        axes[1].legend(fontsize=7)
        fig.suptitle(f"small Llama on the Python standard library, budget {budget}", fontsize=9)
        paths.append(_save(fig, out / f"llm_depth_perplexity_{budget}.png"))
    return paths


def generate(results: Path = RESULTS, doc: Path = DOC) -> str:
    """Write ``doc`` (and its plot under ``img/`` beside it) from the store; return the text."""
    store = ResultsStore(results)
    ppl, speed = store.records("perplexity"), store.records("speed")
    where = results.relative_to(ROOT) if results.is_relative_to(ROOT) else results
    parts = [
        "# Layer pruning of a small Llama",
        "",
        f"Generated by `{REPORT}` from the JSON records in `{where}`; do not edit by hand.",
        "",
        "A Llama-architecture model of a few million parameters is trained on the Python standard library's own "
        "source (byte tokens, split into training and held-out files), then 25% and 50% of its layers are removed "
        "with each criterion (`block_influence`, `angular_distance`, `loss_drop`, `random`, and `drop_last`: the "
        "last layers) through `residual_prune.plan_pruning` and `apply_plan`; `finercut` removes as many residual "
        'branches, attention and MLP sub-layers apart (`loss_drop` with `granularity="sublayer"`, as FinerCut '
        "does), so its model keeps every layer. Reported: the held-out perplexity "
        "with no fine-tuning and after a short fine-tuning, and the decode speed of the pruned against the dense "
        "model.",
        "",
        "To measure (about 25 minutes on a 2-core CPU; resumable: run it again after an interruption), then to "
        f"regenerate this page:\n\n"
        f"```\n{RUN}\n{REPORT}\n```",
        "",
    ]
    if not ppl and not speed:
        parts += ["Results: not yet measured.", ""]
    else:
        img = doc.parent / "img"
        img.mkdir(parents=True, exist_ok=True)
        parts.append(perplexity_section(ppl))
        parts += [f"![{path.stem}](img/{path.name})\n" for path in plot_perplexity(ppl, img)]
        parts.append(speed_section(speed))
    text = "\n".join(parts).rstrip() + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.llm_depth.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="results store")
    parser.add_argument(
        "--out", type=Path, default=DOC, help="the Markdown page to write (the plot goes to img/ beside it)"
    )
    args = parser.parse_args(argv)
    generate(args.results, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
