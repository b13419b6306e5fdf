"""The paper's published numbers, shipped with the project and shown next to ours in every table of the report.

``benchmarks/reference/paper.json`` holds every number printed in Tables 1 to 5 of Jordao, de Araujo, Maia and
Pedrini, "When Layers Play the Lottery, all Tickets Win at Initialization" (its ``source``), plus the few figures of
its Section 4 text, with the sign the paper prints as (+) or (-) written as a signed number. What the paper leaves
unstated is marked as such in the file (Table 1's p, the training schedule, absolute accuracies); nothing is filled
in. :func:`load_reference` reads this structure::

    {"source": "<the paper, the tables taken>", "conventions": {...}, "setup_facts": {...},
     "table1": {"arch": "resnet32", "p": <int, or text saying it is not stated>,
                "rows": {"<criterion>": {"theta_<epoch>": <pp>, ...}}, "reinit_text": "..."},
     "table2": {"arch": "resnet32", "rows": {"<criterion>": {"<p>": <pp>, ...}}, "cka_text": "..."},
     "table3": {"arch": "resnet32", "p": 1, "rows": {"filter": {"<criterion>": <pp>}, "layer": {...}}},
     "table4": {"criterion": "grasp", "rows": [{"arch": ..., "p": ..., "flops_saved_percent": ...,
                "memory_saved_percent": ..., "co2_saved_percent": ..., "speedup": ...}], "note": "..."},
     "table5": {"rows": [{"arch": ..., "p": ..., "cifar10c": <pp>, "cifar102": <pp>}]}}

Differences in percentage points (ticket - dense), ``*_percent`` saved relative to the dense network, speed-up as a
ratio. Table 5 measures the Table 4 tickets, so its rows take Table 4's criterion. Every text field of a table
(``what``, ``note``, ``*_text``) is kept for the report to quote.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .options import ROOT

__all__ = ["FIELDS", "REFERENCE", "Key", "Reference", "load_reference"]

REFERENCE = ROOT / "benchmarks" / "reference" / "paper.json"
FIELDS = {
    "table1": ("theta_0", "theta_25", "theta_50", "theta_75"),
    "table2": ("difference",),
    "table3": ("layer", "filter"),
    "table4": ("flops_saved_percent", "memory_saved_percent", "co2_saved_percent", "speedup"),
    "table5": ("cifar10c", "cifar102"),
}
"""The numbers each table's rows hold (Table 1: the difference to dense at each rewind epoch)."""

Key = tuple[str, str, str, int | None]
"""(table, arch, criterion, p); p is None where the paper does not state it (Table 1)."""


@dataclass(frozen=True)
class Reference:
    """The paper's numbers by (table, arch, criterion, p), the texts that go with them, and where they come from."""

    source: str
    rows: dict[Key, dict[str, float]]
    texts: dict[tuple[str, str], str] = field(default_factory=dict)

    def arches(self, table: str) -> list[str]:
        """The architectures the paper's ``table`` has rows for."""
        return sorted({k[1] for k in self.rows if k[0] == table})

    def of(self, table: str, arch: str) -> dict[tuple[str, int | None], dict[str, float]]:
        """The rows of ``table`` for ``arch`` by (criterion, p), in the paper's order of criteria, then p."""
        return {(k[2], k[3]): v for k, v in self.rows.items() if k[:2] == (table, arch)}

    def densities(self, table: str, arch: str) -> list[int]:
        """The numbers of removed blocks the paper's ``table`` has rows for with ``arch`` (empty if none)."""
        return sorted({p for (t, a, _, p) in self.rows if (t, a) == (table, arch) and p is not None})

    def value(self, table: str, arch: str, criterion: str, p: int | None, name: str) -> float | None:
        """One published number, or None where the paper prints none."""
        return self.rows.get((table, arch, criterion, p), {}).get(name)

    def text(self, section: str, name: str) -> str:
        """A text field of the file (``section``: a table, ``conventions`` or ``setup_facts``); empty if absent."""
        return self.texts.get((section, name), "")


class _Reader:
    """Reads one part of the file, saying where in it a value is wrong."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, what: str) -> ValueError:
        return ValueError(
            f"{self.path}, {where}: {what}. The file ships with the project as a copy of the paper's tables "
            "(format: examples/cifar/reference.py); restore it from version control or fix that entry"
        )

    def object(self, raw: Any, where: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail(where, "must be an object")
        return raw

    def number(self, raw: Any, where: str) -> float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise self.fail(where, f"must be a number, not {raw!r}")
        return float(raw)

    def integer(self, raw: Any, where: str) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise self.fail(where, f"must be a whole number, not {raw!r}")
        return raw

    def text(self, raw: Any, where: str) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise self.fail(where, "must be a non-empty text")
        return raw.strip()

    def numbers(self, raw: Any, where: str, allowed: tuple[str, ...]) -> dict[str, float]:
        values = self.object(raw, where)
        unknown = sorted(set(values) - set(allowed))
        if unknown or not values:
            raise self.fail(where, f"takes {', '.join(allowed)}; got {', '.join(unknown) or 'none'}")
        return {k: self.number(v, f"{where}.{k}") for k, v in values.items()}


Rows = dict[Key, dict[str, float]]


def _table1(read: _Reader, raw: dict[str, Any]) -> Rows:
    arch = read.text(raw.get("arch"), "table1.arch")
    p = raw.get("p")
    stated = read.integer(p, "table1.p") if not isinstance(p, str) else None  # a text: not stated
    return {
        ("table1", arch, criterion, stated): read.numbers(values, f"table1.rows.{criterion}", FIELDS["table1"])
        for criterion, values in read.object(raw.get("rows"), "table1.rows").items()
    }


def _table2(read: _Reader, raw: dict[str, Any]) -> Rows:
    arch = read.text(raw.get("arch"), "table2.arch")
    rows: Rows = {}
    for criterion, by_p in read.object(raw.get("rows"), "table2.rows").items():
        for p, value in read.object(by_p, f"table2.rows.{criterion}").items():
            where = f"table2.rows.{criterion}.{p}"
            if not p.isdigit():
                raise read.fail(where, "the keys are numbers of removed blocks")
            rows["table2", arch, criterion, int(p)] = {"difference": read.number(value, where)}
    return rows


def _table3(read: _Reader, raw: dict[str, Any]) -> Rows:
    arch = read.text(raw.get("arch"), "table3.arch")
    p = read.integer(raw.get("p"), "table3.p")
    rows: Rows = {}
    for kind, by_criterion in read.object(raw.get("rows"), "table3.rows").items():
        if kind not in FIELDS["table3"]:
            raise read.fail(f"table3.rows.{kind}", f"the rows are {' and '.join(FIELDS['table3'])}")
        for criterion, value in read.object(by_criterion, f"table3.rows.{kind}").items():
            rows.setdefault(("table3", arch, criterion, p), {})[kind] = read.number(
                value, f"table3.rows.{kind}.{criterion}"
            )
    return rows


def _listed(read: _Reader, raw: dict[str, Any], table: str, criterion: str) -> Rows:
    """Tables 4 and 5: a list of rows, each with arch, p and the table's numbers."""
    rows: Rows = {}
    entries = raw.get("rows")
    if not isinstance(entries, list):
        raise read.fail(f"{table}.rows", "must be a list")
    for i, entry in enumerate(entries):
        where = f"{table}.rows[{i}]"
        values = dict(read.object(entry, where))
        arch = read.text(values.pop("arch", None), f"{where}.arch")
        p = read.integer(values.pop("p", None), f"{where}.p")
        key = (table, arch, criterion, p)
        if key in rows:
            raise read.fail(where, f"a second row for {arch}, p = {p}")
        rows[key] = read.numbers(values, where, FIELDS[table])
    return rows


def _table4(read: _Reader, raw: dict[str, Any]) -> Rows:
    return _listed(read, raw, "table4", read.text(raw.get("criterion"), "table4.criterion"))


def _table5(read: _Reader, raw: dict[str, Any], criterion: str) -> Rows:
    return _listed(read, raw, "table5", criterion)


_TABLES: dict[str, Callable[[_Reader, dict[str, Any]], Rows]] = {
    "table1": _table1,
    "table2": _table2,
    "table3": _table3,
    "table4": _table4,
}


def load_reference(path: Path = REFERENCE) -> Reference:
    """The paper's numbers from ``path`` (by default the copy shipped in ``benchmarks/reference/paper.json``).

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: the file is not the structure above; the message says which entry is wrong.
    """
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: the paper's numbers ship with the project in {REFERENCE.relative_to(ROOT)}; "
            "restore it from version control or pass the path of a copy"
        )
    read = _Reader(path)
    try:
        raw: Any = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise read.fail("the whole file", f"not valid JSON ({error})") from error
    raw = read.object(raw, "the whole file")
    source = read.text(raw.get("source"), '"source" (the paper and tables the numbers come from)')
    sections = {name: read.object(raw.get(name), name) for name in FIELDS}
    rows: Rows = {}
    for name, parse in _TABLES.items():
        rows.update(parse(read, sections[name]))
    rows.update(_table5(read, sections["table5"], sections["table4"]["criterion"]))
    texts = {
        (section, name): value.strip()
        for section in (*FIELDS, "conventions", "setup_facts")
        if isinstance(raw.get(section), dict)
        for name, value in raw[section].items()
        if isinstance(value, str) and value.strip()
    }
    return Reference(source, rows, texts)
