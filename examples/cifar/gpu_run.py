"""One command for one GPU: Table 2 (ResNet-32: dense, SNIP and GraSP tickets at p = 1..5, one seed) and the
Table 4 cost rows (GraSP tickets at the paper's densities, ResNet-32 and ResNet-56), several runs at once.

    python -m examples.cifar.gpu_run --data data/cifar10_jpeg.npz              # an H100: see docs/paper_tables.md
    python -m examples.cifar.gpu_run --budget smoke --workers 2 --data ... --results /tmp/r   # a pipeline check

A ResNet-32 fills a fraction of an H100, so ``--workers`` processes train at once on the one
GPU, each taking the next run from a shared queue (largest first); every process keeps the
whole data set and its augmentation on the GPU (:meth:`.data.CifarData.to`), and the ``gpu``
budget trains in bfloat16 autocast, channels-last, compiled. Runs already in the results store
are skipped; an interrupted run resumes from its last epoch. When all runs are trained, the
Table 4 step timings (dense and tickets side by side) are measured on the same device, and the
whole wall-clock is printed and written into ``<results>/gpu_run-<budget>.json``.

On a lent machine with no network, the offline CIFAR-10 copy travels with the checkout: copy it
into the git-ignored ``data/`` folder (``cp ../shared/data/cifar10_jpeg.npz data/``, 56 MB) and
carry that folder; the machine needs torch and tqdm (fvcore and codecarbon are not used here).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import shell_command, write_json_atomic

from . import table2, table4
from .budgets import BUDGETS
from .data import CifarData
from .options import RESULTS, RUNS, parser_for
from .store import ResultsStore
from .tickets import run_id

__all__ = ["TABLE2", "TABLE4", "jobs", "main"]

TABLE2 = [("resnet32", "dense", 0)] + [("resnet32", c, p) for c in ("snip", "grasp") for p in (1, 2, 3, 4, 5)]
TABLE4 = [("resnet56", "dense", 0)] + [("resnet56", "grasp", p) for p in (3, 4, 5, 12)]  # ResNet-32's are in TABLE2
_COST = {"resnet32": 1.0, "resnet56": 1.75}  # relative training time of the dense networks (depth)


def jobs() -> list[tuple[str, str, int]]:
    """The runs of the command, the longest first (so that the last to start are short)."""
    blocks = {"resnet32": 15, "resnet56": 27}
    return sorted(TABLE2 + TABLE4, key=lambda j: -_COST[j[0]] * (blocks[j[0]] - j[2]) / blocks[j[0]])


def _worker(queue: Any, args: dict[str, Any]) -> None:
    """Train runs from ``queue`` until it is empty (one process; the data loaded once, onto its device)."""
    torch.set_num_threads(args["threads"])
    budget = BUDGETS[args["budget"]]
    data = CifarData.load(args["data"], train_limit=budget.train_limit, test_limit=budget.test_limit)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_device = data.to(device)
    store = ResultsStore(Path(args["results"]))
    while True:
        job = queue.get()
        if job is None:
            return
        arch, criterion, p = job
        rid = run_id(arch, budget.name, criterion, p, 0)
        if store.has(table2.TABLE, rid):
            continue
        began = time.perf_counter()
        record = table2.run_one(
            arch,
            criterion,
            p,
            0,
            budget,
            on_device,
            runs=Path(args["runs"]),
            progress=False,
            command=args["command"],
            plan_data=data,
        )
        if args["workers"] > 1:  # its wall-clock and energy are not its own (sharing.timed_alone)
            record["timing_note"] = f"trained at the same time as up to {args['workers'] - 1} other runs on one device"
        store.save(table2.TABLE, rid, record)
        print(f"[gpu_run] {rid}: {record['accuracy']:.2f}% in {time.perf_counter() - began:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = parser_for("examples.cifar.gpu_run", __doc__)
    parser.add_argument("--data", help="CIFAR-10: .npz JPEG copy or torchvision root")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="gpu")
    parser.add_argument("--workers", type=int, default=8, help="training processes at once on the one device")
    parser.add_argument(
        "--archs", nargs="+", default=["resnet32", "resnet56"], choices=["resnet32", "resnet56"], help="which rows"
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results store")
    parser.add_argument("--runs", type=Path, default=RUNS, help="checkpoints")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    store = ResultsStore(args.results)
    todo = [
        j
        for j in jobs()
        if j[0] in args.archs and not store.has(table2.TABLE, run_id(j[0], args.budget, j[1], j[2], 0))
    ]
    context = mp.get_context("spawn")  # CUDA cannot be used in forked processes
    queue = context.Queue()
    for job in todo:
        queue.put(job)
    shared = {
        "budget": args.budget,
        "data": args.data,
        "results": str(args.results),
        "runs": str(args.runs),
        "threads": args.threads,
        "workers": min(args.workers, len(todo)),
        "command": shell_command("examples.cifar.gpu_run", argv),
    }
    workers = [context.Process(target=_worker, args=(queue, shared)) for _ in range(shared["workers"])]
    for _ in workers:
        queue.put(None)
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    failed = [w.exitcode for w in workers if w.exitcode]
    if failed:
        print(f"[gpu_run] {len(failed)} worker(s) failed (exit codes {failed}); rerun the command to resume")
        return 1
    trained = time.perf_counter() - began
    budget = BUDGETS[args.budget]
    data = CifarData.load(args.data, train_limit=budget.train_limit, test_limit=budget.test_limit)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for arch in args.archs:
        table4.run_table(
            arch,
            "grasp",
            [p for a, c, p in TABLE2 + TABLE4 if a == arch and c == "grasp"],
            1,
            budget,
            data,
            store,
            runs=args.runs,
            progress=False,
            command=shared["command"],
            device=device,
        )
    total = time.perf_counter() - began
    summary = {
        "budget": args.budget,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "workers": args.workers,
        "runs": len(todo),
        "train_seconds": trained,
        "total_seconds": total,
        "command": shared["command"],
    }
    write_json_atomic(args.results / f"gpu_run-{args.budget}.json", summary)
    print(
        f"[gpu_run] {len(todo)} runs trained in {trained:.0f} s, {total:.0f} s with the timings ({summary['device']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
