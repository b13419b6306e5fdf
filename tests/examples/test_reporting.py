"""Report helpers shared by the CIFAR tables: signed differences and the provenance line."""

from __future__ import annotations

from typing import Any

from examples.cifar.reporting import provenance, signed


def _record(command: str, date: str, gpu: str | None = None) -> dict[str, Any]:
    machine = {"cpu": "AMD EPYC", "cores": 2, **({"gpu": gpu} if gpu else {})}
    return {
        "budget_description": "10 epochs",
        "data": "offline copy",
        "command": command,
        "date": date,
        "machine": machine,
    }


def test_signed_keeps_the_sign_and_says_when_there_is_nothing() -> None:
    assert signed([1.0, 3.0]) == "+2.00 ± 1.41"
    assert signed([-1.25]) == "−1.25"
    assert signed([]) == "n/a"


def test_provenance_names_one_command_once() -> None:
    text = provenance([_record("table2 --seeds 2", "2026-11-20"), _record("table2 --seeds 2", "2026-11-21")])
    assert text == (
        "Budget: 10 epochs. Data: offline copy. Command: `table2 --seeds 2` (2 records; AMD EPYC, "
        "2 cores; 2026-11-20 to 2026-11-21)."
    )


def test_provenance_names_every_command_and_machine_that_wrote_a_record() -> None:
    records = [
        _record("table2 --seeds 3", "2026-11-22"),
        _record("table2 --seeds 2", "2026-11-20"),
        _record("table2 --seeds 2", "2026-11-20"),
        _record("table2 --seeds 3", "2026-11-23", gpu="H100"),
    ]
    text = provenance(reversed(records))  # any order in, the same text out
    assert text == provenance(records)
    assert text.startswith("Budget: 10 epochs. Data: offline copy. Commands: `table2 --seeds 2` (2 records; ")
    assert "`table2 --seeds 3` (1 record; AMD EPYC, 2 cores; 2026-11-22)" in text
    assert "`table2 --seeds 3` (1 record; AMD EPYC, 2 cores, H100; 2026-11-23)" in text
