"""The paper's own numbers, shown by the Table 2 and Table 4 reports next to ours.

The numbers come from a JSON file that names its source (paper version, table). The reports
read them from there; nothing of the paper is typed into a report by hand::

    {"source": "<authors, title, arXiv id and version, the tables taken>",
     "rows": [
       {"table": "table2", "arch": "resnet32", "criterion": "dense", "p": 0, "accuracy": <percent>},
       {"table": "table2", "arch": "resnet32", "criterion": "snip", "p": 1, "accuracy": <percent>,
        "difference": <points>},
       {"table": "table4", "arch": "resnet32", "criterion": "snip", "p": 5, "flops_saved": <fraction>,
        "speedup": <ratio>}]}

Accuracy in %, difference in percentage points (ticket - dense), ``*_saved`` as fractions of the
dense network's, speed-up as a ratio. Rows are keyed by (table, arch, criterion, p), as the
records of the results store are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .options import ROOT

__all__ = ["FIELDS", "REFERENCE", "PaperColumn", "Reference", "load_reference"]

REFERENCE = ROOT / "benchmarks" / "reference" / "paper.json"
FIELDS = {
    "table2": ("accuracy", "difference"),
    "table4": ("flops_saved", "memory_saved", "co2_saved", "speedup"),
}
_KEYS = ("table", "arch", "criterion", "p")


@dataclass(frozen=True)
class Reference:
    """Published numbers by (table, arch, criterion, p), and where they were taken from."""

    source: str
    rows: dict[tuple[str, str, str, int], dict[str, float]]

    def has(self, table: str, arch: str) -> bool:
        return any(k[:2] == (table, arch) for k in self.rows)

    def cell(self, table: str, arch: str, criterion: str, p: int) -> str:
        """The published values of one row of our table, formatted as ours are; empty when the paper has none."""
        values = self.rows.get((table, arch, criterion, p), {})
        return ", ".join(_format(name, values[name]) for name in FIELDS[table] if name in values)


@dataclass(frozen=True)
class PaperColumn:
    """The ``paper`` column that a Table 2 or Table 4 section appends: every piece is empty text when there is no
    reference or it has no rows for this table and arch, so the section looks as it does without one."""

    reference: Reference | None
    table: str
    arch: str

    @classmethod
    def of(cls, reference: Reference | None, table: str, arch: str) -> PaperColumn:
        shown = reference is not None and reference.has(table, arch)
        return cls(reference if shown else None, table, arch)

    @property
    def source(self) -> str:
        return f" Paper: {self.reference.source}." if self.reference else ""

    @property
    def header(self) -> str:
        return " paper |" if self.reference else ""

    @property
    def rule(self) -> str:
        return "---|" if self.reference else ""

    def cell(self, criterion: str, p: int) -> str:
        return f" {self.reference.cell(self.table, self.arch, criterion, p)} |" if self.reference else ""


def _format(name: str, value: float) -> str:
    if name == "accuracy":
        return f"{value:.2f}%"
    if name == "difference":
        return f"{value:+.2f} pp".replace("-", "−")
    if name == "speedup":
        return f"{value:.2f}x"
    return f"{name.removesuffix('_saved').replace('flops', 'FLOPs')} −{value:.1%}"


def load_reference(path: Path = REFERENCE) -> Reference | None:
    """The paper's numbers from ``path``; ``None`` if there is no such file."""
    if not path.exists():
        return None
    try:
        raw: Any = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); fix it or delete it") from error
    if not isinstance(raw, dict) or not isinstance(raw.get("source"), str) or not raw["source"].strip():
        raise ValueError(
            f'{path} must be an object with a non-empty "source" naming the paper version and '
            'tables the numbers come from, and a list "rows"'
        )
    rows: dict[tuple[str, str, str, int], dict[str, float]] = {}
    for i, row in enumerate(raw.get("rows", [])):
        where = f"{path}, row {i}"
        if not isinstance(row, dict) or any(k not in row for k in _KEYS):
            raise ValueError(f"{where}: every row needs {', '.join(_KEYS)}")
        table = row["table"]
        if table not in FIELDS:
            raise ValueError(f"{where}: table {table!r} is not one of {', '.join(FIELDS)}")
        values = {k: v for k, v in row.items() if k not in _KEYS}
        unknown = set(values) - set(FIELDS[table])
        if unknown or not values:
            raise ValueError(
                f"{where}: {table} takes the fields {', '.join(FIELDS[table])}; got "
                f"{', '.join(sorted(values)) or 'none'}"
            )
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
            raise ValueError(f"{where}: values must be numbers")
        key = (table, str(row["arch"]), str(row["criterion"]), int(row["p"]))
        if key in rows:
            raise ValueError(f"{where}: a second row for {key}")
        rows[key] = {k: float(v) for k, v in values.items()}
    return Reference(raw["source"].strip(), rows)
