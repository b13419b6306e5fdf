"""Table 1 (Algorithm 1): rewinding the ticket of a trained network, re-initialising it, and the table at a smoke
budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from examples.cifar import paper_tables, table1, table2
from examples.cifar.budgets import BUDGETS, rewind_epochs
from examples.cifar.store import ResultsStore
from examples.cifar.train import Schedule
from tests.examples.test_cifar import _random_data

BUDGET = dataclasses.replace(BUDGETS["smoke"], schedule=Schedule(epochs=2, batch_size=16))


def test_rewind_points_scale_with_the_schedule() -> None:
    assert rewind_epochs(BUDGETS["paper"]) == {0: 0, 25: 25, 50: 50, 75: 75}
    assert rewind_epochs(BUDGETS["cpu"]) == {0: 0, 25: 2, 50: 3, 75: 5}
    assert rewind_epochs(BUDGET) == {0: 0, 25: 0, 50: 1, 75: 1}


def test_table1_smoke_rewinds_kept_weights_and_reinitialises(tmp_path: Path) -> None:
    store, runs, data = ResultsStore(tmp_path / "results"), tmp_path / "runs", _random_data(train=160, test=40)
    records = table1.run_table(
        "resnet20", ["l1", "random"], [1], [0, 75, "reinit"], 1, BUDGET, data, store, runs=runs, progress=False
    )
    assert [(r["criterion"], r["rewind"], r["start_epoch"]) for r in records] == [
        ("l1", 0, 0),
        ("l1", 75, 1),
        ("l1", "reinit", 0),
        ("random", 0, 0),
        ("random", 75, 1),
        ("random", "reinit", 0),
    ]
    dense = store.records(table2.TABLE)[0]
    assert dense["criterion"] == "dense" and all(r["dense_accuracy"] == dense["accuracy"] for r in records)
    for r in records:
        assert len(r["removed"]) == 1 and r["params"] < dense["params"]
        assert len(r["history"]) == 2 - r["start_epoch"]  # learning-rate rewinding: the rest of the schedule

    # the ticket starts from the dense weights at the rewind epoch, without the removed block
    plan = table1.trained_plan(dense, "l1", 1, data, runs)
    assert plan.removed == records[0]["removed"]
    theta1 = torch.load(runs / dense["run_id"] / "theta_1.pt", weights_only=True)
    rewound, epoch = table1.ticket(dense, plan, 75, BUDGET, runs)
    assert epoch == 1
    for key, value in rewound.state_dict().items():
        assert torch.equal(value, theta1[key]), key
    assert not any(k.startswith(plan.removed[0] + ".") for k in rewound.state_dict())
    reinit, _ = table1.ticket(dense, plan, "reinit", BUDGET, runs)
    theta0 = torch.load(runs / dense["run_id"] / "theta_0.pt", weights_only=True)
    assert not torch.equal(reinit.state_dict()["conv1.weight"], theta0["conv1.weight"])

    assert (
        table1.run_table(
            "resnet20", ["l1", "random"], [1], [0, 75, "reinit"], 1, BUDGET, data, store, runs=runs, progress=False
        )
        == []
    )
    text = table1.report(store.records(table1.TABLE))
    assert (
        "| θ_0 | θ_75 | re-init | seeds |" in text
        and text.count("| l1 | 1 |") == 1
        and "epoch 0 for θ_0, 1 for θ_75" in text
    )
    diffs = table1.differences(records)
    assert list(diffs) == [("l1", 1), ("random", 1)]
    assert diffs["l1", 1] == {
        r["rewind"]: [r["accuracy"] - dense["accuracy"]] for r in records if r["criterion"] == "l1"
    }
    [plot] = paper_tables.plot_rewinds(store.records(table1.TABLE), tmp_path)
    assert plot.name == "table1_resnet20_p1_smoke.png" and plot.stat().st_size > 1000
