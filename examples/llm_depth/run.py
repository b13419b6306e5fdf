"""Train a small Llama on the standard library's source, prune 25% and 50% of its layers with each criterion, and
measure held-out perplexity (before and after a short fine-tuning) and decode speed against the dense model.

    python -m examples.llm_depth.run --budget cpu     # about 25 minutes on a 2-core CPU; resumable
    python -m examples.llm_depth.report               # then: docs/llm_depth.md and its plot

Steps: train the dense model (checkpointed under ``runs/llm_depth/<budget>/dense``; an interrupted run resumes
there); measure its held-out perplexity, also after the short fine-tuning every pruned model gets (the control:
what the extra steps alone do); for each ratio and criterion, plan with ``residual_prune.plan_pruning`` on
calibration batches of training windows, remove the layers with ``apply_plan``, measure the perplexity, fine-tune
the same number of steps on the same batches, measure again; time greedy decoding of the dense and the pruned model
side by side. ``drop_last`` is the plan that removes the last layers. Every measurement is one JSON record in the
results store, skipped when already there.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks._common import shell_command
from examples.cifar.options import parser_for
from examples.cifar.store import ResultsStore, provenance_fields
from residual_prune import PruningPlan, apply_plan, plan_pruning

from .budgets import BUDGETS, RESULTS, RUNS, Budget, build_model
from .corpus import Corpus, random_windows, spread_windows
from .report import perplexity_section, speed_section
from .speed import decode_speed
from .train import held_out_nll, perplexity, train

__all__ = ["CRITERIA", "DROP_LAST", "RATIOS", "drop_last_plan", "make_plan", "run_experiment"]

PERPLEXITY, SPEED = "perplexity", "speed"  # the tables of the results store
DROP_LAST = "drop_last"
FINERCUT = "finercut"  # loss_drop on attention and MLP sub-layers apart: as many branches as the layer plans remove
CRITERIA = ("block_influence", "angular_distance", "loss_drop", "random", DROP_LAST, FINERCUT)
RATIOS = (0.25, 0.5)


def _layer_index(name: str) -> int:
    return int(name.rpartition(".")[2].partition("#")[0])


def _position(name: str) -> int | str:
    """A removed layer's index, or a removed sub-layer's ``"<layer>#<branch>"`` (``#0`` attention, ``#1`` MLP)."""
    tail = name.rpartition(".")[2]
    return tail if "#" in tail else int(tail)


def drop_last_plan(model: nn.Module, n: int, example: dict[str, torch.Tensor]) -> PruningPlan:
    """The plan that removes the last ``n`` layers: a random plan's blocks, scored by position (later = lower)."""
    base = plan_pruning(model, criterion="random", n=n, example_inputs=example)
    layers = sorted(base.scores, key=_layer_index)
    scores = {name: float(len(layers) - i) for i, name in enumerate(layers)}
    return PruningPlan.from_dict(
        {**base.to_dict(), "criterion": DROP_LAST, "criterion_kwargs": {}, "scores": scores, "removed": layers[-n:]}
    )


def make_plan(
    model: nn.Module, criterion: str, n: int, calibration: list[dict[str, torch.Tensor]], seed: int = 0
) -> PruningPlan:
    """The plan of ``criterion`` removing ``n`` layers of ``model`` (FinerCut: ``2 n`` of its attention and MLP
    sub-layers), scored on the ``calibration`` batches."""
    example = {"input_ids": calibration[0]["input_ids"][:1]}
    if criterion == DROP_LAST:
        return drop_last_plan(model, n, example)
    options: dict[str, Any] = (
        {"seed": seed} if criterion == "random" else {"num_batches": len(calibration), "progress": False}
    )
    if criterion == FINERCUT:
        options.update(criterion="loss_drop", n=2 * n, granularity="sublayer")
    else:
        options.update(criterion=criterion, n=n)
    return plan_pruning(model, data=calibration, example_inputs=example, **options)


def run_id(budget: str, criterion: str, ratio: float, finetuned: bool) -> str:
    return f"{budget}-{criterion}-r{round(100 * ratio):02d}-{'ft' if finetuned else 'noft'}"


def speed_id(budget: str, ratio: float) -> str:
    return f"{budget}-speed-r{round(100 * ratio):02d}"


def wanted(budget: Budget, criteria: Sequence[str], ratios: Sequence[float]) -> list[tuple[str, str]]:
    """Every (table, run id) the experiment writes."""
    ids = [(PERPLEXITY, run_id(budget.name, "dense", 0.0, ft)) for ft in (False, True)]
    ids += [(PERPLEXITY, run_id(budget.name, c, r, ft)) for r in ratios for c in criteria for ft in (False, True)]
    return ids + [(SPEED, speed_id(budget.name, r)) for r in ratios]


@dataclasses.dataclass
class Experiment:
    """What every measurement of one run shares: the trained dense model, the data and the record fields."""

    budget: Budget
    corpus: Corpus
    dense: nn.Module
    held_out: torch.Tensor  # (windows, seq_len) token ids
    calibration: list[dict[str, torch.Tensor]]
    common: dict[str, Any]  # fields of every record
    bf16: bool
    progress: bool

    def nll(self, model: nn.Module) -> float:
        return held_out_nll(model, self.held_out)

    def finetune(self, model: nn.Module, name: str) -> dict[str, Any]:
        """Fine-tune ``model`` in place, the same steps on the same batches for every model; the result's fields."""
        result = train(
            model,
            self.corpus.train,
            self.budget.finetune,
            self.budget.model.seq_len,
            seed=self.budget.seed + 1,
            checkpoint_every=self.budget.finetune.steps,
            bf16=self.bf16,
            progress=self.progress,
            desc=f"fine-tune {name}",
        )
        return result.fields()


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _calibration(corpus: Corpus, budget: Budget) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(budget.seed + 2)
    size, length = budget.calibration_batch_size, budget.model.seq_len
    windows = [random_windows(corpus.train, size, length, generator) for _ in range(budget.calibration_batches)]
    return [{"input_ids": x, "labels": x} for x in windows]


def prepare(
    budget: Budget,
    corpus: Corpus,
    *,
    runs: Path,
    bf16: bool,
    command: str,
    progress: bool,
    until: int | None = None,
) -> Experiment | None:
    """Train (or resume) the dense model; None if ``until`` stopped the training before its end."""
    dense = build_model(budget.model, budget.seed)
    trained = train(
        dense,
        corpus.train,
        budget.schedule,
        budget.model.seq_len,
        seed=budget.seed,
        data=corpus.digest,
        checkpoint_dir=runs / budget.name / "dense",
        checkpoint_every=budget.checkpoint_every,
        until=until,
        bf16=bf16,
        progress=progress,
        desc="train dense",
    )
    if trained.steps < budget.schedule.steps:
        return None
    import transformers

    common = {
        **provenance_fields(budget.name, budget.description, corpus.description(), command),
        "model": dataclasses.asdict(budget.model),
        "layers": budget.model.layers,
        "dense_params": _count(dense),
        "corpus": corpus.describe(),
        "training": {"schedule": dataclasses.asdict(budget.schedule), **trained.fields()},
        "finetune_schedule": dataclasses.asdict(budget.finetune),
        "held_out_windows": budget.eval_windows,
        "calibration": {"batches": budget.calibration_batches, "batch_size": budget.calibration_batch_size},
        "bf16": bf16,
        "threads": torch.get_num_threads(),
    }
    common["machine"]["transformers"] = transformers.__version__
    held_out = spread_windows(corpus.held_out, budget.eval_windows, budget.model.seq_len)
    return Experiment(budget, corpus, dense, held_out, _calibration(corpus, budget), common, bf16, progress)


def _measured(
    exp: Experiment, model: nn.Module, criterion: str, ratio: float, plan: PruningPlan | None, dense_nll: float
) -> dict[str, dict[str, Any]]:
    """The records of one pruned (or dense) model: its perplexity, then after the fine-tuning."""
    removed = plan.removed if plan else []
    layers = [] if plan is None or plan.granularity == "sublayer" else removed
    fields = {
        "criterion": criterion,
        "ratio": ratio,
        "removed_layers": len(layers),
        "removed_sublayers": len(removed) - len(layers),
        "kept_layers": exp.budget.model.layers - len(layers),
        "removed": removed,
        "removed_indices": [_position(name) for name in removed],
        "scores": plan.scores if plan else {},
        "plan": plan.to_dict() if plan else None,
        "params": _count(model),
        "dense_perplexity": perplexity(dense_nll),
    }
    nll = exp.nll(model)
    records = {"noft": {**fields, "finetuned": False, "nll": nll, "perplexity": perplexity(nll), "finetune": None}}
    tuned = copy.deepcopy(model)
    history = exp.finetune(tuned, f"{criterion} {round(100 * ratio)}%")
    nll = exp.nll(tuned)
    records["ft"] = {**fields, "finetuned": True, "nll": nll, "perplexity": perplexity(nll), "finetune": history}
    return records


def _save(store: ResultsStore, exp: Experiment, rid: str, table: str, fields: dict[str, Any]) -> dict[str, Any]:
    record = {"table": table, "run_id": rid, **fields, **exp.common}
    store.save(table, rid, record)
    if exp.progress and table == PERPLEXITY:
        print(f"[llm_depth] {rid}: held-out perplexity {record['perplexity']:.3f}", flush=True)
    return record


def _speed(exp: Experiment, ratio: float, pruned: tuple[str, nn.Module] | None) -> dict[str, Any]:
    """Decode speed of the dense model and of a model with ``ratio`` of its layers removed: ``pruned`` (its
    criterion and the model, not fine-tuned), or else the model without its last layers. Which layers are gone
    does not change the architecture, so neither the speed."""
    budget = exp.budget
    n = round(ratio * budget.model.layers)
    if pruned is None:
        pruned = DROP_LAST, apply_plan(exp.dense, drop_last_plan(exp.dense, n, {"input_ids": exp.held_out[:1]}))
    criterion, model = pruned
    config: Any = model.config
    kept = config.num_hidden_layers
    if kept != budget.model.layers - n:
        raise RuntimeError(f"the {criterion} model has {kept} layers, not {budget.model.layers - n}")
    prompt = exp.corpus.held_out[: budget.prompt_tokens].long().unsqueeze(0)
    timed = decode_speed({"dense": exp.dense, "pruned": model}, prompt, budget.new_tokens, budget.speed_repeats)
    result = {
        "ratio": ratio,
        "removed_layers": n,
        "kept_layers": kept,
        "layer_ratio": budget.model.layers / kept,
        "pruned_by": criterion,
        "speedup": timed["dense"]["seconds"] / timed["pruned"]["seconds"],
        "prompt_tokens": budget.prompt_tokens,
        "new_tokens": budget.new_tokens,
        "repeats": budget.speed_repeats,
        **timed,
    }
    if exp.progress:
        print(
            f"[llm_depth] decode {kept}/{budget.model.layers} layers: {result['speedup']:.2f}x faster "
            f"(layer ratio {result['layer_ratio']:.2f})",
            flush=True,
        )
    return result


def run_experiment(
    budget: Budget,
    store: ResultsStore,
    corpus: Corpus,
    *,
    runs: Path = RUNS,
    criteria: Sequence[str] = CRITERIA,
    ratios: Sequence[float] = RATIOS,
    bf16: bool = False,
    command: str = "",
    progress: bool = True,
    until: int | None = None,
) -> list[dict[str, Any]]:
    """Every record of the experiment that is not in ``store`` yet (see the module); the new records."""
    if all(store.has(table, rid) for table, rid in wanted(budget, criteria, ratios)):
        return []
    exp = prepare(budget, corpus, runs=runs, bf16=bf16, command=command, progress=progress, until=until)
    if exp is None:
        return []
    dense_nll = exp.nll(exp.dense)
    done: list[dict[str, Any]] = []
    pruned_at: dict[float, tuple[str, nn.Module]] = {}  # a pruned model per ratio, for the decode timing
    jobs: list[tuple[str, float]] = [("dense", 0.0)] + [(c, r) for r in ratios for c in criteria]
    for criterion, ratio in jobs:
        ids = {key: run_id(budget.name, criterion, ratio, key == "ft") for key in ("noft", "ft")}
        if all(store.has(PERPLEXITY, rid) for rid in ids.values()):
            continue
        plan, began = None, time.perf_counter()
        if criterion != "dense":
            plan = make_plan(exp.dense, criterion, round(ratio * budget.model.layers), exp.calibration, budget.seed)
        model = apply_plan(exp.dense, plan) if plan else copy.deepcopy(exp.dense)
        plan_seconds = time.perf_counter() - began
        if plan and plan.granularity == "block":
            pruned_at.setdefault(ratio, (criterion, model))
        for key, fields in _measured(exp, model, criterion, ratio, plan, dense_nll).items():
            done.append(_save(store, exp, ids[key], PERPLEXITY, {**fields, "plan_seconds": plan_seconds}))
    for ratio in ratios:
        if not store.has(SPEED, speed_id(budget.name, ratio)):
            measured = _speed(exp, ratio, pruned_at.get(ratio))
            done.append(_save(store, exp, speed_id(budget.name, ratio), SPEED, measured))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = parser_for("examples.llm_depth.run", __doc__)
    parser.add_argument(
        "--budget",
        choices=sorted(BUDGETS),
        default="cpu",
        help="cpu: about 25 minutes on a 2-core CPU; smoke: a pipeline check (only with --results elsewhere)",
    )
    parser.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=CRITERIA, help="layer criteria")
    parser.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS), help="fractions of layers removed")
    parser.add_argument("--corpus", type=Path, help="folder of .py files (default: this Python's standard library)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results store")
    parser.add_argument("--runs", type=Path, default=RUNS, help="checkpoints")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the training steps")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; one was fastest on a shared 2-core machine, for training and decoding alike "
        "(examples/llm_depth/budgets.py)",
    )
    parser.add_argument("--stop-at-step", type=int, help="train the dense model up to this step only (resume later)")
    parser.add_argument("--report", action="store_true", help="only print the tables from the store")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    if args.budget == "smoke" and args.results.resolve() == RESULTS.resolve():
        parser.error(f"smoke results do not belong in {RESULTS}: pass --results <a scratch folder>")
    torch.set_num_threads(args.threads)
    store = ResultsStore(args.results)
    if not args.report:
        run_experiment(
            BUDGETS[args.budget],
            store,
            Corpus.load(args.corpus),
            runs=args.runs,
            criteria=args.criteria,
            ratios=args.ratios,
            bf16=args.bf16,
            command=shell_command("examples.llm_depth.run", argv),
            progress=not args.quiet,
            until=args.stop_at_step,
        )
    print(perplexity_section(store.records(PERPLEXITY)))
    print(speed_section(store.records(SPEED)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
