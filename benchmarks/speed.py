"""Speed: do pruned models reach the physical limit, and is pruning itself fast?

Every figure is a ratio of two timings taken side by side in this one process (interleaved
repeats after warm-up, medians, a fixed number of threads):

* ``limit``: FLOPs-implied speed-up (dense FLOPs / pruned FLOPs, fvcore) against the measured
  speed-up of inference (batch 1 and a large batch) and of an SGD training step, for CIFAR
  ResNet-32/56 at the paper's densities, torchvision ResNet-50 and timm ViT-S; the same
  architecture built natively with the pruned block counts; and the same blocks zeroed out
  instead of removed (masking, which saves nothing).
* ``filters``: ResNet-56 with ``p`` blocks removed against the same network filter-pruned with
  torch-pruning (magnitude importance) to the closest FLOPs: latency at batch 1, throughput at
  batch 128.
* ``cost``: wall-clock of ``find_blocks``, ``plan_pruning(criterion="random")``, ``apply_plan``
  and of the gradient criteria per batch (relative to one training step at the same batch),
  against torch-pruning's copy + dependency graph + one-shot magnitude pruning.
* ``capture``: the capture front-ends at scale: a Llama with 7B-scale dimensions built on the
  ``meta`` device and timm's ``deepseek_vit_412m`` (fx, export, export on ``meta``), each run cold
  in a fresh process (:mod:`benchmarks.capture`: wall-clock and peak resident memory, stopped
  after 300 s); torchvision ResNet-50's find + plan (l1) + apply with ``frontend="fx"`` and
  ``"export"`` side by side with torch-pruning, as in ``cost``.

Results go to ``benchmarks/results/speed.json`` (one entry per section, replaced when the
section is rerun; the ``capture`` section to ``capture.json`` beside it) and ``docs/benchmarks.md``
is generated from those files:

    python -m benchmarks.speed                        # all sections (about 25 minutes on 2 CPU cores)
    python -m benchmarks.speed --sections cost        # one section
    python -m benchmarks.speed --sections capture     # the front-ends at scale (about 3 minutes)
    python -m benchmarks.speed --quick                # tiny models and budgets: a smoke test, not a result
    python -m benchmarks.speed --report               # regenerate docs/benchmarks.md only
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks._common import machine, write_json_atomic
from benchmarks.timing import inference, side_by_side, train_step

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "speed.json"
REPORT = ROOT / "docs" / "benchmarks.md"
COMMAND = "python -m benchmarks.speed"
SECTIONS = ("limit", "filters", "cost", "capture")
SEED = 0


@dataclass(frozen=True)
class Case:
    """A model to measure: how to build it (dense or with given block counts) and its budgets."""

    name: str
    build: Callable[[Sequence[int] | None], nn.Module]
    stages: tuple[str, ...]  # the Sequential containers whose lengths define a native model
    input_size: int
    num_classes: int
    large_batch: int  # inference throughput batch
    train_batch: int
    criterion_batch: int
    policy: str = "paper"


def _cifar(depth: str) -> Callable[[Sequence[int] | None], nn.Module]:
    from residual_prune.models import cifar_resnet

    def build(counts: Sequence[int] | None = None) -> nn.Module:
        return cifar_resnet.CifarResNet(list(counts)) if counts else getattr(cifar_resnet, depth)()

    return build


def _resnet50(counts: Sequence[int] | None = None) -> nn.Module:
    from torchvision.models.resnet import Bottleneck, ResNet, resnet50

    return ResNet(Bottleneck, list(counts)) if counts else resnet50()


def _vit_small(counts: Sequence[int] | None = None) -> nn.Module:
    import timm

    kwargs = {"depth": counts[0]} if counts else {}
    return timm.create_model("vit_small_patch16_224", **kwargs)


CIFAR_STAGES = ("layer1", "layer2", "layer3")
CASES = {
    "resnet32": Case("CIFAR ResNet-32", _cifar("resnet32"), CIFAR_STAGES, 32, 10, 128, 128, 64),
    "resnet56": Case("CIFAR ResNet-56", _cifar("resnet56"), CIFAR_STAGES, 32, 10, 128, 128, 64),
    "resnet50": Case(
        "torchvision ResNet-50",
        _resnet50,
        ("layer1", "layer2", "layer3", "layer4"),
        224,
        1000,
        32,
        16,
        8,
        policy="default",
    ),
    "vit_s": Case("timm ViT-S/16", _vit_small, ("blocks",), 224, 1000, 32, 16, 8, policy="default"),
    # --quick: the smallest CIFAR ResNet, small batches
    "resnet20": Case("CIFAR ResNet-20", _cifar("resnet20"), CIFAR_STAGES, 32, 10, 16, 16, 8),
}
LIMIT = [("resnet32", (1, 3, 4)), ("resnet56", (3, 4, 5, 12)), ("resnet50", (4,)), ("vit_s", (3,))]
FILTERS = [("resnet56", (5, 12))]
COST = [("resnet56", 6), ("resnet50", 4), ("vit_s", 3)]
# capture: the LLM and ViT (benchmarks.capture.SUBJECTS, in fresh processes) and the CNN (fx vs export, here)
CAPTURE = {"llm": ("llama_7b", 8), "vit": "deepseek_vit_412m", "cnn": ("resnet50", 4)}
CAPTURE_TARGETS = {"llm_seconds": 30.0, "llm_rss_gb": 2.0, "vit_seconds": 30.0}
QUICK = {
    "limit": [("resnet20", (2,))],
    "filters": [("resnet20", (2,))],
    "cost": [("resnet20", 2)],
    "capture": {"llm": ("llama_tiny", 1), "vit": "deepseek_vit_tiny", "cnn": ("resnet20", 2)},
}


def _inputs(case: Case, batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, case.input_size, case.input_size, generator=torch.Generator().manual_seed(SEED))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _flops(model: nn.Module, x: torch.Tensor) -> int:
    from residual_prune.flops import count_flops_by_module

    counts = count_flops_by_module(model, (x[:1],))
    if counts is None:
        raise RuntimeError(f"fvcore could not count the FLOPs of {type(model).__name__}")
    return counts[""]


def _plan(model: nn.Module, case: Case, p: int):  # noqa: ANN202 - PruningPlan, imported lazily
    from residual_prune import plan_pruning

    return plan_pruning(model, criterion="random", n=p, example_inputs=_inputs(case, 1), policy=case.policy, seed=SEED)


def _zeroed(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """The common practice the paper criticises: the blocks stay, their weights are masked to zero."""
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for name in names:
            for param in zeroed.get_submodule(name).parameters():
                param.zero_()
    return zeroed


def _measure(variants: dict[str, nn.Module], case: Case, budget: dict[str, int]) -> dict[str, dict[str, float]]:
    """Seconds per call of batch-1 inference, large-batch inference and a training step, per variant."""
    timing = {"warmup": budget["warmup"], "repeats": budget["repeats"]}
    x1, xl, xt = _inputs(case, 1), _inputs(case, case.large_batch), _inputs(case, case.train_batch)
    return {
        "infer_b1": side_by_side({k: inference(m, x1) for k, m in variants.items()}, **timing),
        f"infer_b{case.large_batch}": side_by_side({k: inference(m, xl) for k, m in variants.items()}, **timing),
        f"train_b{case.train_batch}": side_by_side(
            {k: train_step(m, xt, case.num_classes) for k, m in variants.items()}, **timing
        ),
    }


def _pruned_cases(
    section: str, items: Sequence[tuple[str, Sequence[int]]], progress: Callable
) -> Iterator[tuple[str, Case, int, nn.Module, Any, nn.Module]]:
    """``(key, case, p, dense model, plan, pruned model)`` for every case and number of removed blocks."""
    from residual_prune import apply_plan

    for key, densities in items:
        case = CASES[key]
        for p in densities:
            progress(f"{section} {key} p={p}")
            torch.manual_seed(SEED)
            dense = case.build(None)
            plan = _plan(dense, case, p)
            yield key, case, p, dense, plan, apply_plan(dense, plan)


def limit_section(items: Sequence[tuple[str, Sequence[int]]], budget: dict[str, int], progress: Callable) -> list:
    """Pruned vs dense vs native vs zeroed, for every case and number of removed blocks."""
    records = []
    for key, case, p, dense, plan, pruned in _pruned_cases("limit", items, progress):
        counts = [len(pruned.get_submodule(s)) for s in case.stages]
        native = case.build(counts)
        variants = {"dense": dense, "pruned": pruned, "native": native, "zeroed": _zeroed(dense, plan.removed)}
        x1 = _inputs(case, 1)
        flops = {k: _flops(m, x1) for k, m in variants.items()}
        with torch.no_grad():  # masking computes the same function as removal, at the dense cost
            zeroed_error = float((variants["zeroed"].eval()(x1) - pruned.eval()(x1)).abs().max())
        times = _measure(variants, case, budget)
        records.append(
            {
                "model": key,
                "name": case.name,
                "p": p,
                "policy": case.policy,
                "removed": plan.removed,
                "block_counts": counts,
                "params": {k: _params(m) for k, m in variants.items()},
                "flops": flops,
                "flops_speedup": flops["dense"] / flops["pruned"],
                "zeroed_max_error": zeroed_error,
                "seconds": times,
            }
        )
    return records


def _filter_prune(model: nn.Module, case: Case, target_flops: int) -> tuple[nn.Module, float]:
    """torch-pruning's magnitude filter pruning of a copy, with the ratio bisected to ``target_flops``."""
    x = _inputs(case, 1)
    return bisect_ratio(lambda ratio: _magnitude_prune(model, x, ratio), lambda m: _flops(m, x), target_flops)


def bisect_ratio(
    prune: Callable[[float], nn.Module],
    measure: Callable[[nn.Module], float],
    target: float,
    *,
    high: float = 0.95,
    steps: int = 12,
) -> tuple[nn.Module, float]:
    """``(prune(ratio), ratio)`` with ``measure`` closest to ``target`` among ``steps`` bisection steps of
    ``ratio`` in ``[0, high]`` (``measure`` must not grow with the ratio, e.g. FLOPs or filters kept)."""
    low = 0.0
    best: tuple[float, Any, float] = (math.inf, None, 0.0)
    for _ in range(steps):
        ratio = (low + high) / 2
        candidate = prune(ratio)
        value = measure(candidate)
        best = min(best, (abs(value - target), candidate, ratio), key=lambda b: b[0])
        low, high = (ratio, high) if value > target else (low, ratio)
    return best[1], best[2]


def filters_section(items: Sequence[tuple[str, Sequence[int]]], budget: dict[str, int], progress: Callable) -> list:
    """Layer pruning vs torch-pruning filter pruning at (nearly) the same FLOPs."""
    records = []
    timing = {"warmup": budget["warmup"], "repeats": budget["repeats"]}
    for key, case, p, dense, _, layer in _pruned_cases("filters", items, progress):
        x1, xl = _inputs(case, 1), _inputs(case, 128)
        filt, ratio = _filter_prune(dense, case, _flops(layer, x1))
        variants = {"dense": dense, "layer": layer, "filter": filt}
        records.append(
            {
                "model": key,
                "name": case.name,
                "p": p,
                "filter_ratio": ratio,
                "params": {k: _params(m) for k, m in variants.items()},
                "flops": {k: _flops(m, x1) for k, m in variants.items()},
                "seconds": {
                    "infer_b1": side_by_side({k: inference(m, x1) for k, m in variants.items()}, **timing),
                    "infer_b128": side_by_side({k: inference(m, xl) for k, m in variants.items()}, **timing),
                },
            }
        )
    return records


def _magnitude_prune(model: nn.Module, x: torch.Tensor, ratio: float) -> nn.Module:
    """A copy of ``model`` filter-pruned by torch-pruning with L2 magnitude importance (see :func:`torch_prune`)."""
    return torch_prune(model, x, ratio)


def torch_prune(model: nn.Module, x: torch.Tensor, ratio: float, importance: Any = None) -> nn.Module:
    """A copy of ``model`` filter-pruned by torch-pruning (``ratio`` of the channels of every layer; the
    classifier kept; attention pruned by whole heads). ``importance``: a ``tp.importance.Importance``, or a
    function of the copy that returns one (for scores tied to the copy's modules); default L2 magnitude."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model)
    if importance is None:
        importance = tp.importance.MagnitudeImportance(p=2)
    elif not isinstance(importance, tp.importance.Importance):
        importance = importance(pruned)
    heads = {m.qkv: m.num_heads for m in pruned.modules() if hasattr(m, "qkv") and hasattr(m, "num_heads")}
    pruner = tp.pruner.MetaPruner(
        pruned,
        x,
        importance=importance,
        pruning_ratio=ratio,
        ignored_layers=[m for m in pruned.modules() if isinstance(m, nn.Linear) and m.out_features in (10, 1000)],
        num_heads=heads,
        prune_head_dims=False,
        prune_num_heads=bool(heads),
    )
    pruner.step()
    return pruned


def _torch_pruning_one_shot(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    """torch-pruning's equivalent job: copy, build the dependency graph, prune 30% of filters by magnitude."""
    return lambda: _magnitude_prune(model, x, 0.3)


def _dependency_graph(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    import torch_pruning as tp

    return lambda: tp.DependencyGraph().build_dependency(model, example_inputs=x)


def _torch_pruning_steps(model: nn.Module, x: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """torch-pruning's job on ``model``, to time beside layer pruning: one-shot pruning, and its graph alone."""
    return {"torch_pruning": _torch_pruning_one_shot(model, x), "torch_pruning_graph": _dependency_graph(model, x)}


def _pipeline_steps(
    model: nn.Module, x: torch.Tensor, case: Case, p: int, *, criterion: str = "random", frontend: str = "auto"
) -> tuple[Any, dict[str, Callable[[], Any]]]:
    """The plan removing ``p`` blocks by ``criterion``, and each step of layer pruning as a function to time:
    ``find_blocks``, ``plan_pruning(<criterion>)``, ``apply_plan`` (of that plan) and the three in a row."""
    from residual_prune import apply_plan, find_blocks, plan_pruning

    options: dict[str, Any] = {"example_inputs": x, "policy": case.policy, "frontend": frontend}
    if criterion == "random":
        options["seed"] = SEED
    plan = plan_pruning(model, criterion=criterion, n=p, **options)

    def find() -> Any:
        return find_blocks(model, x, policy=case.policy, frontend=frontend)

    def make_plan() -> Any:
        return plan_pruning(model, criterion=criterion, n=p, **options)

    def pipeline() -> nn.Module:
        find()
        return apply_plan(model, make_plan())

    return plan, {
        "find_blocks": find,
        f"plan_pruning({criterion})": make_plan,
        "apply_plan": lambda: apply_plan(model, plan),
        "pipeline": pipeline,
    }


def cost_section(items: Sequence[tuple[str, int]], budget: dict[str, int], progress: Callable) -> list:
    """Wall-clock of each step of pruning, and of torch-pruning's one-shot pruning of the same model."""
    records = []
    for key, p in items:
        progress(f"cost {key}")
        records.append(_cost(key, p, budget))
    return records


def _cost(key: str, p: int, budget: dict[str, int]) -> dict[str, Any]:
    from residual_prune import find_blocks, get_criterion

    timing = {"warmup": budget["warmup"], "repeats": budget["repeats"]}
    case = CASES[key]
    torch.manual_seed(SEED)
    model = case.build(None)
    x = _inputs(case, 1)
    _, pipeline = _pipeline_steps(model, x, case, p)
    steps = side_by_side({**pipeline, **_torch_pruning_steps(model, x)}, **timing)
    blocks = [b for b in find_blocks(model, x, policy=case.policy) if b.removable]
    xb = _inputs(case, case.criterion_batch)
    batches = [(xb, torch.arange(case.criterion_batch) % case.num_classes)] * budget["criterion_batches"]
    snip, grasp, synflow = (get_criterion(name) for name in ("snip", "grasp", "synflow"))
    criteria = {
        "snip": lambda: snip(model, blocks, batches, num_batches=len(batches), progress=False),
        "grasp": lambda: grasp(model, blocks, batches, num_batches=len(batches), progress=False),
        "grasp_1": lambda: grasp(model, blocks, batches[:1], num_batches=1, progress=False),
        "synflow": lambda: synflow(model, blocks, example_inputs=x),
    }
    failures = {}
    for name, fn in list(criteria.items()):
        try:
            fn()
        except Exception as exc:  # reported in the table (a criterion that fails on a model is a result too)
            failures[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            del criteria[name]
    criteria["train_step"] = train_step(copy.deepcopy(model), xb, case.num_classes)
    seconds = side_by_side(criteria, warmup=1, repeats=max(3, timing["repeats"] // 2))
    return {
        "model": key,
        "name": case.name,
        "p": p,
        "params": _params(model),
        "seconds": steps,
        "criteria": seconds,
        "criterion_failures": failures,
        "criterion_batches": len(batches),
        "criterion_batch_size": case.criterion_batch,
    }


FRONTENDS = ("fx", "export")


def capture_section(items: dict[str, Any], budget: dict[str, int], progress: Callable) -> dict[str, Any]:
    """The capture front-ends at scale: the LLM (on ``meta``) and the ViT in fresh processes, each run once
    and cold (:mod:`benchmarks.capture`), then the CNN's pruning steps with fx and export side by side here."""
    import os

    from benchmarks.capture import SUBJECTS, Job, in_fresh_process

    threads = budget["threads"]
    llm, n = items["llm"]
    vit = items["vit"]
    jobs = {
        "llm": {
            "find": Job(llm, meta=True, threads=threads),
            "prune": Job(llm, ("plan_pruning", "apply_plan"), meta=True, n=n, threads=threads),
        },
        "vit": {
            "fx": Job(vit, frontend="fx", threads=threads),
            "export": Job(vit, frontend="export", threads=threads),
            "export_meta": Job(vit, frontend="export", meta=True, threads=threads),
        },
    }
    records: dict[str, Any] = {"load_average": {"start": list(os.getloadavg())}}
    for group, runs in jobs.items():
        records[group] = {}
        for label, job in runs.items():
            progress(f"capture {job.subject} {label} (fresh process)")
            records[group][label] = {"name": SUBJECTS[job.subject].name, **in_fresh_process(job)}
    key, p = items["cnn"]
    progress(f"capture {key} fx vs export")
    records["cnn"] = _frontends_side_by_side(key, p, budget)
    records["load_average"]["end"] = list(os.getloadavg())
    records["versions"] = _versions("transformers", "torch_pruning")
    return records


def _frontends_side_by_side(key: str, p: int, budget: dict[str, int], criterion: str = "l1") -> dict[str, Any]:
    """find + plan + apply with each front-end, against torch-pruning, timed side by side."""
    case = CASES[key]
    torch.manual_seed(SEED)
    model = case.build(None)
    x = _inputs(case, 1)
    fns, removed = {}, {}
    for frontend in FRONTENDS:
        plan, steps = _pipeline_steps(model, x, case, p, criterion=criterion, frontend=frontend)
        removed[frontend] = plan.removed
        fns.update({f"{frontend}/{step}": fn for step, fn in steps.items()})
    seconds = side_by_side(
        {**fns, **_torch_pruning_steps(model, x)}, warmup=budget["warmup"], repeats=budget["repeats"]
    )
    nested: dict[str, Any] = {frontend: {} for frontend in FRONTENDS}
    for name, value in seconds.items():
        frontend, _, step = name.rpartition("/")
        (nested[frontend] if frontend else nested)[step] = value
    return {
        "model": key,
        "name": case.name,
        "p": p,
        "criterion": criterion,
        "input": list(x.shape),
        "removed": removed,
        "seconds": nested,
    }


def _versions(*modules: str) -> dict[str, str]:
    """``__version__`` of each module (``"not installed"`` where it cannot be imported)."""
    import importlib

    versions = {}
    for module in modules:
        try:
            versions[module] = importlib.import_module(module).__version__
        except ImportError:
            versions[module] = "not installed"
    return versions


# --- results store and report ---------------------------------------------------------------------------------


def load(path: Path = RESULTS) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def section_path(section: str, path: Path = RESULTS) -> Path:
    """Where ``section`` is stored: ``capture.json`` beside ``path`` for the capture section, else ``path``."""
    return path.with_name("capture.json") if section == "capture" else path


def load_all(path: Path = RESULTS) -> dict[str, Any]:
    """The results of every section: ``path`` with the capture section's file merged in, label by label."""
    results = load(path)
    for label, sections in load(section_path("capture", path)).items():
        results.setdefault(label, {}).update(sections)
    return results


def _library_revision() -> str:
    """The git revision of the ``residual_prune`` being measured (``+dirty`` with local changes)."""
    import subprocess

    import residual_prune

    where = Path(residual_prune.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"not a git checkout ({where})"
    return head + ("+dirty" if dirty else "")


def run(
    sections: Sequence[str],
    *,
    quick: bool,
    budget: dict[str, int],
    label: str,
    path: Path = RESULTS,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``sections`` and store each under ``label`` (``"after"``, or ``"before"`` for a baseline checkout)
    in ``path`` (the capture section in :func:`section_path`)."""
    torch.set_num_threads(budget["threads"])
    functions: dict[str, Callable[..., Any]] = {
        "limit": limit_section,
        "filters": filters_section,
        "cost": cost_section,
        "capture": capture_section,
    }
    plans = QUICK if quick else {"limit": LIMIT, "filters": FILTERS, "cost": COST, "capture": CAPTURE}
    for section in sections:
        results = load(section_path(section, path))
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            records = functions[section](plans[section], budget, progress)
        results.setdefault(label, {})[section] = {
            "records": records,
            "budget": budget,
            "quick": quick,
            "machine": machine(),
            "wall_seconds": time.perf_counter() - start,
            "command": f"{COMMAND} --sections {section} --threads {budget['threads']} --repeats {budget['repeats']} "
            f"--warmup {budget['warmup']} --criterion-batches {budget['criterion_batches']}"
            + (" --quick" if quick else "")
            + (f" --label {label}" if label != "after" else ""),
            "date": time.strftime("%Y-%m-%d"),
            "library": _library_revision(),
        }
        write_json_atomic(section_path(section, path), results)
    return load_all(path)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds * 1e3:.0f}"


def _x(ratio: float) -> str:
    return f"{ratio:.2f}x"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""]


def _header(entry: dict[str, Any]) -> str:
    info, budget = entry["machine"], entry["budget"]
    quick = " **Quick mode: tiny models and budgets, a smoke test and not a result.**" if entry["quick"] else ""
    return (
        f"Command: `{entry['command']}` ({entry['date']}, {entry['wall_seconds'] / 60:.1f} min; residual_prune "
        f"{entry.get('library', 'revision not recorded')}). Machine: "
        f"{info['cpu']}, {info['cores']} cores, {budget['threads']} threads; torch {info['torch']}, torchvision "
        f"{info['torchvision']}, timm {info['timm']}. Medians of {budget['repeats']} interleaved repeats after "
        f"{budget['warmup']} warm-up calls; random weights and inputs.{quick}"
    )


def limit_rows(records: Sequence[dict[str, Any]]) -> tuple[list[list[Any]], list[list[Any]]]:
    """Rows of the two physical-limit tables: speed-up vs FLOPs, and pruned vs native vs zeroed."""
    speed, native = [], []
    for r in records:
        s, implied = r["seconds"], r["flops_speedup"]
        measures = list(s)
        ups = {m: s[m]["dense"] / s[m]["pruned"] for m in measures}
        speed.append(
            [
                r["name"],
                r["p"],
                f"{r['params']['dense'] / 1e6:.2f}M → {r['params']['pruned'] / 1e6:.2f}M",
                _x(implied),
                *(f"{_x(ups[m])} ({ups[m] / implied:.2f})" for m in measures),
            ]
        )
        native.append(
            [
                r["name"],
                r["p"],
                "/".join(map(str, r["block_counts"])),
                *(f"{(s[m]['pruned'] / s[m]['native'] - 1) * 100:+.1f}%" for m in measures),
                *(_x(s[m]["dense"] / s[m]["zeroed"]) for m in measures),
            ]
        )
    return speed, native


def targets(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Each target of the speed issue, whether it is met, and the measurement that says so."""
    after = results.get("after", {})
    out = []
    if "limit" in after:
        records = after["limit"]["records"]
        worst = min(
            (r["seconds"][m]["dense"] / r["seconds"][m]["pruned"] / r["flops_speedup"], r, m)
            for r in records
            for m in r["seconds"]
            if m != "infer_b1"
        )
        ratio, r, m = worst
        native = r["seconds"][m]["dense"] / r["seconds"][m]["native"] / r["flops_speedup"]
        misses = sum(
            r["seconds"][k]["dense"] / r["seconds"][k]["pruned"] / r["flops_speedup"] < 0.95
            for r in records
            for k in r["seconds"]
            if k != "infer_b1"
        )
        total = sum(1 for r in records for k in r["seconds"] if k != "infer_b1")
        out.append(
            (
                "measured speed-up ≥ 0.95 × FLOPs-implied (large-batch inference and training)",
                ratio >= 0.95,
                f"{total - misses} of {total} cases; lowest ratio {ratio:.2f} ({r['name']} p={r['p']} {m}), where "
                f"the natively built model reaches {native:.2f}"
                + (
                    ": the gap lies in FLOPs as a cost model (layers differ in time per FLOP), not in the pruned model"
                    if abs(native - ratio) <= 0.03
                    else ""
                ),
            )
        )
        gap = max(
            (abs(r["seconds"][m]["pruned"] / r["seconds"][m]["native"] - 1), f"{r['name']} p={r['p']} {m}")
            for r in records
            for m in r["seconds"]
            if m != "infer_b1"
        )
        out.append(
            (
                "pruned model within 3% of the natively built one",
                gap[0] <= 0.03,
                f"largest gap {gap[0] * 100:.1f}% ({gap[1]})",
            )
        )
    if "cost" in after:
        records = after["cost"]["records"]
        ratio = max((r["seconds"]["pipeline"] / r["seconds"]["torch_pruning"], r["name"]) for r in records)
        out.append(
            (
                "find_blocks + plan_pruning(random) + apply_plan faster than torch-pruning's one-shot pruning",
                ratio[0] < 1,
                f"slowest: {ratio[0]:.2f} of torch-pruning's time ({ratio[1]})",
            )
        )
        for key, label in (("grasp_1", "one batch, the default"), ("grasp", "several batches")):
            cost = max((_per_batch(r, key), r["name"]) for r in records)
            out.append(
                (
                    f"GraSP costs at most 4 training steps per batch ({label})",
                    cost[0] <= 4,
                    f"highest: {cost[0]:.2f} training steps ({cost[1]})"
                    if math.isfinite(cost[0])
                    else f"GraSP fails on {cost[1]}",
                )
            )
    if "capture" in after:
        out += capture_targets(after["capture"]["records"])
    return out


def capture_targets(records: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """The capture targets: the LLM's analysis time and memory, the ViT's analysis time per front-end, and
    the CNN's pipeline against torch-pruning per front-end."""
    limits = CAPTURE_TARGETS
    find, prune = records["llm"]["find"], records["llm"]["prune"]
    rss = find.get("peak_rss", math.inf) / 1e9
    vit, cnn = records["vit"], records["cnn"]
    size = "x".join(map(str, vit["export"].get("input", [])[-2:])) or "its default size"
    out = [
        (
            f"{find['name']} on the meta device: find_blocks ≤ {limits['llm_seconds']:.0f} s",
            _step_seconds(find, "find_blocks") <= limits["llm_seconds"],
            f"{_seconds_cell(find, 'find_blocks')}{_units(find)}; plan_pruning(criterion='random', n={prune['n']}) "
            f"{_seconds_cell(prune, 'plan_pruning')}, apply_plan {_seconds_cell(prune, 'apply_plan')}",
        ),
        (
            f"{find['name']}: peak resident memory ≤ {limits['llm_rss_gb']:.0f} GB (a fresh process that builds "
            "and analyses it)",
            rss <= limits["llm_rss_gb"],
            f"{rss:.2f} GB ({find['rss_after_imports'] / 1e9:.2f} GB after the imports alone)"
            if math.isfinite(rss)
            else _seconds_cell(find, "find_blocks"),
        ),
        (
            f"{vit['export']['name']} at {size}: analysis ≤ {limits['vit_seconds']:.0f} s with frontend='export'",
            max(_step_seconds(vit[k], "find_blocks") for k in ("export", "export_meta")) <= limits["vit_seconds"],
            f"{_seconds_cell(vit['export'], 'find_blocks')} with random weights, "
            f"{_seconds_cell(vit['export_meta'], 'find_blocks')} built on the meta device",
        ),
        (
            f"{vit['fx']['name']} at {size}: analysis ≤ {limits['vit_seconds']:.0f} s with frontend='fx'",
            _step_seconds(vit["fx"], "find_blocks") <= limits["vit_seconds"],
            _seconds_cell(vit["fx"], "find_blocks"),
        ),
    ]
    s = cnn["seconds"]
    for frontend in FRONTENDS:
        ratio = s[frontend]["pipeline"] / s["torch_pruning"]
        out.append(
            (
                f"{cnn['name']}: find_blocks + plan_pruning({cnn['criterion']}) + apply_plan with "
                f"frontend='{frontend}' faster than torch-pruning's one-shot pruning",
                ratio < 1,
                f"{ratio:.2f} of torch-pruning's time ({_ms(s[frontend]['pipeline'])} ms vs "
                f"{_ms(s['torch_pruning'])} ms)",
            )
        )
    return out


def _step_seconds(record: dict[str, Any], step: str) -> float:
    """Seconds a fresh-process step took (infinite where it was stopped, failed or not run)."""
    return record.get("seconds", {}).get(step, math.inf)


def _seconds_cell(record: dict[str, Any], step: str) -> str:
    if record.get("timed_out"):
        return f"> {record['timeout']:.0f} s (stopped)"
    if "error" in record:
        return f"failed: {record['error']}"
    if step not in record.get("seconds", {}):
        return "—"
    return f"{record['seconds'][step]:.1f} s"


def _units(record: dict[str, Any]) -> str:
    if "units" not in record:
        return ""
    return f" (front-end {record['frontend_used']}, {record['removable']} of {record['units']} units removable)"


def _per_batch(record: dict[str, Any], criterion: str) -> float:
    """A criterion's cost per batch in training steps of the same batch size."""
    c = record["criteria"]
    if criterion not in c:
        return math.inf
    batches = 1 if criterion in ("synflow", "grasp_1") else record["criterion_batches"]
    return c[criterion] / batches / c["train_step"]


def _criterion_cell(record: dict[str, Any], criterion: str) -> str:
    failure = record.get("criterion_failures", {}).get(criterion)
    if failure:
        return f"fails: {failure}"
    if criterion not in record["criteria"]:
        return "not measured"
    batches = 1 if criterion in ("synflow", "grasp_1") else record["criterion_batches"]
    seconds = record["criteria"][criterion] / batches
    return f"{_ms(seconds)} ({seconds / record['criteria']['train_step']:.2f})"


FIXES = (
    "`find_blocks` ran the model twice: once for shapes (fx `ShapeProp`) and once through fvcore's "
    "`torch.jit.trace` for FLOPs. FLOPs are now counted in the shape pass, in fvcore's convention (tests check "
    "equality with fvcore module by module), plain layers from their shapes and everything else with "
    "`torch.utils.flop_counter`; `plan_pruning` does not count FLOPs at all.",
    "The shape pass built a `GraphModule` (copying the module tree and compiling generated code) only to "
    "interpret it; it now interprets the graph over the model's own modules and records shapes without "
    "`ShapeProp`'s memory-format detection. The `GraphModule` is built only where sub-layer surgery needs it.",
    "`apply_plan` deep-copied the whole model, removed blocks included; the removed blocks are no longer copied.",
    "GraSP ran every batch forward twice, for the gradient and then for the Hessian-gradient product; the last "
    "batch's graph now serves both (with one batch, its default, a single forward). GraSP also failed on every "
    "model with fused attention (timm ViT: no double backward for the CPU flash kernel); it now runs attention "
    "on the composite kernel.",
)


def _before_after(after: dict[str, Any], before: dict[str, Any]) -> list[str]:
    if "cost" not in before:
        return []
    old = {r["model"]: r["seconds"] for r in before["cost"]["records"]}
    rows = [
        [
            r["name"],
            *(
                f"{_ms(old[r['model']][k])} → {_ms(r['seconds'][k])} ({old[r['model']][k] / r['seconds'][k]:.1f}x)"
                for k in ("find_blocks", "plan_pruning(random)", "apply_plan", "pipeline")
            ),
        ]
        for r in after["cost"]["records"]
        if r["model"] in old
    ]
    return [
        "What profiling found and what changed (before: the same command on the checkout before these fixes, "
        "stored with `--label before`; the tables below give both runs in full):",
        "",
        *(f"- {fix}" for fix in FIXES),
        "",
        "Since then, `apply_plan` (and `verify`) check every plan against the model before changing anything, "
        "which costs one more trace and shape pass, and tracing leaves the caller's model bit-identical, which "
        "costs a copy and a comparison of every tensor: the price of never returning a model other than the plan "
        "describes. The two runs may come from different machines: each table below names its own.",
        "",
        *_table(["model", "find_blocks, ms", "plan_pruning(random), ms", "apply_plan, ms", "pipeline, ms"], rows),
    ]


def report(results: dict[str, Any]) -> str:
    after, before = results.get("after", {}), results.get("before", {})
    lines = [
        "# Speed benchmarks",
        "",
        f"Generated by `{COMMAND}` from `benchmarks/results/speed.json` and `capture.json`; do not edit by hand. "
        "Every ratio compares "
        "timings taken side by side in one process. Speed-up = dense time / pruned time.",
        "",
        "## Targets",
        "",
        *_table(["target", "met", "measurement"], [[t, "yes" if ok else "**no**", m] for t, ok, m in targets(results)]),
    ]
    if "limit" in after:
        entry = after["limit"]
        speed, native = limit_rows(entry["records"])
        measures = list(entry["records"][0]["seconds"])
        lines += [
            "## 1. Physical limit: measured speed-up against the FLOPs-implied one",
            "",
            _header(entry),
            "",
            "Blocks chosen by `plan_pruning(criterion='random', seed=0)` (CIFAR: `policy='paper'`). In brackets: "
            "measured / FLOPs-implied speed-up (1.00 = the physical limit).",
            "",
            *_table(["model", "p", "params", "FLOPs-implied", *measures], speed),
            "## 2. Same architecture built natively, and zeroed-out blocks",
            "",
            "Native: the model constructed directly with the pruned model's block counts (time of pruned / native "
            "- 1; negative = the pruned model is faster). Zeroed: the same blocks kept but their weights set to "
            "zero, the masking practice the paper criticises (speed-up over dense).",
            "",
            *_table(
                [
                    "model",
                    "p",
                    "blocks per stage",
                    *(f"pruned vs native, {m}" for m in measures),
                    *(f"zeroed, {m}" for m in measures),
                ],
                native,
            ),
        ]
    if "filters" in after:
        entry = after["filters"]
        rows = []
        for r in entry["records"]:
            s = r["seconds"]
            b1, b128 = s["infer_b1"], s["infer_b128"]
            lat = b1["filter"] / b1["layer"]
            thr = b128["filter"] / b128["layer"]
            rows.append(
                [
                    r["name"],
                    r["p"],
                    f"{r['filter_ratio']:.3f}",
                    " / ".join(f"{r['flops'][k] / 1e6:.1f}M" for k in ("dense", "layer", "filter")),
                    " / ".join(_ms(b1[k]) for k in ("dense", "layer", "filter")),
                    " / ".join(f"{128 / b128[k]:.0f}" for k in ("dense", "layer", "filter")),
                    f"{'layer' if lat > 1 else 'filter'} by {max(lat, 1 / lat):.2f}x",
                    f"{'layer' if thr > 1 else 'filter'} by {max(thr, 1 / thr):.2f}x",
                ]
            )
        lines += [
            "## 3. Layer pruning vs filter pruning at matched FLOPs",
            "",
            _header(entry),
            "",
            "Filter pruning: torch-pruning `MetaPruner` with `MagnitudeImportance(p=2)`, the per-layer ratio bisected "
            "to the FLOPs of the layer-pruned model (classifier kept).",
            "",
            *_table(
                [
                    "model",
                    "p",
                    "filter ratio",
                    "FLOPs dense / layer / filter",
                    "batch-1 latency, ms",
                    "batch-128 throughput, img/s",
                    "faster at batch 1",
                    "faster at batch 128",
                ],
                rows,
            ),
        ]
    if "cost" in after:
        lines += ["## 4. Cost of pruning itself", "", *_before_after(after, before)]
        for label, results_ in (("after", after), ("before", before)):
            if "cost" not in results_:
                continue
            entry = results_["cost"]
            rows = []
            for r in entry["records"]:
                s = r["seconds"]
                rows.append(
                    [
                        r["name"],
                        r["p"],
                        *(
                            _ms(s[k])
                            for k in (
                                "find_blocks",
                                "plan_pruning(random)",
                                "apply_plan",
                                "pipeline",
                                "torch_pruning",
                                "torch_pruning_graph",
                            )
                        ),
                        f"{s['pipeline'] / s['torch_pruning']:.2f}",
                    ]
                )
            title = (
                "Now" if label == "after" else "Before the fixes of the speed issue (the same command on that checkout)"
            )
            lines += [
                f"### {title}",
                "",
                _header(entry),
                "",
                "Milliseconds. Pipeline = `find_blocks` + `plan_pruning(criterion='random')` + `apply_plan` (a copy), "
                "one after the other. torch-pruning = `deepcopy` + `MetaPruner` (builds the dependency graph) + one "
                "magnitude pruning step of 30% of the filters; graph = `DependencyGraph().build_dependency` alone.",
                "",
                *_table(
                    [
                        "model",
                        "p",
                        "find_blocks",
                        "plan_pruning(random)",
                        "apply_plan",
                        "pipeline",
                        "torch-pruning",
                        "torch-pruning graph",
                        "pipeline / torch-pruning",
                    ],
                    rows,
                ),
            ]
            crit_rows = [
                [
                    r["name"],
                    f"{r['criterion_batches']} x {r['criterion_batch_size']}",
                    _ms(r["criteria"]["train_step"]),
                    *(_criterion_cell(r, c) for c in ("snip", "grasp", "grasp_1", "synflow")),
                ]
                for r in entry["records"]
            ]
            lines += [
                "Criteria: milliseconds per batch (in brackets: in training steps of the same batch size). GraSP "
                "needs the gradient of all batches before any Hessian-gradient product, so every batch but the last "
                "runs twice (a forward and backward, then a forward, a backward with graph and a double backward); "
                "the last batch's graph serves both passes. SynFlow runs once on a batch-1 "
                "all-ones input, in float64.",
                "",
                *_table(
                    ["model", "batches x size", "training step, ms", "SNIP", "GraSP", "GraSP, one batch", "SynFlow"],
                    crit_rows,
                ),
            ]
    if "capture" in after:
        lines += capture_lines(after["capture"])
    return "\n".join(lines).rstrip() + "\n"


def capture_lines(entry: dict[str, Any]) -> list[str]:
    """Section 5 of the page: the fresh-process runs and the CNN's front-ends side by side."""
    from benchmarks.capture import LLAMA_7B, TIMEOUT

    records = entry["records"]
    load, versions = records["load_average"], records["versions"]
    runs = [*records["llm"].values(), *records["vit"].values()]
    cnn = records["cnn"]
    s, plan_step = cnn["seconds"], f"plan_pruning({cnn['criterion']})"
    same = cnn["removed"]["fx"] == cnn["removed"]["export"]
    return [
        "## 5. Capture front-ends at scale",
        "",
        f"{_header(entry)} Load average {load['start'][0]:.1f} at the start and {load['end'][0]:.1f} at the end "
        f"(1 minute; {entry['machine']['cores']} cores); transformers {versions['transformers']}, torch-pruning "
        f"{versions['torch_pruning']}.",
        "",
        "Fresh processes (`benchmarks/capture.py`): each row is one cold run in a new Python process that builds "
        "the model, with random weights or on the `meta` device (no weights at all), and runs the listed steps "
        "once; times exclude the imports and the construction (build). Peak RSS: the process's `ru_maxrss` at its "
        f"end, imports included (in brackets: after the imports alone); GB = 10^9 bytes. A run is stopped after "
        f"{TIMEOUT} s. Llama: transformers `LlamaForCausalLM(LlamaConfig("
        + ", ".join(f"{k}={v}" for k, v in LLAMA_7B.items())
        + "))` called as `model(input_ids=<1 x 16>, use_cache=False)`; plan_pruning with `criterion='random'`. "
        "ViT: `timm.create_model('deepseek_vit_412m')` at its default input size.",
        "",
        *_table(
            [
                "model",
                "weights",
                "frontend (used)",
                "input",
                "params",
                "build, s",
                "find_blocks",
                "plan_pruning(random)",
                "apply_plan",
                "peak RSS, GB",
                "result",
            ],
            [_fresh_row(r) for r in runs],
        ),
        f"{cnn['name']}, input {'x'.join(map(str, cnn['input']))}, in this process: milliseconds, medians as in "
        f"the header; `{plan_step}` with n={cnn['p']}. torch-pruning as in section 4: `deepcopy` + `MetaPruner` "
        f"+ one magnitude step of 30% of the filters, {_ms(s['torch_pruning'])} ms; its "
        f"`DependencyGraph().build_dependency` alone {_ms(s['torch_pruning_graph'])} ms. Both front-ends remove "
        + ("the same blocks" if same else "different blocks")
        + f" ({', '.join(cnn['removed']['fx'])}).",
        "",
        *_table(
            ["frontend", "find_blocks", plan_step, "apply_plan", "pipeline", "pipeline / torch-pruning"],
            [
                [
                    frontend,
                    *(_ms(s[frontend][k]) for k in ("find_blocks", plan_step, "apply_plan", "pipeline")),
                    f"{s[frontend]['pipeline'] / s['torch_pruning']:.2f}",
                ]
                for frontend in FRONTENDS
            ],
        ),
    ]


def _fresh_row(r: dict[str, Any]) -> list[Any]:
    used = r.get("frontend_used")
    rss = f"{r['peak_rss'] / 1e9:.2f} ({r['rss_after_imports'] / 1e9:.2f})" if "peak_rss" in r else "—"
    if "units" in r:
        result = f"{r['removable']} of {r['units']} units removable"
    elif "removed" in r:
        result = f"{len(r['removed'])} removed: {_count(r['params'])} → {_count(r['params_pruned'])} params"
    else:
        result = "—"
    return [
        r["name"],
        "meta" if r["meta"] else "random",
        r["frontend"] + (f" ({used})" if used and used != r["frontend"] else ""),
        _shape_cell(r.get("input")),
        _count(r["params"]) if "params" in r else "—",
        f"{r['build_seconds']:.1f}" if "build_seconds" in r else "—",
        *(_seconds_cell(r, step) for step in ("find_blocks", "plan_pruning", "apply_plan")),
        rss,
        result,
    ]


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def _shape_cell(shape: Any) -> str:
    if isinstance(shape, dict):
        return ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in shape.items())
    return "x".join(map(str, shape)) if shape else "—"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="tiny models and budgets (what the test suite runs)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--criterion-batches", type=int, default=2)
    parser.add_argument(
        "--label",
        default="after",
        help="store the results under this label; 'before' is shown as the baseline of the fixes",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS,
        help=f"results JSON (default {RESULTS}; the capture section goes to capture.json beside it)",
    )
    parser.add_argument("--report", action="store_true", help="only regenerate the report from the results")
    parser.add_argument("--report-path", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    if not args.report:
        budget = {
            "threads": args.threads,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "criterion_batches": args.criterion_batches,
        }
        run(
            args.sections,
            quick=args.quick,
            budget=budget,
            label=args.label,
            path=args.output,
            progress=lambda msg: print(f"[speed] {msg}", flush=True),
        )
    args.report_path.parent.mkdir(parents=True, exist_ok=True)
    args.report_path.write_text(report(load_all(args.output)))
    print(f"wrote {args.report_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
