"""What the table reports share: mean ± std over seeds, signed differences, grouping and provenance lines."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

__all__ = ["by_setting", "by_ticket", "mean_std", "provenance", "signed"]


def mean_std(values: list[float]) -> str:
    """``"m ± s"`` over seeds (just ``"m"`` for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def signed(diffs: list[float]) -> str:
    """A difference in points with its sign (``+0.40 ± 0.10``, ``−1.20``); ``n/a`` without values."""
    if not diffs:
        return "n/a"
    text = mean_std(diffs)
    return text.replace("-", "−", 1) if text.startswith("-") else "+" + text


def by_setting(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Records grouped by (architecture, budget), sorted."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["arch"], r["budget"]), []).append(r)
    return dict(sorted(groups.items()))


def by_ticket(records: Iterable[dict[str, Any]]) -> list[tuple[tuple[str, int], list[dict[str, Any]]]]:
    """Records grouped by (criterion, p), one group per ticket over the seeds; dense first, then sorted."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["criterion"], r["p"]), []).append(r)
    return sorted(groups.items(), key=lambda kv: (kv[0][0] != "dense", kv[0]))


def provenance(records: Iterable[dict[str, Any]]) -> str:
    """Which budget, data copy, commands and machines produced the records of a table section.

    Every distinct command is named with the number of records it wrote, its machine and dates, so that a table
    filled by several invocations (say, another seed added later) still says where each number came from.
    """
    records = list(records)
    budgets = sorted({r["budget_description"] for r in records})
    data = sorted({r["data"] for r in records})
    runs: dict[tuple[str, str], list[str]] = {}
    for r in records:
        m = r["machine"]
        machine = f"{m.get('cpu')}, {m.get('cores')} cores{', ' + m['gpu'] if m.get('gpu') else ''}"
        runs.setdefault((r["command"], machine), []).append(r["date"])
    commands = "; ".join(
        f"`{command}` ({len(dates)} record{'s' * (len(dates) > 1)}; {machine}; {_span(dates)})"
        for (command, machine), dates in sorted(runs.items(), key=lambda kv: (min(kv[1]), kv[0]))
    )
    return f"Budget: {' / '.join(budgets)}. Data: {' / '.join(data)}. Command{'s' * (len(runs) > 1)}: {commands}."


def _span(dates: list[str]) -> str:
    first, last = min(dates), max(dates)
    return first if first == last else f"{first} to {last}"
