"""Results store: one JSON record per run, written atomically; a run already stored is skipped."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from benchmarks._common import machine, write_json_atomic

from .distributed import is_main

__all__ = ["ResultsStore", "provenance_fields"]


class ResultsStore:
    """``<root>/<table>/<run id>.json``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, table: str, run_id: str) -> Path:
        return self.root / table / f"{run_id}.json"

    def has(self, table: str, run_id: str) -> bool:
        return self.path(table, run_id).exists()

    def save(self, table: str, run_id: str, record: dict[str, Any]) -> None:
        """Write the record (only the first process does, under torchrun)."""
        if is_main():
            write_json_atomic(self.path(table, run_id), record)

    def get(self, table: str, run_id: str) -> dict[str, Any]:
        return json.loads(self.path(table, run_id).read_text())

    def records(self, table: str) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted((self.root / table).glob("*.json"))]


def provenance_fields(budget: str, description: str, data: str, command: str) -> dict[str, Any]:
    """What every record says about where it came from: budget, data copy, machine, date and command."""
    return {
        "budget": budget,
        "budget_description": description,
        "data": data,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "command": command,
    }
