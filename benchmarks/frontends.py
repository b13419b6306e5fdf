"""Which capture front-end should ``find_blocks(frontend="auto")`` try first? Measured on the model zoos.

For every model of the chosen zoos (default: torchvision and timm, whose example inputs are
positional tensors, so that every front-end applies; transformers' keyword inputs do not reach
torch.fx), ``find_blocks(model, inputs, frontend=f, count_flops=True)`` runs once for ``f`` in
``"fx"``, ``"export"`` and ``"eager"``, each in its own child process forked from this one (which
has imported torch, the library and the zoos' packages once), cold: one call, no warm-up, the
model built first and not timed. Each front-end gets the same time limit, build included. A
record keeps, per front-end, whether it succeeded (else the exception type and the first line of
its message), its wall time, and the units and removable units it found; where two front-ends or
more succeeded, whether they all agree (the same unit names, removable flags and freed
parameters), the pairs that disagree and every difference.

The conclusion compares the orders of fx and export only: eager is ``"auto"``'s last resort by
design (it runs the model for real and sees only the path that one run takes); the page counts the
models only eager captures and its time relative to fx.

Records go into ``benchmarks/results/frontends.json`` (written atomically after every model);
a rerun skips the models already measured by every front-end (``--force`` redoes them; a record
without one of them, written before it was measured, is redone whole). Records without a
front-end still load and show ``-`` for it. The page ``docs/frontends.md`` is generated from that
file, never edited by hand; its conclusion, the order ``"auto"`` should try the front-ends in, is
computed from the records.

    python -m benchmarks.frontends                        # torchvision and timm (hours on 2 cores)
    python -m benchmarks.frontends --zoo torchvision --limit 10
    python -m benchmarks.frontends --report               # regenerate docs/frontends.md only
"""

from __future__ import annotations

import argparse
import datetime
import itertools
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
FRONTENDS = ("fx", "export", "eager")  # measured per model, in this order
ORDERED = ("fx", "export")  # the front-ends whose order `auto` tries is concluded from the records
LAST_RESORT = "eager"  # what `auto` tries after both (a real run: only the path that run takes)
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


def disagreements(
    first: list[list[Any]], second: list[list[Any]], names: tuple[str, str] = ("fx", "export")
) -> list[str]:
    """How two front-ends' units (``[name, removable, params]`` each; ``names``: the front-ends) differ:
    names only one found, removable flags and freed parameters that differ, and the order where the
    names are the same."""
    x, y = names
    a, b = {n: (r, p) for n, r, p in first}, {n: (r, p) for n, r, p in second}
    found: list[str] = []
    found += [f"`{n}` found by {x} only" for n in a if n not in b]
    found += [f"`{n}` found by {y} only" for n in b if n not in a]
    for name in (n for n in a if n in b):
        (a_removable, a_params), (b_removable, b_params) = a[name], b[name]
        if a_removable != b_removable:
            found.append(f"`{name}` removable: {x} {a_removable}, {y} {b_removable}")
        if a_params != b_params:
            found.append(f"`{name}` params: {x} {a_params}, {y} {b_params}")
    if not found and [n for n, *_ in first] != [n for n, *_ in second]:
        found.append("the same units in another order")
    return found


def compare(units: dict[str, list[list[Any]]]) -> dict[str, Any]:
    """The agreement of the front-ends that captured a model (``units``: each one's units, in
    :data:`FRONTENDS` order): ``agree`` (None under two front-ends), the ``disagreeing`` pairs, and
    the ``disagreements`` of every pair, each prefixed by its pair (the first ``MAX_DISAGREEMENTS``)."""
    pairs = list(itertools.combinations(units, 2))
    found = {(x, y): disagreements(units[x], units[y], (x, y)) for x, y in pairs}
    listed = [f"{x} vs {y}: {difference}" for (x, y), differences in found.items() for difference in differences]
    more = [f"... and {len(listed) - MAX_DISAGREEMENTS} more"] if len(listed) > MAX_DISAGREEMENTS else []
    return {
        "agree": not listed if pairs else None,
        "disagreeing": [list(pair) for pair, differences in found.items() if differences],
        "disagreements": listed[:MAX_DISAGREEMENTS] + more,
    }


def _outcome(result: dict[str, Any]) -> dict[str, Any]:
    """What a record keeps of one front-end's result."""
    keys = ("ok", "seconds", "error", "units", "removable", "timed_out")
    return {"ok": bool(result.get("ok")), **{k: result[k] for k in keys[1:] if k in result}}


def check_model(spec: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Every front-end on one model, each in its own forked child; the model's record (never raises)."""
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
    record.update(compare({f: r["blocks"] for f, r in results.items() if r.get("ok")}))
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


def _complete(record: dict[str, Any]) -> bool:
    """Whether ``record`` needs no new measurement: not built, or measured by every front-end."""
    return record["status"] != "measured" or all(f in record for f in FRONTENDS)


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
    """Measure the models not yet recorded, or recorded without a front-end (all with ``force``), saving
    after each; every record stored."""
    from tqdm import tqdm

    records = _load()
    todo = [s for s in specs if force or s not in records or not _complete(records[s])]
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


def _captured(record: dict[str, Any], frontend: str) -> bool:
    """Whether ``frontend`` captured the model; False where the record was written before it was measured."""
    result = record.get(frontend)
    return bool(result and result["ok"])


def _measured(rows: list[dict[str, Any]], frontend: str) -> list[dict[str, Any]]:
    """The records that hold a result of ``frontend``."""
    return [r for r in rows if frontend in r]


def _times(rows: list[dict[str, Any]], frontend: str) -> str:
    """``median / p90`` seconds of ``frontend`` over the models it captured; ``-`` where it captured none."""
    values = [r[frontend]["seconds"] for r in rows if _captured(r, frontend)]
    return "-" if not values else f"{_seconds(percentile(values, 50))} / {_seconds(percentile(values, 90))}"


def _ok(rows: list[dict[str, Any]], frontend: str) -> int:
    return sum(_captured(r, frontend) for r in rows)


def _ok_cell(rows: list[dict[str, Any]], frontend: str) -> str:
    """How many of ``rows`` ``frontend`` captured; ``k of m`` where only ``m`` records measured it, ``-`` for none."""
    measured = len(_measured(rows, frontend))
    if not measured:
        return "-"
    return str(_ok(rows, frontend)) if measured == len(rows) else f"{_ok(rows, frontend)} of {measured}"


def _summary_row(label: str, rows: list[dict[str, Any]]) -> str:
    compared = [r for r in rows if r["agree"] is not None]
    agree = sum(r["agree"] is True for r in compared)
    counts = [_ok_cell(rows, f) for f in FRONTENDS]
    return _table_row(
        [label, str(len(rows)), *counts, str(len(compared)), str(agree), *(_times(rows, f) for f in FRONTENDS)]
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


def _ratio(rows: list[dict[str, Any]], numerator: str = "export", denominator: str = "fx") -> float | None:
    """The median over the models both captured of ``numerator``'s time / ``denominator``'s time."""
    both = [r for r in rows if _captured(r, numerator) and _captured(r, denominator) and r[denominator]["seconds"]]
    ratios = [r[numerator]["seconds"] / r[denominator]["seconds"] for r in both]
    return percentile(ratios, 50)


def _disagreeing(record: dict[str, Any]) -> list[tuple[str, ...]]:
    """The pairs of front-ends whose units differ on the model; a record written before eager was measured
    has no ``disagreeing``: there, fx and export where it does not agree."""
    if "disagreeing" in record:
        return [tuple(pair) for pair in record["disagreeing"]]
    return [ORDERED] if record.get("agree") is False else []


def _last_resort(rows: list[dict[str, Any]]) -> str:
    """What eager, tried after fx and export, adds on ``rows``: the models only it captures, its time
    against fx's, and the models where its units differ from another front-end's."""
    eager, measured = LAST_RESORT, _measured(rows, LAST_RESORT)
    if not measured:
        return f"The {eager} front-end was not measured on these models."
    only = [r for r in measured if _captured(r, eager) and not any(_captured(r, f) for f in ORDERED)]
    ratio = _ratio(measured, eager, "fx")
    compared = [r for r in measured if _captured(r, eager) and any(_captured(r, f) for f in ORDERED)]
    differ = sum(any(eager in pair for pair in _disagreeing(r)) for r in compared)
    which = "" if len(measured) == len(rows) else " it was measured on"
    return (
        f"The {eager} front-end, which `auto` tries last, captures {_ok(measured, eager)} of the "
        f"{len(measured)} models{which}; only {eager} captures {len(only)} of them"
        + (f" ({', '.join(_names(only))})" if only else "")
        + "; "
        + (
            f"no model was captured by both fx and {eager}"
            if ratio is None
            else f"at the median of the models fx and {eager} both capture, {eager} takes {ratio:.1f} times fx's time"
        )
        + f"; its units differ from fx's or export's on {differ} of the {len(compared)} models it and one of "
        "them capture."
    )


def conclusion(rows: list[dict[str, Any]]) -> str:
    """The order ``"auto"`` should try the front-ends in, and why, from the measured records."""
    if not rows:
        return "No model measured yet: no conclusion."
    n = len(rows)
    auto = {order: _auto_seconds(rows, order) for order in (ORDERED, ORDERED[::-1])}
    first, second = min(auto, key=lambda order: (auto[order], order != ORDERED))
    ratio = _ratio(rows)
    speed = "no model was captured by both" if ratio is None else _speed(first, ratio)
    rescued = sum(not r[first]["ok"] and r[second]["ok"] for r in rows)
    missed = n - _ok(rows, first)
    unsolved = sum(not r["fx"]["ok"] and not r["export"]["ok"] for r in rows)
    differ = sum(ORDERED in _disagreeing(r) for r in rows)
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
        + (
            f"Neither fx nor export captures {unsolved} of them. "
            if unsolved
            else "fx or export captures every model. "
        )
        + (
            f"fx and export disagree on {differ} of the models both capture (listed below), where the order "
            "decides what `auto` reports."
            if differ
            else "fx and export agree on every model both capture."
        )
        + (
            f" {len(stuck)} of {first}'s failures are no TraceError or DataError (another error, a timeout, "
            f"a crash), after which `auto` does not try {second}: {', '.join(_names(stuck))}."
            if stuck
            else ""
        )
        + f" {_last_resort(rows)}"
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


def _table_row(cells: Sequence[str]) -> str:
    return f"| {' | '.join(cells)} |"


def _inline(text: Any) -> str:
    """``text`` on one line of Markdown, its ``<`` kept as text (``<lambda>`` is no HTML tag)."""
    return " ".join(str(text).split()).replace("<", "&lt;")


def _model_row(r: dict[str, Any]) -> str:
    def cell(frontend: str) -> str:
        result = r.get(frontend)
        if result is None:
            return "-"  # a record written before this front-end was measured
        if result.get("timed_out"):
            return "timeout"
        if not result["ok"]:
            return "failed" if "seconds" not in result else f"failed ({result['seconds']:.2f} s)"
        return f"{result['seconds']:.2f} s, {result['units']} units ({result['removable']} removable)"

    agree = {True: "yes", False: "**no**", None: "-"}[r["agree"]]
    return _table_row([r["model"], r.get("inputs") or "-", *(cell(f) for f in FRONTENDS), agree])


def report(records: dict[str, dict[str, Any]]) -> str:
    """The Markdown page of the records."""
    every = sorted(records.values(), key=lambda r: (r["zoo"], r["model"]))
    rows = [r for r in every if r["status"] == "measured"]
    unbuilt = [r for r in every if r["status"] != "measured"]
    by_zoo: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_zoo.setdefault(r["zoo"], []).append(r)
    lines = [
        "# Capture front-ends: torch.fx, torch.export or one eager run",
        "",
        *_header(every),
        "",
        'Per model: `find_blocks(model, inputs, frontend=f, count_flops=True)` for `f` = `"fx"` (symbolic '
        'trace, shapes on fake tensors), `"export"` (torch.export, non-strict, on fake tensors) and `"eager"` '
        "(one real run in eval mode, its ATen operators recorded: the path that run takes), each once, cold, "
        "in its own process forked after the imports; the model is built first, untimed. *compared*: the "
        "models that two front-ends or more captured; *agree*: those on which every front-end that captured "
        "the model found the same units, with the same removable flags and freed parameters. Times: median / "
        "90th percentile in seconds over the models the front-end captured. `-`: not measured (a record "
        "written before that front-end was added); *k of m*: k succeeded of the m models it was measured on.",
        "",
        conclusion(rows),
        "",
        _table_row(
            ["zoo", "models", *(f"{f} succeeded" for f in FRONTENDS), "compared", "agree"]
            + [f"{f} time (s)" for f in FRONTENDS]
        ),
        _table_row(["---"] + ["---:"] * (len(FRONTENDS) + 3) + ["---"] * len(FRONTENDS)),
        *[_summary_row(f"`{zoo}`", zoo_rows) for zoo, zoo_rows in by_zoo.items()],
    ]
    if len(by_zoo) > 1:
        lines.append(_summary_row("all", rows))
    for frontend in FRONTENDS:
        measured = _measured(rows, frontend)
        failed = [r for r in measured if not r[frontend]["ok"]]
        lines += ["", f"## {frontend} failures", ""]
        lines += [f"- `{r['model']}`: {_inline(r[frontend].get('error'))}" for r in failed] or [
            "None." if measured else "Not measured."
        ]
    lines += ["", "## Disagreements", ""]
    lines += [f"- `{r['model']}`: {'; '.join(r['disagreements'])}" for r in rows if r["agree"] is False] or ["None."]
    lines += ["", "## Not built", ""]
    lines += [f"- `{r['model']}`: {_inline(r.get('error'))}" for r in unbuilt] or ["None."]
    lines += ["", "## Every model", "", _table_row(["model", "input", *FRONTENDS, "agree"])]
    lines += [_table_row(["---"] * (len(FRONTENDS) + 3))]
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
