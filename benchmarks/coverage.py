"""Coverage of the model zoos: does every residual model in torchvision and timm prune exactly?

For every torchvision classification model and one model per timm family (the variant
with the fewest parameters, ``test_*`` models excluded), random init, small input where the model allows it:
trace -> find_blocks -> prune_layers(criterion="random", n=min(2, removable)) (single residual
branches, ``granularity="sublayer"``, where no whole block is removable) -> verify ->
forward + backward of the pruned model -> torch.save(state_dict) + PruningPlan JSON round
trip into a freshly built model (outputs must match).

Each model runs in its own subprocess (a crash or a hang loses only that model) and its
record is written atomically into ``benchmarks/results/coverage.json`` as soon as it is
done; a rerun skips the models already there (``--force`` redoes them). The report
``docs/coverage.md`` is generated from that file, never edited by hand.

    python -m benchmarks.coverage                     # the full sweep (about 40 minutes on 2 CPU cores)
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
from pathlib import Path
from typing import Any

from benchmarks._common import machine, write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "coverage.json"
REPORT = ROOT / "docs" / "coverage.md"
COMMAND = "python -m benchmarks.coverage"
SMALL = 64  # first try at this input size; the model's own size if it refuses it
DEFAULT_TIMEOUT = 300.0  # seconds per model


def _meta_params(name: str) -> float:
    """Parameter count of a timm model built on the meta device (no memory, no init); inf if it cannot."""
    import timm
    import torch

    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
    except Exception:
        return float("inf")
    return float(sum(p.numel() for p in model.parameters()))


def smallest(names: list[str]) -> str:
    """The variant with the fewest parameters (timm's ``test_*`` models excluded), ties by name."""
    candidates = [n for n in names if not n.startswith("test_")] or names
    return min(candidates, key=lambda n: (_meta_params(n), len(n), n))


def zoo_models() -> list[str]:
    """Every torchvision classification model and the smallest model of every timm family (module)."""
    import timm  # noqa: F401 - registers the models
    import torchvision
    from timm.models._registry import _module_to_models
    from tqdm import tqdm

    specs = [f"torchvision:{n}" for n in torchvision.models.list_models(module=torchvision.models)]
    families = [(family, sorted(names)) for family, names in sorted(_module_to_models.items()) if names]
    for _, names in tqdm(families, desc="choosing the smallest model per timm family", unit="family"):
        specs.append(f"timm:{smallest(names)}")
    return specs


def _build(spec: str):
    import timm
    import torchvision

    zoo, name = spec.split(":", 1)
    if zoo == "timm":
        model = timm.create_model(name, pretrained=False)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        native = tuple(cfg.get("input_size", (3, 224, 224)))
        fixed = bool(cfg.get("fixed_input_size", False))
    else:
        model = torchvision.models.get_model(name, weights=None)
        native = (3, 299, 299) if name == "inception_v3" else (3, 224, 224)
        fixed = False
    return model, native, fixed


def _flops(model, x) -> int | None:
    from residual_prune.flops import count_flops_by_module

    counts = count_flops_by_module(model, (x,))
    return None if counts is None else counts[""]


def _first_tensor(out):
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return _first_tensor(out[0])
    if isinstance(out, dict):
        return _first_tensor(next(iter(out.values())))
    raise TypeError(f"output of type {type(out).__name__}")


def check_model(spec: str) -> dict[str, Any]:
    """Run the whole pipeline on one model; return its record (never raises)."""
    import torch

    import residual_prune as rp

    torch.manual_seed(0)
    record: dict[str, Any] = {"model": spec, "zoo": spec.split(":")[0], "status": "error", "error": None}
    start = time.perf_counter()
    stage = "build"
    try:
        model, native, fixed = _build(spec)
        record["params_before"] = sum(p.numel() for p in model.parameters())
        stage = "trace"
        sizes = [native] if fixed or native[1] <= SMALL else [(native[0], SMALL, SMALL), native]
        for i, size in enumerate(sizes):
            x = torch.randn(2, *size)
            try:
                blocks = rp.find_blocks(model, x)
                break
            except rp.DataError:
                if i == len(sizes) - 1:
                    raise
        record.update(
            input_size=list(size),
            traced=True,
            joins=sum(b.joins for b in blocks),
            units=len(blocks),
            removable=sum(b.removable for b in blocks),
            excluded=dict(Counter(_short(b.reason) for b in blocks if not b.removable)),
        )
        if not blocks:
            record.update(status="not residual", seconds=round(time.perf_counter() - start, 2))
            return record
        granularity, removable = "block", record["removable"]
        if removable == 0:  # no whole block can go: try single residual branches
            stage = "sublayers"
            branches = rp.find_blocks(model, x, granularity="sublayer")
            granularity, removable = "sublayer", sum(b.removable for b in branches)
            record["removable_sublayers"] = removable
            if removable == 0:
                record.update(status="no removable block", seconds=round(time.perf_counter() - start, 2))
                return record
        record["granularity"] = granularity
        stage = "plan"
        plan = rp.plan_pruning(
            model, criterion="random", n=min(2, removable), example_inputs=x, seed=0, granularity=granularity
        )
        pruned = rp.apply_plan(model, plan)
        record["removed"] = plan.removed
        stage = "verify"
        record["verify_max_error"] = rp.verify(model, pruned, plan, x)
        stage = "flops"
        record["flops_before"], record["flops_after"] = _flops(model, x[:1]), _flops(pruned, x[:1])
        record["params_after"] = sum(p.numel() for p in pruned.parameters())
        stage = "forward+backward"
        pruned.train()
        _first_tensor(pruned(x)).float().sum().backward()
        stage = "save+reload"
        with tempfile.TemporaryDirectory() as tmp:
            plan.save(Path(tmp) / "plan.json")
            torch.save(pruned.state_dict(), Path(tmp) / "pruned.pt")
            fresh = rp.apply_plan(_build(spec)[0], rp.PruningPlan.load(Path(tmp) / "plan.json"))
            fresh.load_state_dict(torch.load(Path(tmp) / "pruned.pt", weights_only=True))
        with torch.no_grad():
            expected = _first_tensor(pruned.eval()(x))
            record["roundtrip_max_error"] = float((_first_tensor(fresh.eval()(x)) - expected).abs().max())
        if record["roundtrip_max_error"] != 0:
            raise AssertionError(f"reloaded model differs by {record['roundtrip_max_error']:.3g}")
        record["status"] = "pruned"
    except Exception as exc:  # a record of the failure is the point of the sweep
        record["error"] = f"{stage}: {type(exc).__name__}: {str(exc)[:400]}"
        record["traceback"] = traceback.format_exc(limit=-3)[-1500:]
        record.setdefault("traced", stage not in ("build", "trace"))
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


def _save(records: dict[str, dict[str, Any]]) -> None:
    data = {"command": COMMAND, "models": sorted(records.values(), key=lambda r: r["model"])}
    write_json_atomic(RESULTS, data)


def _run_isolated(spec: str, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "record.json"
        cmd = [sys.executable, "-m", "benchmarks.coverage", "--one", spec, "--record", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return {
                "model": spec,
                "zoo": spec.split(":")[0],
                "status": "error",
                "traced": None,
                "error": f"timeout: more than {timeout:.0f} s",
                "seconds": timeout,
            }
        if out.exists():
            return json.loads(out.read_text())
        return {
            "model": spec,
            "zoo": spec.split(":")[0],
            "status": "error",
            "traced": None,
            "error": f"crash: exit code {proc.returncode}: {proc.stderr[-300:]}",
        }


def sweep(
    specs: list[str], *, force: bool = False, timeout: float = DEFAULT_TIMEOUT, only: bool = False
) -> dict[str, dict[str, Any]]:
    """Run the models not yet recorded (all with ``force``); ``only`` drops records of other models."""
    from tqdm import tqdm

    records = _load()
    if only:
        records = {spec: r for spec, r in records.items() if spec in specs}
    todo = [s for s in specs if force or s not in records]
    environment = {**machine(), "threads_per_model": 1}
    bar = tqdm(todo, desc="coverage", unit="model")
    for spec in bar:
        bar.set_postfix_str(spec)
        records[spec] = {**_run_isolated(spec, timeout), "timeout": timeout, "machine": environment}
        _save(records)
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


def report(records: dict[str, dict[str, Any]]) -> str:
    """The Markdown page, labelled with the environments stored with the records (those that produced them)."""
    rows = sorted(records.values(), key=lambda r: (r["zoo"], r["model"]))
    residual = [r for r in rows if r.get("units")]
    pruned = [r for r in residual if r["status"] == "pruned"]
    plain = [r for r in rows if r["status"] == "not residual"]
    errors = [r for r in rows if r["status"] == "error"]
    stuck = [r for r in residual if r["status"] == "no removable block"]
    total = len(residual) + sum(1 for r in errors if not r.get("units"))
    lines = [
        "# Model-zoo coverage",
        "",
        f"Generated by `{COMMAND}` from `benchmarks/results/coverage.json`; do not edit by hand.",
        f"{_machine_line(rows)} Random init, no data. Time limit per model: {_timeouts(rows)}.",
        "",
        f"**{len(pruned)} of {total} residual models pruned exactly**; **{len(pruned) + len(stuck)} of {total} "
        f"({100 * (len(pruned) + len(stuck)) / max(total, 1):.1f}%) handled exactly**: pruned and verified, or "
        f"reported with no removable block and the reason (every unit downsamples, its shortcut is not the "
        f"identity, ...). {len(rows)} models: {len(plain)} not residual (reported as such), {len(errors)} "
        f"failure{'s' if len(errors) != 1 else ''} (listed below with their cause; a model that could not be "
        "traced counts as residual).",
        "",
        'Per model: trace, `find_blocks`, `prune_layers(criterion="random", n=min(2, removable))`, `verify`, '
        "forward + backward of the pruned model, `state_dict` + plan JSON round trip into a fresh model. "
        "*joins*: residual additions found; *units*: residual units reported; *removable*: removable units, or, "
        'where none is, the removable single branches (`granularity="sublayer"`) that were pruned instead; '
        "*verify*: max abs error against the original with the removed blocks as identities.",
        "",
        "| model | status | input | joins | units | removable | params before → after | FLOPs before → after "
        "| verify | s |",
        "| --- | --- | --- | ---: | ---: | --- | --- | --- | ---: | ---: |",
    ]
    for r in rows:
        size = "x".join(map(str, r.get("input_size", []))) or "-"
        params = f"{_fmt(r.get('params_before'))} → {_fmt(r.get('params_after'))}" if r.get("params_after") else "-"
        flops = f"{_fmt(r.get('flops_before'))} → {_fmt(r.get('flops_after'))}" if r.get("flops_after") else "-"
        error = r.get("verify_max_error")
        removable = r.get("removable", "-")
        if r.get("granularity") == "sublayer":
            removable = f"0 ({r['removable_sublayers']} branches)"
        lines.append(
            f"| {r['model']} | {r['status']} | {size} | {r.get('joins', '-')} | {r.get('units', '-')} | "
            f"{removable} | {params} | {flops} | {'-' if error is None else f'{error:.1e}'} | "
            f"{r.get('seconds', '-')} |"
        )
    lines += ["", "## Failures", ""]
    lines += [f"- `{r['model']}`: {r['error']}" for r in errors] or ["None."]
    lines += ["", "## Residual models with no removable block", ""]
    lines += [f"- `{r['model']}`: " + "; ".join(f"{k} ({v}x)" for k, v in r["excluded"].items()) for r in stuck] or [
        "None."
    ]
    reasons = Counter()
    for r in residual:
        reasons.update(r.get("excluded", {}))
    lines += ["", "## Why units are kept (all models)", "", "| reason | units |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in reasons.most_common()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="MODEL specs (default: the whole zoo)")
    parser.add_argument("--force", action="store_true", help="redo models already in the results")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per model (default: %(default)s)"
    )
    parser.add_argument("--report", action="store_true", help="only regenerate docs/coverage.md")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--record", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
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
        specs = args.models or zoo_models()
        records = sweep(specs, force=args.force, timeout=args.timeout, only=not args.models)
    text = report(records)  # labelled with the versions that produced the results, not this process's
    REPORT.write_text(text)
    print(text.split("\n")[5])
    return 0


if __name__ == "__main__":
    sys.exit(main())
