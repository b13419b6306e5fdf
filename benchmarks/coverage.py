"""Coverage of the model zoos: does every residual model of each zoo prune exactly?

The zoos are those of :mod:`benchmarks.zoos`: torchvision's classification, detection,
segmentation, video and optical-flow models, one model per timm family (the variant with the
fewest parameters, ``test_*`` models excluded), one tiny model per Hugging Face transformers
family, segmentation_models_pytorch's architectures and MONAI's residual networks. For every
model, random init, small input where the model allows it, its example inputs in the form it is
called with (a tensor, positional arguments or keyword arguments), passed as they are:
trace -> find_blocks -> prune_layers(criterion="random", n=min(2, removable)) (single residual
branches, ``granularity="sublayer"``, where no whole block is removable) -> verify ->
forward + backward of the pruned model (the sum of its floating outputs) -> torch.save(state_dict)
+ PruningPlan JSON round trip into a freshly built model (outputs must match). A model that
cannot be built is recorded as ``not built``, with the cause.

Representatives: where a family's smallest variant has residual units but none removable because
every one carries downsampling (one block per stage, as ``resnest14d``), its zoo's next variants
of that family (``Zoo.variants``: timm's, in increasing parameter count) are checked in turn, at
most ``REPRESENTATIVE_TRIES`` of them, and the first with a removable unit (block or single branch)
stands for the family: the record keeps the family's spec as ``model`` and the smallest's name as
``smallest``, holds the representative's results, names it as ``representative`` (None where no
variant checked has a removable unit: the smallest's results are kept) and sums up every variant
checked in ``variants_checked``.

Report classes: a residual model none of whose units has an identity shortcut around a
shape-keeping computation (every unit carries downsampling, has a shortcut that is not the
identity, a main path through a layer outside its branches, or is not called as
``out = block(x, ...)``) has residual additions but no skippable
unit: it is no target for layer pruning, is listed apart with its reasons and is left out of the
"N of M residual models pruned exactly" counts, whose lines say how many were set aside. Every
other model that did not prune (an error, a verify mismatch, units kept for other reasons) counts
as a failure and is listed with its cause.

Each model runs in its own subprocess (a crash or a hang loses only that model) and its
record is written atomically into ``benchmarks/results/coverage.json`` as soon as it is
done; a rerun skips the models already there (``--force`` redoes them). The report
``docs/coverage.md`` is generated from that file, never edited by hand.

    python -m benchmarks.coverage                     # every zoo (torchvision and timm: about 40 minutes on 2 cores)
    python -m benchmarks.coverage --zoo smp monai     # some zoos (the records of the others are kept)
    python -m benchmarks.coverage --models timm:resnet18 torchvision:vit_b_16
    python -m benchmarks.coverage --report            # regenerate docs/coverage.md only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import zoos
from benchmarks._common import machine, write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "coverage.json"
REPORT = ROOT / "docs" / "coverage.md"
COMMAND = "python -m benchmarks.coverage"
DEFAULT_TIMEOUT = 300.0  # seconds per model
REPRESENTATIVE_TRIES = 3  # a family's next variants checked at most, where its smallest has one block per stage
DOWNSAMPLING = "it carries downsampling"  # the kind of reason (as `_short` writes it) of such blocks
# the kinds of reason of a unit with no identity shortcut around a shape-keeping computation: a model
# whose every unit has one of them has residual additions but nothing a layer pruner could skip
NOT_SKIPPABLE = (
    DOWNSAMPLING,
    "its shortcut is not the identity",
    "it takes ",
    "it is not called as ",
    "`...` on its main path is outside any residual branch",  # its output is not its input plus branches
)


def zoo_models(names: list[str] | None = None) -> list[str]:
    """The specs of every model of the zoos ``names`` (default: every registered zoo)."""
    return zoos.list_models(names)


def _one_sample(inputs: Any) -> Any:
    """The inputs of one sample: a batched tensor cut to its first row (a list of images is one already)."""
    import torch

    if isinstance(inputs, torch.Tensor):
        return inputs[:1]
    return tuple(a[:1] if isinstance(a, torch.Tensor) else a for a in inputs)


def _flops(model, inputs) -> int | None:
    """FLOPs of one sample, as the library counts them in its capture (fvcore's convention; keyword
    inputs, which fvcore cannot pass, are counted whole)."""
    from residual_prune.capture import capture

    sample = inputs if isinstance(inputs, Mapping) else _one_sample(inputs)
    try:
        flops = capture(model, sample, count_flops=True).flops
    except Exception:
        return None
    return None if flops is None else flops.get("")


def _max_difference(expected: Any, actual: Any) -> float:
    """Largest absolute difference between two outputs of the same structure (inf where ints differ)."""
    pairs = list(zip(zoos.output_tensors(expected), zoos.output_tensors(actual)))
    lengths = len(list(zoos.output_tensors(expected))), len(list(zoos.output_tensors(actual)))
    if lengths[0] != lengths[1] or any(a.shape != b.shape for a, b in pairs):
        raise AssertionError(f"the reloaded model's outputs have other shapes ({lengths[1]} tensors, not {lengths[0]})")
    largest = 0.0
    for a, b in pairs:
        if a.is_floating_point() or a.is_complex():
            difference = float((a - b).abs().max()) if a.numel() else 0.0
        else:
            difference = 0.0 if bool((a == b).all()) else float("inf")
        largest = max(largest, difference)
    return largest


def _failure(stage: str, exc: Exception) -> str:
    return f"{stage}: {type(exc).__name__}: {str(exc)[:400]}"


def check_model(spec: str) -> dict[str, Any]:
    """Run the whole pipeline on one model; return its record (never raises). Where every residual unit
    of the model carries downsampling and its zoo lists families, the record is that of the family's
    representative (see the module docstring), still keyed by ``spec``."""
    record = _check(spec)
    return _with_representative(spec, record) if _every_unit_downsamples(record) else record


def _every_unit_downsamples(record: dict[str, Any]) -> bool:
    """Whether the model has residual units but none removable, every one because it carries downsampling."""
    return record["status"] == "no removable block" and set(record.get("excluded") or {}) == {DOWNSAMPLING}


def _summary(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """What a variant's check found, for a family's record: its status and why its units stay."""
    keys = ("status", "units", "removable", "excluded", "error", "seconds")
    return {"name": name, **{k: record[k] for k in keys if record.get(k) is not None}}


def _with_representative(spec: str, smallest: dict[str, Any]) -> dict[str, Any]:
    """The record of the first of the family's next variants (in increasing parameter count, at most
    ``REPRESENTATIVE_TRIES``) that has a removable unit, keyed by ``spec``; else ``smallest``. Either way
    with ``smallest``, ``representative`` (None where no variant has one) and every variant checked."""
    zoo, name = zoos.split_spec(spec)
    variants = zoos.get_zoo(zoo).variants
    if variants is None:
        return smallest
    checked = [_summary(name, smallest)]
    family = {"smallest": name, "representative": None, "variants_checked": checked}
    try:
        candidates = variants(name)[:REPRESENTATIVE_TRIES]
    except Exception as exc:
        return {**smallest, **family, "variants_error": _failure("variants", exc)}
    seconds = smallest["seconds"]
    for variant in candidates:
        record = _check(f"{zoo}:{variant}")
        seconds += record["seconds"]
        checked.append(_summary(variant, record))
        if "granularity" in record:  # it has removable units: it stands for the family
            return {**record, "model": spec, **family, "representative": variant, "seconds": round(seconds, 2)}
    return {**smallest, **family, "seconds": round(seconds, 2)}


def _check(spec: str) -> dict[str, Any]:
    """The record of one model, as it is (no representative)."""
    import torch

    import residual_prune as rp
    from residual_prune.modes import rng_forked

    torch.manual_seed(0)
    zoo = spec.split(":")[0]
    record: dict[str, Any] = {"model": spec, "zoo": zoo, "status": "error", "error": None}
    record["zoo_package"] = zoos.package_version(zoo)
    start = time.perf_counter()
    stage = "build"
    try:
        model, inputs = zoos.build(spec)
        stage = "forward"
        with torch.no_grad():
            zoos.call(model, inputs)
    except Exception as exc:  # a model the zoo cannot make or run is a result too, not a failure of the library
        record.update(status="not built", error=_failure(stage, exc), traced=False)
        record["traceback"] = traceback.format_exc(limit=-3)[-1500:]
        record["seconds"] = round(time.perf_counter() - start, 2)
        return record
    stage = "trace"
    try:  # from here on, a failure is the library's
        record["params_before"] = sum(p.numel() for p in model.parameters())
        record["inputs"] = zoos.describe(inputs)
        if isinstance(inputs, torch.Tensor):
            record["input_size"] = list(inputs.shape[1:])
        blocks = rp.find_blocks(model, inputs)
        record.update(
            traced=True,
            joins=sum(b.joins for b in blocks),
            units=len(blocks),
            removable=sum(b.removable for b in blocks),
            excluded=dict(Counter(_short(b.reason) for b in blocks if not b.removable)),
            frontend=getattr(blocks[0], "frontend", None) if blocks else None,  # the capture that found them
        )
        if not blocks:
            record.update(status="not residual", seconds=round(time.perf_counter() - start, 2))
            return record
        granularity, removable = "block", record["removable"]
        if removable == 0 and record["frontend"] != "fx":  # sub-layer removal rewrites torch.fx graphs only
            record.update(status="no removable block", seconds=round(time.perf_counter() - start, 2))
            return record
        if removable == 0:  # no whole block can go: try single residual branches
            stage = "sublayers"
            branches = rp.find_blocks(model, inputs, granularity="sublayer")
            granularity, removable = "sublayer", sum(b.removable for b in branches)
            record["removable_sublayers"] = removable
            if removable == 0:
                record.update(status="no removable block", seconds=round(time.perf_counter() - start, 2))
                return record
        record["granularity"] = granularity
        stage = "plan"
        plan = rp.plan_pruning(
            model, criterion="random", n=min(2, removable), example_inputs=inputs, seed=0, granularity=granularity
        )
        pruned = rp.apply_plan(model, plan)
        record["removed"] = plan.removed
        stage = "verify"
        record["verify_max_error"] = rp.verify(model, pruned, plan, inputs)
        stage = "flops"
        record["flops_before"], record["flops_after"] = _flops(model, inputs), _flops(pruned, inputs)
        record["params_after"] = sum(p.numel() for p in pruned.parameters())
        stage = "forward+backward"
        pruned.train(zoos.get_zoo(zoo).trains)  # detection models need targets in train mode
        zoos.training_loss(zoos.call(pruned, inputs)).backward()
        stage = "save+reload"
        with tempfile.TemporaryDirectory() as tmp:
            plan.save(Path(tmp) / "plan.json")
            torch.save(pruned.state_dict(), Path(tmp) / "pruned.pt")
            fresh = rp.apply_plan(zoos.build(spec)[0], rp.PruningPlan.load(Path(tmp) / "plan.json"))
            fresh.load_state_dict(torch.load(Path(tmp) / "pruned.pt", weights_only=True))
        with torch.no_grad():  # both calls draw the same random numbers (models that mask or sample)
            with rng_forked((pruned,)):
                expected = zoos.call(pruned.eval(), inputs)
            with rng_forked((fresh,)):
                record["roundtrip_max_error"] = _max_difference(expected, zoos.call(fresh.eval(), inputs))
        if record["roundtrip_max_error"] != 0:
            raise AssertionError(f"reloaded model differs by {record['roundtrip_max_error']:.3g}")
        record["status"] = "pruned"
    except Exception as exc:  # a record of the failure is the point of the sweep
        record["error"] = _failure(stage, exc)
        record["traceback"] = traceback.format_exc(limit=-3)[-1500:]
        record.setdefault("traced", stage != "trace")
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def _short(reason: str | None) -> str:
    """The kind of reason, without the shapes and names that differ per block."""
    reason = re.sub(r"`[^`]*`", "`...`", reason or "")
    return re.split(r"[:;(]|, so ", reason)[0].strip()


def _results() -> dict[str, Any]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def _load() -> dict[str, dict[str, Any]]:
    """The stored records, each with the environment that produced it (older files kept one for all)."""
    results = _results()
    shared = results.get("machine")
    records = {r["model"]: r for r in results.get("models", [])}
    for record in records.values():
        if shared and "machine" not in record:
            record["machine"] = shared
    return records


def _save(records: dict[str, dict[str, Any]], dropped: set[str]) -> None:
    """Write ``records`` over what the file holds now, less ``dropped``: two sweeps of different zoos may run
    at the same time (one per core), each keeping the other's records."""
    merged = {spec: r for spec, r in _load().items() if spec not in dropped}
    merged.update(records)
    data = {"command": COMMAND, "models": sorted(merged.values(), key=lambda r: r["model"])}
    write_json_atomic(RESULTS, data)


def _failed(spec: str, error: str, seconds: float | None = None) -> dict[str, Any]:
    return {
        "model": spec,
        "zoo": spec.split(":")[0],
        "status": "error",
        "traced": None,
        "error": error,
        "seconds": seconds,
    }


def _run_isolated(spec: str, timeout: float) -> dict[str, Any]:
    """Check one model in a fresh Python process (imports included in its time budget)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "record.json"
        cmd = [sys.executable, "-m", "benchmarks.coverage", "--one", spec, "--record", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return _failed(spec, f"timeout: more than {timeout:.0f} s", timeout)
        if out.exists():
            return json.loads(out.read_text())
        return _failed(spec, f"crash: exit code {proc.returncode}: {proc.stderr[-300:]}")


def _check_into(spec: str, path: str) -> None:
    """The forked child: check one model, write its record, say nothing (torch.export prints failing graphs)."""
    import warnings

    import torch

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    Path(path).write_text(json.dumps(check_model(spec)))


def _run_forked(spec: str, timeout: float) -> dict[str, Any]:
    """Check one model in a child forked from this process, which has imported torch, the zoos' packages
    and the library once: the isolation of a subprocess without paying the imports for every model."""
    import multiprocessing

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "record.json"
        child = multiprocessing.get_context("fork").Process(target=_check_into, args=(spec, str(out)))
        child.start()
        child.join(timeout)
        if child.is_alive():
            child.kill()
            child.join()
            return _failed(spec, f"timeout: more than {timeout:.0f} s", timeout)
        if out.exists():
            return json.loads(out.read_text())
        return _failed(spec, f"crash: exit code {child.exitcode}")


def _preload(specs: list[str]) -> None:
    """Import what the children share before forking them (no torch computation runs in this process)."""
    import importlib

    import residual_prune  # noqa: F401

    for zoo in sorted({spec.split(":")[0] for spec in specs}):
        package = zoos.get_zoo(zoo).package
        try:
            importlib.import_module(package.replace("-", "_"))
        except ImportError:
            pass  # the child records why the model cannot be built


def sweep(
    specs: list[str], *, force: bool = False, timeout: float = DEFAULT_TIMEOUT, only: bool = False
) -> dict[str, dict[str, Any]]:
    """Run the models not yet recorded (all with ``force``); ``only`` drops the records of models that
    the swept zoos no longer list (those of other zoos stay)."""
    from tqdm import tqdm

    stored = _load()
    dropped: set[str] = set()
    if only:  # models no longer in the swept zoos
        swept = {spec.split(":")[0] for spec in specs}
        dropped = {spec for spec, r in stored.items() if spec not in specs and r["zoo"] in swept}
    records = {spec: r for spec, r in stored.items() if spec not in dropped}
    todo = [s for s in specs if force or s not in records]
    done: dict[str, dict[str, Any]] = {}
    environment = {**machine(), "threads_per_model": 1}
    forked = sys.platform == "linux"
    if forked:
        _preload(todo)
    bar = tqdm(todo, desc="coverage", unit="model")
    for spec in bar:
        bar.set_postfix_str(spec)
        record = _run_forked(spec, timeout) if forked else _run_isolated(spec, timeout)
        records[spec] = done[spec] = {**record, "timeout": timeout, "machine": environment}
        _save(done, dropped)
    return records


def _fmt(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _timeouts(rows: list[dict[str, Any]]) -> str:
    limits = Counter(r.get("timeout", DEFAULT_TIMEOUT) for r in rows)
    common = limits.most_common(1)[0][0] if limits else DEFAULT_TIMEOUT
    others = [f"`{r['model']}` {r['timeout']:.0f} s" for r in rows if r.get("timeout", DEFAULT_TIMEOUT) != common]
    return f"{common:.0f} s" + (f" ({', '.join(others)}: rerun with `--timeout`)" if others else "")


def _environment(info: dict[str, Any]) -> str:
    return (
        f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores, one thread per model; "
        f"Python {info.get('python', '?')}, torch {info.get('torch', '?')}, "
        f"torchvision {info.get('torchvision', '?')}, timm {info.get('timm', '?')}"
    )


def _machine_line(rows: list[dict[str, Any]]) -> str:
    """The environments that produced the records (each record keeps its own), with how many records each."""
    counts = Counter(_environment(r["machine"]) for r in rows if r.get("machine"))
    unknown = sum(1 for r in rows if not r.get("machine"))
    if not counts:
        return "Machine and library versions: not recorded with the results."
    if len(counts) == 1 and not unknown:
        return f"Machine: {next(iter(counts))}."
    parts = [f"{env} ({n} models)" for env, n in counts.most_common()]
    parts += [f"not recorded ({unknown} models)"] if unknown else []
    return f"Machines (the results come from {len(parts)} environments): {'; '.join(parts)}."


def _no_skippable_unit(record: dict[str, Any]) -> bool:
    """Whether the model has residual additions but no unit a layer pruner could skip: none of its units
    has an identity shortcut around a shape-keeping computation (every reason is one of ``NOT_SKIPPABLE``)."""
    excluded = record.get("excluded") or {}
    return (
        record["status"] == "no removable block"
        and bool(excluded)
        and all(k.startswith(NOT_SKIPPABLE) for k in excluded)
    )


def _is_failure(record: dict[str, Any]) -> bool:
    """Whether the check of the model failed (an error, a timeout, a crash, a status the report does not know)."""
    return record["status"] not in ("pruned", "not residual", "not built", "no removable block")


def _cause(record: dict[str, Any]) -> str:
    """The recorded error on one line (a Markdown list item), or that there is none."""
    return " ".join(str(record.get("error") or "no cause recorded").split())


def _reasons(record: dict[str, Any]) -> str:
    """Why the model's units stay, by kind, with how many units each."""
    return "; ".join(f"{k} ({v}x)" for k, v in (record.get("excluded") or {}).items()) or "no reason recorded"


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many models pruned, handled, residual (a model that failed before its blocks were counted
    counts as residual, one with no skippable unit does not), set aside with no skippable unit, not
    residual, failed and not built."""
    residual = [r for r in rows if r.get("units") and not _no_skippable_unit(r)]
    pruned = sum(r["status"] == "pruned" for r in residual)
    failures = [r for r in rows if _is_failure(r)]
    return {
        "pruned": pruned,
        "handled": pruned + sum(r["status"] == "no removable block" for r in residual),
        "residual": len(residual) + sum(1 for r in failures if not r.get("units")),
        "aside": sum(_no_skippable_unit(r) for r in rows),
        "plain": sum(r["status"] == "not residual" for r in rows),
        "errors": len(failures),
        "unbuilt": sum(r["status"] == "not built" for r in rows),
        "models": len(rows),
    }


def _zoo_line(zoo: str, rows: list[dict[str, Any]]) -> str:
    """One zoo's summary, with the versions of the package its models came from."""
    c = _counts(rows)
    packages = sorted({r["zoo_package"] for r in rows if r.get("zoo_package")})
    label = f"`{zoo}`" + (f" ({', '.join(packages)})" if packages else "")
    return (
        f"- {label}: **{c['pruned']} of {c['residual']} residual models pruned exactly**; {c['aside']} with "
        f"residual additions but no skippable unit (listed below); {c['handled']} of {c['residual']} "
        f"({100 * c['handled'] / max(c['residual'], 1):.1f}%) handled exactly; {c['models']} models: "
        f"{c['plain']} not residual, {c['errors']} failure{'s' if c['errors'] != 1 else ''}, "
        f"{c['unbuilt']} not built."
    )


def _representatives_line(rows: list[dict[str, Any]]) -> str:
    """How representatives are chosen, which families got one and which had none among the variants checked."""
    chosen = [f"`{r['model']}` by `{r['representative']}`" for r in rows if r.get("representative")]
    missing = [
        f"`{r['model']}` ({', '.join(v['name'] for v in r['variants_checked'][1:]) or 'no larger variant'})"
        for r in rows
        if r.get("smallest") and not r.get("representative")
    ]
    return (
        "Representatives: a family is checked on its smallest variant; where every residual unit of that "
        "one carries downsampling (one block per stage), its next variants in increasing parameter count "
        f"(at most {REPRESENTATIVE_TRIES}) are checked and the first with a removable unit stands for the "
        f"family, whose row and counts it fills. Families with a representative: {', '.join(chosen) or 'none'}."
        + (f" No variant checked had a removable unit for {', '.join(missing)}." if missing else "")
    )


def _variants_note(record: dict[str, Any]) -> str:
    """The larger variants checked for a family that got no representative, with why their units stay."""
    larger = (record.get("variants_checked") or [])[1:]
    return "".join(f"; larger variant `{v['name']}`: {_finding(v)}" for v in larger)


def _finding(summary: dict[str, Any]) -> str:
    """What the check of a variant found: why its units stay, its error, or its status."""
    if summary.get("excluded"):
        return _reasons(summary)
    return _cause(summary) if summary.get("error") else summary["status"]


def report(records: dict[str, dict[str, Any]]) -> str:
    """The Markdown page, labelled with the environments stored with the records (those that produced them)."""
    rows = sorted(records.values(), key=lambda r: (r["zoo"], r["model"]))
    residual = [r for r in rows if r.get("units")]
    errors = [r for r in rows if _is_failure(r)]
    unbuilt = [r for r in rows if r["status"] == "not built"]
    aside = [r for r in residual if _no_skippable_unit(r)]
    stuck = [r for r in residual if r["status"] == "no removable block" and not _no_skippable_unit(r)]
    c = _counts(rows)
    total = c["residual"]
    by_zoo: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_zoo.setdefault(r["zoo"], []).append(r)
    lines = [
        "# Model-zoo coverage",
        "",
        f"Generated by `{COMMAND}` from `benchmarks/results/coverage.json`; do not edit by hand.",
        f"{_machine_line(rows)} Random init, no data. Time limit per model: {_timeouts(rows)}.",
        "",
        f"**{c['pruned']} of {total} residual models pruned exactly**; {len(aside)} more with residual "
        "additions but no skippable unit, no target for layer pruning (listed below, apart from these counts); "
        f"**{c['handled']} of {total} ({100 * c['handled'] / max(total, 1):.1f}%) handled exactly**: pruned and "
        "verified, or reported with no removable block and the reason (a module called twice, a U-Net long "
        f"skip, ...). {len(rows)} models: {c['plain']} not residual (reported as such), {len(errors)} "
        f"failure{'s' if len(errors) != 1 else ''} (listed below with their cause; a model that could not be "
        f"traced counts as residual), {len(unbuilt)} not built (the zoo could not make them or run them on "
        "the inputs it made; listed below).",
        "",
        *[_zoo_line(zoo, zoo_rows) for zoo, zoo_rows in by_zoo.items()],
        "",
        _representatives_line(rows),
        "",
        'Per model: trace, `find_blocks`, `prune_layers(criterion="random", n=min(2, removable))`, `verify`, '
        "forward + backward of the pruned model (the sum of its floating outputs), `state_dict` + plan JSON "
        "round trip into a fresh model. *input*: the shape of one sample where the model takes one batched "
        "tensor (batch 2), else the shapes of all its arguments; *joins*: residual additions found; *units*: "
        "residual units reported; *removable*: removable units, or, "
        'where none is, the removable single branches (`granularity="sublayer"`) that were pruned instead; '
        "*verify*: max abs error against the original with the removed blocks as identities.",
        "",
        "| model | status | input | joins | units | removable | params before → after | FLOPs before → after "
        "| verify | s |",
        "| --- | --- | --- | ---: | ---: | --- | --- | --- | ---: | ---: |",
    ]
    for r in rows:
        size = r.get("inputs") or "x".join(map(str, r.get("input_size", []))) or "-"
        params = f"{_fmt(r.get('params_before'))} → {_fmt(r.get('params_after'))}" if r.get("params_after") else "-"
        flops = f"{_fmt(r.get('flops_before'))} → {_fmt(r.get('flops_after'))}" if r.get("flops_after") else "-"
        error = r.get("verify_max_error")
        removable = r.get("removable", "-")
        if r.get("granularity") == "sublayer":
            removable = f"0 ({r['removable_sublayers']} branches)"
        model = r["model"] + (f" (as `{r['representative']}`)" if r.get("representative") else "")
        lines.append(
            f"| {model} | {r['status']} | {size} | {r.get('joins', '-')} | {r.get('units', '-')} | "
            f"{removable} | {params} | {flops} | {'-' if error is None else f'{error:.1e}'} | "
            f"{r.get('seconds', '-')} |"
        )
    lines += ["", "## Failures", ""]
    lines += [f"- `{r['model']}`: {_cause(r)}" for r in errors] or ["None."]
    lines += ["", "## Not built", ""]
    lines += [f"- `{r['model']}`: {_cause(r)}" for r in unbuilt] or ["None."]
    lines += ["", "## Residual models with no removable block", ""]
    lines += [f"- `{r['model']}`: {_reasons(r)}" for r in stuck] or ["None."]
    lines += [
        "",
        "## Residual additions but no skippable unit",
        "",
        "None of their units has an identity shortcut around a computation that keeps the shape: every one "
        "carries downsampling, has a shortcut that is not the identity, a main path through a layer outside its "
        "branches, or is not called as `out = block(x, ...)`. "
        "No layer of theirs can be skipped, so they are no target for layer pruning and are left out of the "
        "counts above.",
        "",
    ]
    lines += [f"- `{r['model']}`: {_reasons(r)}{_variants_note(r)}" for r in aside] or ["None."]
    reasons: Counter[str] = Counter()
    for r in residual:
        reasons.update(r.get("excluded", {}))
    lines += ["", "## Why units are kept (all models)", "", "| reason | units |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in reasons.most_common()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--models", nargs="+", metavar="ZOO:NAME", help="model specs (default: every model of --zoo)")
    which.add_argument(
        "--zoo",
        nargs="+",
        choices=zoos.list_zoos(),
        metavar="NAME",
        help=f"zoos (default: all: {', '.join(zoos.list_zoos())})",
    )
    parser.add_argument("--force", action="store_true", help="redo models already in the results")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per model (default: %(default)s)"
    )
    parser.add_argument("--report", action="store_true", help="only regenerate docs/coverage.md")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--record", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for spec in args.models or []:
        try:
            zoos.split_spec(spec)
        except ValueError as exc:
            parser.error(str(exc))
    if args.one:  # child process: one model, one record
        import warnings

        import torch

        warnings.filterwarnings("ignore")
        torch.set_num_threads(1)
        Path(args.record).write_text(json.dumps(check_model(args.one)))
        return 0
    if args.report:
        records = _load()
    else:
        specs = args.models or zoo_models(args.zoo)
        records = sweep(specs, force=args.force, timeout=args.timeout, only=not args.models)
    text = report(records)  # labelled with the versions that produced the results, not this process's
    REPORT.write_text(text)
    print("\n".join(line for line in text.splitlines() if "residual models pruned exactly**;" in line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
