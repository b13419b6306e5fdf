"""The paper's numbers file: what it accepts, what it refuses, and the column it adds to Tables 2 and 4.

The numbers below are made up for the test; they are not the paper's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from examples.cifar import table2
from examples.cifar.reference import load_reference

SOURCE = "test fixture, not the paper"


def _write(path: Path, rows: list[dict[str, Any]], source: str = SOURCE) -> Path:
    path.write_text(json.dumps({"source": source, "rows": rows}))
    return path


def _run(criterion: str, p: int, seed: int, accuracy: float) -> dict[str, Any]:
    return {
        "arch": "resnet32",
        "budget": "cpu",
        "criterion": criterion,
        "p": p,
        "seed": seed,
        "accuracy": accuracy,
        "params": 400_000 - 10_000 * p,
        "flops": 70e6 - 5e6 * p,
        "budget_description": "10 epochs",
        "data": "offline copy",
        "command": "table2",
        "date": "2026-11-22",
        "machine": {"cpu": "x", "cores": 2},
    }


def test_no_file_means_no_reference(tmp_path: Path) -> None:
    assert load_reference(tmp_path / "paper.json") is None


def test_cells_are_formatted_like_our_columns(tmp_path: Path) -> None:
    ref = load_reference(
        _write(
            tmp_path / "paper.json",
            [
                {
                    "table": "table2",
                    "arch": "resnet32",
                    "criterion": "snip",
                    "p": 2,
                    "accuracy": 91.5,
                    "difference": -0.25,
                },
                {
                    "table": "table4",
                    "arch": "resnet56",
                    "criterion": "snip",
                    "p": 5,
                    "flops_saved": 0.125,
                    "speedup": 1.3,
                },
            ],
        )
    )
    assert ref is not None and ref.source == SOURCE
    assert ref.cell("table2", "resnet32", "snip", 2) == "91.50%, −0.25 pp"
    assert ref.cell("table4", "resnet56", "snip", 5) == "FLOPs −12.5%, 1.30x"
    assert ref.cell("table2", "resnet32", "snip", 3) == ""  # the paper has no such row
    assert ref.has("table2", "resnet32") and not ref.has("table2", "resnet56") and ref.has("table4", "resnet56")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"rows": []}), 'non-empty "source"'),
        (
            json.dumps({"source": SOURCE, "rows": [{"table": "table2", "arch": "resnet32", "p": 1, "accuracy": 90}]}),
            "needs table, arch, criterion, p",
        ),
        (
            json.dumps(
                {"source": SOURCE, "rows": [{"table": "table9", "arch": "a", "criterion": "c", "p": 1, "x": 1}]}
            ),
            "not one of table2, table4",
        ),
        (
            json.dumps(
                {"source": SOURCE, "rows": [{"table": "table2", "arch": "a", "criterion": "c", "p": 1, "acc": 1}]}
            ),
            "takes the fields accuracy, difference; got acc",
        ),
        (
            json.dumps(
                {
                    "source": SOURCE,
                    "rows": [{"table": "table4", "arch": "a", "criterion": "c", "p": 1, "speedup": "1.4x"}],
                }
            ),
            "values must be numbers",
        ),
        (
            json.dumps(
                {
                    "source": SOURCE,
                    "rows": [
                        {"table": "table2", "arch": "a", "criterion": "c", "p": 1, "accuracy": 1},
                        {"table": "table2", "arch": "a", "criterion": "c", "p": 1, "difference": 1},
                    ],
                }
            ),
            "a second row",
        ),
    ],
)
def test_a_bad_file_is_refused_with_what_to_fix(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "paper.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        load_reference(path)
    assert str(path) in str(error.value)


def test_table2_shows_the_paper_column_only_for_the_arch_it_covers(tmp_path: Path) -> None:
    records = [_run("dense", 0, 0, 50.0), _run("snip", 1, 0, 52.0)]
    records += [{**r, "arch": "resnet56"} for r in records]
    ref = load_reference(
        _write(
            tmp_path / "paper.json",
            [
                {"table": "table2", "arch": "resnet32", "criterion": "dense", "p": 0, "accuracy": 92.0},
                {"table": "table2", "arch": "resnet32", "criterion": "snip", "p": 1, "difference": 0.5},
            ],
        )
    )
    text = table2.report(records, ref)
    resnet32, resnet56 = text.split("### resnet56")
    assert f"Paper: {SOURCE}." in resnet32 and "| seeds | paper |" in resnet32
    assert "| dense | 0 | 400K | 70.0M | 50.00 |  | 1 | 92.00% |" in resnet32
    assert "| snip | 1 | 390K | 65.0M | 52.00 | +2.00 | 1 | +0.50 pp |" in resnet32
    assert "paper" not in resnet56.lower()
    assert table2.report(records) == table2.report(records, None) and "paper |" not in table2.report(records)
