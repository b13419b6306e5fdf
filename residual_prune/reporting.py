"""Plain-text tables for the command line: the residual blocks of a model and before/after summaries."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .analysis import ResidualBlock

__all__ = ["blocks_table", "format_count", "format_table", "short_reason", "summary_table"]

_REASON_WIDTH = 48


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> str:
    """Align ``rows`` under ``headers`` in columns; the column indices in ``right`` are right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])


def format_count(value: int | float | None) -> str:
    """``1234567`` -> ``"1.23M"``; ``None`` (e.g. FLOPs not counted) -> ``"n/a"``."""
    if value is None:
        return "n/a"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:g}"


def short_reason(reason: str | None, width: int = _REASON_WIDTH) -> str:
    """The first clause of a block's ``reason`` (before ``:``, ``;`` or ``(``), at most ``width`` characters."""
    if not reason:
        return ""
    text = re.split(r"[:;(]", reason, maxsplit=1)[0].strip()
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def blocks_table(blocks: Sequence[ResidualBlock], total_flops: int | None = None) -> str:
    """One row per residual unit: name, stage, type, removable (or why not), params and FLOPs.

    With ``total_flops`` (the whole model's), the FLOPs column also gives each unit's share.
    """
    rows = []
    for b in blocks:
        flops = format_count(b.flops)
        if total_flops and b.flops is not None:
            flops += f" ({100 * b.flops / total_flops:.1f}%)"
        removable = "yes" if b.removable else f"no: {short_reason(b.reason)}"
        rows.append([b.name, b.stage or "-", b.type, removable, format_count(b.params), flops])
    return format_table(["name", "stage", "type", "removable / reason", "params", "FLOPs"], rows, right=(4, 5))


def summary_table(rows: Sequence[tuple[str, int | float | None, int | float | None]]) -> str:
    """Before/after comparison: one ``(label, before, after)`` per row, with after/before as a percentage."""
    lines = []
    for label, before, after in rows:
        ratio = f"{100 * after / before:.1f}%" if before and after is not None else "n/a"
        lines.append([label, format_count(before), format_count(after), ratio])
    return format_table(["", "before", "after", "after/before"], lines, right=(1, 2, 3))
