"""Which capture front-end should ``find_blocks(frontend="auto")`` try first? Measured on the model zoos.

For every model of the chosen zoos (default: torchvision and timm, whose example inputs are
positional tensors, so that both front-ends apply; transformers' keyword inputs only reach
torch.export), ``find_blocks(model, inputs, frontend=f, count_flops=True)`` runs once for
``f`` in ``"fx"`` and ``"export"``, each in its own child process forked from this one (which has
imported torch, the library and the zoos' packages once), cold: one call, no warm-up, the model
built first and not timed. Each front-end gets the same time limit, build included. A record
keeps, per front-end, whether it succeeded (else the exception type and the first line of its
message), its wall time, and the units and removable units it found; where both succeeded,
whether they agree (the same unit names, removable flags and freed parameters) and every
disagreement.

Records go into ``benchmarks/results/frontends.json`` (written atomically after every model);
a rerun skips the models already there (``--force`` redoes them). The page ``docs/frontends.md``
is generated from that file, never edited by hand; its conclusion, the order ``"auto"`` should
try the front-ends in, is computed from the records.

    python -m benchmarks.frontends                        # torchvision and timm (hours on 2 cores)
    python -m benchmarks.frontends --zoo torchvision --limit 10
    python -m benchmarks.frontends --report               # regenerate docs/frontends.md only
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import zoos
from benchmarks._common import machine, shell_command, write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "frontends.json"
REPORT = ROOT / "docs" / "frontends.md"
COMMAND = "python -m benchmarks.frontends"
MODULE = "benchmarks.frontends"
FRONTENDS = ("fx", "export")
DEFAULT_ZOOS = ("torchvision", "timm")
DEFAULT_TIMEOUT = 120.0  # seconds per model and front-end, build included
MAX_DISAGREEMENTS = 20  # listed per model; the rest are counted
FALLS_BACK = ("TraceError", "DataError")  # the failures after which `auto` tries the next front-end


def _error(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__


def measure(spec: str, frontend: str) -> dict[str, Any]:
    """Build ``spec`` and time one cold ``find_blocks`` with ``frontend``; never raises. ``blocks`` lists
    ``[name, removable, params]`` of every unit found, for :func:`disagreements`."""
    import residual_prune as rp

    try:
        model, inputs = zoos.build(spec)
    except Exception as exc:
        return {"built": False, "error": _error(exc)}
    result: dict[str, Any] = {"built": True, "inputs": zoos.describe(inputs)}
    start = time.perf_counter()
    try:
        blocks = rp.find_blocks(model, inputs, frontend=frontend, count_flops=True)
    except Exception as exc:
        return {**result, "ok": False, "seconds": round(time.perf_counter() - start, 3), "error": _error(exc)}
    return {
        **result,
        "ok": True,
        "seconds": round(time.perf_counter() - start, 3),
        "error": None,
        "units": len(blocks),
        "removable": sum(b.removable for b in blocks),
        "blocks": [[b.name, b.removable, b.params] for b in blocks],
    }


def _measure_into(spec: str, frontend: str, path: str) -> None:
    """The forked child: measure, write the result, print nothing (torch.export prints failing graphs)."""
    import warnings

    import torch

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    Path(path).write_text(json.dumps(measure(spec, frontend)))


def run_forked(target: Callable[..., None], args: tuple[Any, ...], timeout: float) -> dict[str, Any]:
    """Run ``target(*args, path)`` in a child forked from this process and return the JSON it wrote to
    ``path``; ``{"error": "timeout: ..."}`` or ``{"error": "crash: ..."}`` where it wrote none in time."""
    import multiprocessing

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        child = multiprocessing.get_context("fork").Process(target=target, args=(*args, str(out)))
        child.start()
        child.join(timeout)
        if child.is_alive():
            child.kill()
            child.join()
            return {"error": f"timeout: more than {timeout:.0f} s", "timed_out": True}
        if out.exists():
            return json.loads(out.read_text())
        return {"error": f"crash: exit code {child.exitcode}"}


def disagreements(fx: list[list[Any]], export: list[list[Any]]) -> list[str]:
    """How two front-ends' units (``[name, removable, params]`` each) differ: names only one found,
    removable flags and freed parameters that differ, and the order where the names are the same."""
    a, b = {n: (r, p) for n, r, p in fx}, {n: (r, p) for n, r, p in export}
    found: list[str] = []
    found += [f"`{n}` found by fx only" for n in a if n not in b]
    found += [f"`{n}` found by export only" for n in b if n not in a]
    for name in (n for n in a if n in b):
        (fx_removable, fx_params), (ex_removable, ex_params) = a[name], b[name]
        if fx_removable != ex_removable:
            found.append(f"`{name}` removable: fx {fx_removable}, export {ex_removable}")
        if fx_params != ex_params:
            found.append(f"`{name}` params: fx {fx_params}, export {ex_params}")
    if not found and [n for n, *_ in fx] != [n for n, *_ in export]:
        found.append("the same units in another order")
    return found


def _outcome(result: dict[str, Any]) -> dict[str, Any]:
    """What a record keeps of one front-end's result."""
    keys = ("ok", "seconds", "error", "units", "removable", "timed_out")
    return {"ok": bool(result.get("ok")), **{k: result[k] for k in keys[1:] if k in result}}


def check_model(spec: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Both front-ends on one model, each in its own forked child; the model's record (never raises)."""
    zoo = zoos.split_spec(spec)[0]
    record: dict[str, Any] = {"model": spec, "zoo": zoo, "zoo_package": zoos.package_version(zoo)}
    results = {}
    for frontend in FRONTENDS:
        result = run_forked(_measure_into, (spec, frontend), timeout)
        if result.get("built") is False:
            return {**record, "status": "not built", "error": result["error"]}
        results[frontend] = result
        record["inputs"] = record.get("inputs") or result.get("inputs")  # None where a child timed out
    record.update(status="measured", **{f: _outcome(r) for f, r in results.items()})
    both = all(r.get("ok") for r in results.values())
    found = disagreements(results["fx"]["blocks"], results["export"]["blocks"]) if both else []
    record["agree"] = not found if both else None
    record["disagreements"] = found[:MAX_DISAGREEMENTS] + (
        [f"... and {len(found) - MAX_DISAGREEMENTS} more"] if len(found) > MAX_DISAGREEMENTS else []
    )
    return record


def _preload(specs: Sequence[str]) -> None:
    """Import what the children share before forking them (no torch computation runs in this process)."""
    import importlib

    import residual_prune  # noqa: F401  (imports torch.fx and torch.export)

    for zoo in sorted({zoos.split_spec(spec)[0] for spec in specs}):
        try:
            importlib.import_module(zoos.get_zoo(zoo).package.replace("-", "_"))
        except ImportError:
            pass  # the child records why the model cannot be built


def _load() -> dict[str, dict[str, Any]]:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    return {r["model"]: r for r in data.get("models", [])}


def _save(records: dict[str, dict[str, Any]]) -> None:
    data = {"command": COMMAND, "models": sorted(records.values(), key=lambda r: r["model"])}
    write_json_atomic(RESULTS, data)


def select(zoo_names: Sequence[str], limit: int | None = None) -> list[str]:
    """The specs of the zoos' models, the first ``limit`` of each zoo where given."""
    return [spec for zoo in zoo_names for spec in zoos.list_models([zoo])[:limit]]


def sweep(
    specs: Sequence[str], *, force: bool = False, timeout: float = DEFAULT_TIMEOUT, command: str = COMMAND
) -> dict[str, dict[str, Any]]:
    """Measure the models not yet recorded (all with ``force``), saving after each; every record stored."""
    from tqdm import tqdm

    records = _load()
    todo = [s for s in specs if force or s not in records]
    environment = {**machine(), "threads_per_model": 1}
    _preload(todo)
    bar = tqdm(todo, desc="frontends", unit="model")
    for spec in bar:
        bar.set_postfix_str(spec)
        record = check_model(spec, timeout)
        date = datetime.date.today().isoformat()
        records[spec] = {**record, "timeout": timeout, "machine": environment, "date": date, "command": command}
        _save(records)
    return records


# --- the report ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values``, linearly interpolated; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _times(rows: list[dict[str, Any]], frontend: str) -> str:
    """``median / p90`` seconds of ``frontend`` over the models it captured."""
    values = [r[frontend]["seconds"] for r in rows if r[frontend]["ok"]]
    return f"{_seconds(percentile(values, 50))} / {_seconds(percentile(values, 90))}"


def _ok(rows: list[dict[str, Any]], frontend: str) -> int:
    return sum(r[frontend]["ok"] for r in rows)


def _summary_row(label: str, rows: list[dict[str, Any]]) -> str:
    both = [r for r in rows if r["fx"]["ok"] and r["export"]["ok"]]
    agree = sum(bool(r["agree"]) for r in both)
    return (
        f"| {label} | {len(rows)} | {_ok(rows, 'fx')} | {_ok(rows, 'export')} | {len(both)} | {agree} | "
        f"{_times(rows, 'fx')} | {_times(rows, 'export')} |"
    )


def _spent(record: dict[str, Any], frontend: str) -> float:
    """Seconds ``frontend`` took on the model; its time limit where it ran out of time (a lower bound)."""
    result = record[frontend]
    if result.get("timed_out"):
        return record.get("timeout", DEFAULT_TIMEOUT)
    return result.get("seconds", 0.0)


def _auto_seconds(rows: list[dict[str, Any]], order: tuple[str, str]) -> float:
    """What ``"auto"`` trying ``order`` would have spent on ``rows``: the first front-end's time, plus the
    second's where the first failed."""
    return sum(_spent(r, order[0]) + (0.0 if r[order[0]]["ok"] else _spent(r, order[1])) for r in rows)


def _no_fallback(rows: list[dict[str, Any]], frontend: str) -> list[dict[str, Any]]:
    """The models on which ``frontend`` failed with an error after which ``auto`` does not try the other
    front-end (anything but ``FALLS_BACK``: ``auto`` raises it; a timeout or a crash stops it too)."""
    return [r for r in rows if not r[frontend]["ok"] and str(r[frontend].get("error")).split(":")[0] not in FALLS_BACK]


def _ratio(rows: list[dict[str, Any]]) -> float | None:
    """The median over the models both captured of export's time / fx's time."""
    both = [r for r in rows if r["fx"]["ok"] and r["export"]["ok"] and r["fx"]["seconds"]]
    ratios = [r["export"]["seconds"] / r["fx"]["seconds"] for r in both]
    return percentile(ratios, 50)


def conclusion(rows: list[dict[str, Any]]) -> str:
    """The order ``"auto"`` should try the front-ends in, and why, from the measured records."""
    if not rows:
        return "No model measured yet: no conclusion."
    n = len(rows)
    auto = {order: _auto_seconds(rows, order) for order in (FRONTENDS, FRONTENDS[::-1])}
    first, second = min(auto, key=lambda order: (auto[order], order != FRONTENDS))
    ratio = _ratio(rows)
    speed = "no model was captured by both" if ratio is None else _speed(first, ratio)
    rescued = sum(not r[first]["ok"] and r[second]["ok"] for r in rows)
    missed = n - _ok(rows, first)
    unsolved = sum(not r["fx"]["ok"] and not r["export"]["ok"] for r in rows)
    differ = sum(r["agree"] is False for r in rows)
    stuck = _no_fallback(rows, first)
    if not missed:
        fallback = f"{first} captures every model, so {second} is never tried"
    elif rescued:
        fallback = f"{second} catches {rescued} of its {missed} failures, so it stays as the fallback"
    else:
        fallback = f"{second} catches none of its {missed} failures on these models"
    return (
        f"**`auto` should try {first} first, then {second}**: {first} succeeds on {_ok(rows, first)} of {n} "
        f"models ({100 * _ok(rows, first) / n:.0f}%; {second}: {_ok(rows, second)}, "
        f"{100 * _ok(rows, second) / n:.0f}%) and {speed}; {fallback}. Over these models `auto` would spend "
        f"{auto[(first, second)]:.1f} s in this order and {auto[(second, first)]:.1f} s in the other. "
        + (f"Neither captures {unsolved} of them. " if unsolved else "One of them at least captures every model. ")
        + (
            f"The front-ends disagree on {differ} of the models both capture (listed below), where the order "
            "decides what `auto` reports."
            if differ
            else "The front-ends agree on every model both capture."
        )
        + (
            f" {len(stuck)} of {first}'s failures are no TraceError or DataError (another error, a timeout, "
            f"a crash), after which `auto` does not try {second}: {', '.join(_names(stuck))}."
            if stuck
            else ""
        )
    )


def _names(rows: list[dict[str, Any]]) -> list[str]:
    return [f"`{r['model']}`" for r in rows]


def _speed(first: str, ratio: float) -> str:
    """``ratio`` (export / fx at the median) in words, from ``first``'s side."""
    faster = ratio if first == "fx" else 1 / ratio
    if faster >= 1:
        return f"is {faster:.1f} times as fast at the median of the models both capture"
    return f"is {1 / faster:.1f} times slower at the median of the models both capture (its failures cost less)"


def _environment(info: dict[str, Any] | None) -> str:
    if not info:
        return "not recorded"
    return (
        f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores, one thread per model; "
        f"Python {info.get('python', '?')}, torch {info.get('torch', '?')}, "
        f"torchvision {info.get('torchvision', '?')}, timm {info.get('timm', '?')}"
    )


def _header(records: list[dict[str, Any]]) -> list[str]:
    """The command, machines, versions and dates that produced the records."""
    commands = sorted({r.get("command", COMMAND) for r in records}) or [COMMAND]
    environments = Counter(_environment(r.get("machine")) for r in records)
    dates = sorted(r["date"] for r in records if r.get("date"))
    when = "-" if not dates else dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    limits = sorted({r.get("timeout", DEFAULT_TIMEOUT) for r in records}) or [DEFAULT_TIMEOUT]
    machines = "; ".join(f"{env} ({n} models)" if len(environments) > 1 else env for env, n in environments.items())
    return [
        f"Generated by `{COMMAND}` from `benchmarks/results/frontends.json`; do not edit by hand. "
        f"Measured by {', '.join(f'`{c}`' for c in commands)}.",
        "",
        f"Machine: {machines or 'not recorded'}. Date: {when}. Time limit per model and front-end, build "
        f"included: {', '.join(f'{t:.0f} s' for t in limits)}.",
    ]


def _inline(text: Any) -> str:
    """``text`` on one line of Markdown, its ``<`` kept as text (``<lambda>`` is no HTML tag)."""
    return " ".join(str(text).split()).replace("<", "&lt;")


def _model_row(r: dict[str, Any]) -> str:
    def cell(frontend: str) -> str:
        result = r[frontend]
        if result.get("timed_out"):
            return "timeout"
        if not result["ok"]:
            return "failed" if "seconds" not in result else f"failed ({result['seconds']:.2f} s)"
        return f"{result['seconds']:.2f} s, {result['units']} units ({result['removable']} removable)"

    agree = {True: "yes", False: "**no**", None: "-"}[r["agree"]]
    return f"| {r['model']} | {r.get('inputs') or '-'} | {cell('fx')} | {cell('export')} | {agree} |"


def report(records: dict[str, dict[str, Any]]) -> str:
    """The Markdown page of the records."""
    every = sorted(records.values(), key=lambda r: (r["zoo"], r["model"]))
    rows = [r for r in every if r["status"] == "measured"]
    unbuilt = [r for r in every if r["status"] != "measured"]
    by_zoo: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_zoo.setdefault(r["zoo"], []).append(r)
    lines = [
        "# Capture front-ends: torch.fx or torch.export",
        "",
        *_header(every),
        "",
        'Per model: `find_blocks(model, inputs, frontend=f, count_flops=True)` for `f` = `"fx"` (symbolic '
        'trace, shapes on fake tensors) and `"export"` (torch.export, non-strict, on fake tensors), each once, '
        "cold, in its own process forked after the imports; the model is built first, untimed. *agree*: "
        "both captured the model and found the same units, with the same removable flags and freed "
        "parameters. Times: median / 90th percentile in seconds over the models the front-end captured.",
        "",
        conclusion(rows),
        "",
        "| zoo | models | fx succeeded | export succeeded | both | agree | fx time (s) | export time (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        *[_summary_row(f"`{zoo}`", zoo_rows) for zoo, zoo_rows in by_zoo.items()],
    ]
    if len(by_zoo) > 1:
        lines.append(_summary_row("all", rows))
    for frontend in FRONTENDS:
        failed = [r for r in rows if not r[frontend]["ok"]]
        lines += ["", f"## {frontend} failures", ""]
        lines += [f"- `{r['model']}`: {_inline(r[frontend].get('error'))}" for r in failed] or ["None."]
    lines += ["", "## Disagreements", ""]
    lines += [f"- `{r['model']}`: {'; '.join(r['disagreements'])}" for r in rows if r["agree"] is False] or ["None."]
    lines += ["", "## Not built", ""]
    lines += [f"- `{r['model']}`: {_inline(r.get('error'))}" for r in unbuilt] or ["None."]
    lines += ["", "## Every model", "", "| model | input | fx | export | agree |", "| --- | --- | --- | --- | --- |"]
    lines += [_model_row(r) for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--zoo",
        nargs="+",
        choices=zoos.list_zoos(),
        default=list(DEFAULT_ZOOS),
        metavar="NAME",
        help="zoos (default: %(default)s)",
    )
    parser.add_argument("--limit", type=int, help="only the first N models of each zoo")
    parser.add_argument("--force", action="store_true", help="redo models already in the results")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per model and front-end (default: %(default)s)"
    )
    parser.add_argument("--report", action="store_true", help="only regenerate docs/frontends.md")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.report:
        records = _load()
    else:
        command = shell_command(MODULE, argv)
        records = sweep(select(args.zoo, args.limit), force=args.force, timeout=args.timeout, command=command)
    text = report(records)
    REPORT.write_text(text)
    print(conclusion([r for r in records.values() if r["status"] == "measured"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
