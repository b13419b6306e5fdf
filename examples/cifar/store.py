"""Results store: one JSON record per run, written atomically; a run already stored is skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks._common import write_json_atomic

__all__ = ["ResultsStore"]


class ResultsStore:
    """``<root>/<table>/<run id>.json``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, table: str, run_id: str) -> Path:
        return self.root / table / f"{run_id}.json"

    def has(self, table: str, run_id: str) -> bool:
        return self.path(table, run_id).exists()

    def save(self, table: str, run_id: str, record: dict[str, Any]) -> None:
        write_json_atomic(self.path(table, run_id), record)

    def records(self, table: str) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted((self.root / table).glob("*.json"))]
