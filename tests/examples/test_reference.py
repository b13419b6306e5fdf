"""The paper's numbers shipped with the project: that they are the paper's, what the loader reads of them, and
what it refuses."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from examples.cifar.options import ROOT
from examples.cifar.reference import FIELDS, REFERENCE, load_reference

SHARED = ROOT.parent / "shared" / "paper" / "numbers.json"  # the reference copy, where this machine has it


def _shipped() -> dict[str, Any]:
    return json.loads(REFERENCE.read_text())


def test_the_shipped_numbers_are_the_papers() -> None:
    shipped = _shipped()
    if SHARED.exists():  # the copy the numbers were taken from, where it exists: every number, every text
        assert shipped == json.loads(SHARED.read_text())
    # always (the reference copy is not in CI): the file names the paper and holds its printed figures
    assert "When Layers Play the Lottery, all Tickets Win at Initialization" in shipped["source"]
    assert "Jordao" in shipped["source"]
    assert set(FIELDS) <= set(shipped)
    table4 = {(r["arch"], r["p"]): r for r in shipped["table4"]["rows"]}
    assert shipped["table4"]["criterion"] == "grasp"
    assert table4["resnet32", 4]["flops_saved_percent"] == 34.13  # the printed value, inconsistency and all
    assert table4["resnet32", 4]["speedup"] == 1.57 and table4["resnet56", 12]["speedup"] == 2.03  # the headline
    assert table4["resnet56", 12]["co2_saved_percent"] == 51.11  # "CO2 reduced by up to 51%"
    assert all(v >= 0 for v in shipped["table2"]["rows"]["grasp"].values())  # "all GraSP tickets win"
    assert "not stated" in shipped["table1"]["p"]  # left unstated, not filled in


def test_the_loader_reads_every_table_by_arch_criterion_and_p() -> None:
    ref = load_reference()  # the shipped copy by default
    assert ref.source == _shipped()["source"]
    assert len(ref.rows) == 5 + 10 + 2 + 7 + 7
    assert ref.value("table1", "resnet32", "kl", None, "theta_0") == 0.74  # p not stated: None
    assert ref.value("table2", "resnet32", "snip", 3, "difference") == -0.5
    assert ref.of("table3", "resnet32")[("snip", 1)] == {"filter": -0.79, "layer": 0.08}
    assert ref.value("table4", "resnet32", "grasp", 4, "flops_saved_percent") == 34.13
    assert ref.value("table5", "resnet56", "grasp", 4, "cifar10c") == 3.73  # Table 5: the Table 4 tickets
    assert ref.value("table4", "resnet32", "snip", 4, "speedup") is None
    assert ref.arches("table4") == ["resnet32", "resnet56"] and ref.arches("table2") == ["resnet32"]
    assert ref.densities("table4", "resnet56") == [3, 4, 5, 12] and ref.densities("table1", "resnet32") == []
    assert ref.text("table2", "cka_text").startswith("p=1:") and ref.text("table9", "what") == ""


def _write(tmp_path: Path, change: Any) -> Path:
    raw = copy.deepcopy(_shipped())
    change(raw)
    path = tmp_path / "paper.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw.pop("source"), '"source".*non-empty text'),
        (lambda raw: raw.pop("table3"), "table3: must be an object"),
        (lambda raw: raw["table2"]["rows"]["snip"].update({"3": "-0.5"}), "table2.rows.snip.3: must be a number"),
        (lambda raw: raw["table2"]["rows"]["snip"].update({"three": 1}), "keys are numbers of removed blocks"),
        (lambda raw: raw["table1"]["rows"]["kl"].update({"theta_99": 1}), "takes theta_0, .*; got theta_99"),
        (lambda raw: raw["table3"]["rows"].update({"channel": {}}), "the rows are layer and filter"),
        (lambda raw: raw["table4"]["rows"][0].update({"flops": 1}), r"table4.rows\[0\]: takes .*; got flops"),
        (lambda raw: raw["table4"]["rows"].append(raw["table4"]["rows"][0]), "a second row for resnet32, p = 1"),
        (lambda raw: raw["table5"]["rows"][0].update({"p": 1.5}), r"table5.rows\[0\].p: must be a whole number"),
    ],
)
def test_a_bad_file_is_refused_with_the_entry_to_fix(tmp_path: Path, change: Any, message: str) -> None:
    path = _write(tmp_path, change)
    with pytest.raises(ValueError, match=message) as error:
        load_reference(path)
    assert str(path) in str(error.value)


def test_a_missing_or_unreadable_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ship with the project in benchmarks"):
        load_reference(tmp_path / "paper.json")
    (tmp_path / "paper.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_reference(tmp_path / "paper.json")
