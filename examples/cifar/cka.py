"""How similar the representations of a ticket and the dense network are: linear CKA (Kornblith et al. 2019).

For every trained layer-pruned ticket of Table 2 and the dense network of the same seed: the outputs of the
three stages (``layer1..3``, flattened) and the pooled features (``avgpool``) on the first test images,
compared with :func:`residual_prune.similarity.linear_cka`.
The paper uses CKA to discuss why layer-pruned tickets keep the dense network's accuracy.

    python -m examples.cifar.cka --budget cpu --data ../shared/data/cifar10_jpeg.npz
    python -m examples.cifar.cka --report
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import shell_command
from residual_prune.similarity import linear_cka, representations

from . import table2
from .data import CifarData
from .options import RUNS, add_run_options, parser_for, prepare
from .reporting import by_setting, by_ticket, mean_std, provenance
from .store import ResultsStore, provenance_fields
from .tickets import load_trained

TABLE = "cka"
LAYERS = ["layer1", "layer2", "layer3", "avgpool"]
IMAGES = 1000  # test images the representations are computed on


def features(record: dict[str, Any], data: CifarData, runs: Path, images: int) -> dict[str, torch.Tensor]:
    model = load_trained(record, runs)
    batches = list(itertools.islice(data.test_batches(250), -(-images // 250)))
    return {k: v[:images] for k, v in representations(model, batches, LAYERS).items()}


def run_table(
    budget: str,
    data: CifarData,
    store: ResultsStore,
    *,
    runs: Path = RUNS,
    images: int = IMAGES,
    progress: bool = True,
    command: str = "",
) -> list[dict[str, Any]]:
    """A CKA record for every trained ticket of Table 2 at ``budget`` whose checkpoint is here (filter tickets,
    whose widths differ, are not rebuilt)."""
    trained = [r for r in store.records(table2.TABLE) if r["budget"] == budget]
    dense = {(r["arch"], r["seed"]): r for r in trained if r["criterion"] == "dense"}
    done, cache = [], {}
    for r in trained:
        rid = r["run_id"]
        ref = dense.get((r["arch"], r["seed"]))
        if r["criterion"] == "dense" or ref is None or store.has(TABLE, rid) or not (runs / rid / "last.pt").exists():
            continue
        if progress:
            print(f"[cka] {rid}", flush=True)
        if ref["run_id"] not in cache:
            cache = {ref["run_id"]: features(ref, data, runs, images)}
        base = cache[ref["run_id"]]
        mine = features(r, data, runs, images)
        record = {
            "table": TABLE,
            "run_id": rid,
            "arch": r["arch"],
            "criterion": r["criterion"],
            "p": r["p"],
            "seed": r["seed"],
            "images": images,
            "dense_run": ref["run_id"],
            "cka": {layer: linear_cka(base[layer], mine[layer]) for layer in LAYERS},
            **provenance_fields(budget, r["budget_description"], data.source, command),
        }
        store.save(TABLE, rid, record)
        done.append(record)
    return done


def report(records: list[dict[str, Any]]) -> str:
    """CKA of each ticket with the dense network of its seed, per stage (mean ± std over seeds)."""
    lines = ["## CKA: representations of tickets vs the dense network", ""]
    for (arch, budget), rows in by_setting(records).items():
        lines += [
            f"### {arch}, budget `{budget}`",
            "",
            provenance(rows),
            "",
            f"Linear CKA (Kornblith et al. 2019) between the ticket's and the dense network's outputs of each "
            f"stage (flattened) and of the pooled features, on the first {rows[0]['images']} test images; 1 = the "
            "same representation up to rotation and scale.",
            "",
            "| criterion | p | " + " | ".join(LAYERS) + " | seeds |",
            "|---|---|" + "---|" * (len(LAYERS) + 1),
        ]
        for (criterion, p), runs in by_ticket(rows):
            cells = [mean_std([r["cka"][layer] for r in runs]) for layer in LAYERS]
            lines.append(f"| {criterion} | {p} | " + " | ".join(cells) + f" | {len(runs)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = parser_for("examples.cifar.cka", __doc__)
    parser.add_argument("--images", type=int, default=IMAGES, help="test images the representations use")
    add_run_options(parser, seeds=1)
    args = parser.parse_args(argv)
    store = ResultsStore(args.results)
    if not args.report:
        budget, data = prepare(args)
        run_table(
            budget.name,
            data,
            store,
            runs=args.runs,
            images=args.images,
            progress=not args.quiet,
            command=shell_command("examples.cifar.cka", argv),
        )
    print(report(store.records(TABLE)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
