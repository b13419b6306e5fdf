"""Table 4: training memory, energy metering, side-by-side step timing and the table at a smoke budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from examples.cifar import paper_tables, table2, table4, tickets
from examples.cifar import store as store_module
from examples.cifar.budgets import BUDGETS
from examples.cifar.cost import EnergyMeter, training_memory
from examples.cifar.reporting import trained_on
from examples.cifar.store import ResultsStore
from examples.cifar.train import Schedule
from residual_prune.models import resnet20
from tests.examples.test_cifar import _random_data
from tests.test_data import write_cifar_npz


def alone(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as if it had the CPU to itself (no load over the run or in any epoch), whatever ran beside the
    tests: their runs are judged by what they record, not by how busy the machine was."""
    history = [{**h, "other_load": 0.0} for h in record.get("history") or []]
    return {**record, "other_load": 0.0, "history": history}


def test_training_memory_counts_weights_three_times_and_activations_per_image() -> None:
    torch.manual_seed(0)
    model = resnet20()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    small, medium, large = (training_memory(model, torch.randn(n, 3, 32, 32), torch.arange(n) % 10) for n in (4, 8, 12))
    assert small["weights"] == large["weights"] == 3 * 4 * params  # float32 weights, gradients, momentum
    per_four = medium["activations"] - small["activations"]  # saved activations grow linearly with the batch
    assert per_four > 0 and large["activations"] - medium["activations"] == per_four
    assert small["activations"] > per_four  # plus per-channel statistics that do not depend on the batch
    assert large["total"] == large["weights"] + large["activations"]
    assert not model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_training_memory_is_counted_on_a_batch_of_the_budgets_size() -> None:
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([4, 5, 6])
    bigger, smaller = tickets.batch_of((x, y), 7), tickets.batch_of((x, y), 2)
    assert torch.equal(bigger[0][3:6], x) and bigger[1].tolist() == [4, 5, 6, 4, 5, 6, 4]
    assert torch.equal(smaller[0], x[:2]) and smaller[1].tolist() == [4, 5]
    model = resnet20()  # the count depends on the shape only: repeated images count as other images do
    repeated = training_memory(model, *bigger)
    assert repeated == training_memory(model, torch.randn(7, 3, 32, 32), torch.arange(7) % 10)


def test_training_memory_of_a_linear_layer_is_its_input() -> None:
    model = nn.Sequential(nn.Flatten(0, -1), nn.Linear(6, 10))  # one image: saves its input and the log-softmax
    mem = training_memory(model, torch.randn(6), torch.tensor(3))
    assert mem["weights"] == 3 * 4 * (60 + 10)
    assert mem["activations"] >= 4 * 6 + 4 * 10


def test_energy_meter_measures_a_span() -> None:
    meter = EnergyMeter("FRA")
    with meter.span() as span:
        torch.randn(300, 300) @ torch.randn(300, 300)
    meter.close()
    assert span["energy_kwh"] >= 0 and span["emissions_kg"] >= 0 and "FRA" in span["region"]


def test_table4_smoke_and_the_generated_page(tmp_path: Path) -> None:
    budget = dataclasses.replace(BUDGETS["smoke"], schedule=Schedule(epochs=1, batch_size=16))
    store = ResultsStore(tmp_path / "results")
    record = table4.run_table(
        "resnet20",
        "snip",
        [1, 3],
        1,
        budget,
        _random_data(train=160, test=40),
        store,
        runs=tmp_path / "runs",
        progress=False,
        repeats=2,
    )
    assert set(record["step_seconds"]) == {"0", "1", "3"} and all(s > 0 for s in record["step_seconds"].values())
    how = (record["seed"], record["precision"], record["channels_last"], record["compiled"])
    assert how == (0, "float32", False, False)  # as the smoke budget trains
    trained = store.records(table2.TABLE)
    assert sorted(r["p"] for r in trained) == [0, 1, 3]
    for r in trained:
        assert r["energy_kwh"] is not None and r["training_memory"]["total"] > 0 and 0 <= r["other_load"] <= 1
    trained = [alone(r) for r in trained]  # as if alone, whatever else runs beside the tests
    text = table4.report(trained, store.records(table4.TABLE))
    assert "### resnet20, budget `smoke`, snip tickets" in text and "| 3 |" in text and "region USA" in text
    assert "trained on" not in text  # one machine, no need to say
    assert "(float32, contiguous, eager; seed 0's networks) on cpu" in text  # as the smoke budget trains
    # runs of another machine and precision: a section of their own, whose costs compare only with its own dense run
    elsewhere = {"machine": {"cpu": "Other CPU", "cores": 2}, "precision": "bfloat16 autocast", "seed": 1}
    slower = [
        {**r, **elsewhere, "criterion": "dense" if r["p"] == 0 else "grasp", "train_seconds": 5 * r["train_seconds"]}
        for r in trained
    ]
    text = table4.report(trained + slower, store.records(table4.TABLE))
    here = text.split(f"(extra: the paper's Table 4 uses grasp), trained on {trained_on(trained[0])}\n")[1]
    there = text.split("grasp tickets (the paper's), trained on Other CPU, 2 cores, bfloat16 autocast\n")[1]
    assert "not timed" not in here.split("###")[0] and "| not timed |" in there.split("###")[0]
    seconds = {r["p"]: r["train_seconds"] for r in trained}
    assert f"| {seconds[0] / seconds[3]:.2f}x |" in there  # against the dense run of its own machine only
    # a run that shared the CPU is left out of energy, CO2 and the recorded speed-up, and says why
    epochs = [{"seconds": 10.0}, {"seconds": 14.0}]  # slowest over 1.3x the fastest
    shared = {1: {"other_load": 0.5}, 3: {"history": epochs, "other_load": None}}  # p=3: made before the measure
    text = table4.report([{**r, **shared.get(r["p"], {})} for r in trained], store.records(table4.TABLE))
    assert "p=1 seed 0 (other processes took up to 50% of the CPU); p=3 seed 0 (its epochs took 10 to 14 s)." in text
    for p in (1, 3):
        assert next(row for row in text.splitlines() if row.startswith(f"| {p} |")).count(" not timed alone ") == 3
    assert "| not timed alone |" not in next(row for row in text.splitlines() if row.startswith("| 0 |"))
    # the generated page: every table's section (the paper's column alone where we have no run) and the plots
    page = paper_tables.generate(tmp_path / "results", tmp_path / "docs" / "paper_tables.md")
    assert page == (tmp_path / "docs" / "paper_tables.md").read_text()
    assert "## Table 2: pruning at initialization" in page and "## Table 4: training cost" in page
    for table in ("table1", "table3", "table5"):
        assert f"(`python -m examples.cifar.{table} --arch resnet32" in page
    for image in ("table2_resnet20_smoke.png", "table2_scores_resnet20_smoke.png"):
        assert f"(img/{image})" in page and (tmp_path / "docs" / "img" / image).stat().st_size > 1000
    table4_part = page.split("## Table 4")[1].split("## Table 5")[0]
    assert "### resnet20, budget `smoke`, snip tickets (extra: the paper's Table 4 uses grasp)" in table4_part
    assert "### resnet32, the paper's numbers only" in table4_part  # the paper's GraSP rows, ours not run
    assert "**Budget `smoke`, on " in table4_part and "no converged accuracy of resnet20" in table4_part


def test_first_seed_trains_and_times_the_seeds_from_there(tmp_path: Path) -> None:
    npz = write_cifar_npz(tmp_path / "c.npz", train_per_class=16, test_per_class=2)
    argv = ["--arch", "resnet20", "--densities", "2", "--seeds", "1", "--first-seed", "1", "--budget", "smoke"]
    argv += ["--data", str(npz), "--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs"), "--quiet"]
    assert table4.main(argv) == 0
    store = ResultsStore(tmp_path / "results")
    trained = store.records(table2.TABLE)
    assert sorted((r["criterion"], r["seed"]) for r in trained) == [("dense", 1), ("grasp", 1)]  # seed 1 only
    (timing,) = store.records(table4.TABLE)
    assert set(timing["step_seconds"]) == {"0", "2"}  # timed from seed 1's networks: there is no seed 0


def test_steps_are_timed_as_the_budget_trains_once_per_machine(tmp_path: Path, monkeypatch) -> None:
    schedule = Schedule(epochs=1, batch_size=8, label_smoothing=0.1, channels_last=True)
    budget = dataclasses.replace(BUDGETS["smoke"], name="cpu-full", schedule=schedule)
    layouts: list[bool] = []

    def build(arch: str, removed: list[str]) -> nn.Module:
        model = tickets.build(arch, removed)
        model.conv1.register_forward_pre_hook(
            lambda m, a: layouts.append(a[0].is_contiguous(memory_format=torch.channels_last))
        )
        return model

    monkeypatch.setattr(table4, "build", build)
    store = ResultsStore(tmp_path / "results")
    args = ("resnet20", "grasp", [2], 1, budget, _random_data(train=16, test=8), store)
    run = dict(runs=tmp_path / "runs", progress=False, repeats=1)
    first = table4.run_table(*args, **run)
    assert layouts and all(layouts) and first["channels_last"] and first["precision"] == "float32"
    assert table4.run_table(*args, **run) is None  # timed on this machine already
    other = {"cpu": "Other CPU", "cores": 4}
    for module in (table4, store_module):
        monkeypatch.setattr(module, "machine", lambda: other)
    second = table4.run_table(*args, **run)  # another machine times its own
    assert second["machine"] == other and second["run_id"].endswith("-grasp-steps-other-cpu-4-cores")
    assert len(store.records(table4.TABLE)) == 2
    # a timing that does not step as the runs trained says so
    trained = [alone(r) for r in store.records(table2.TABLE)]
    text = table4.report(trained, [first])
    assert "(float32, channels-last, eager; seed 0's networks) on cpu" in text
    bf16 = [{**r, "precision": "bfloat16 autocast"} for r in trained]
    text = table4.report(bf16, [first])
    assert "; the runs trained bfloat16 autocast, channels-last, eager, so this speed-up is of other steps" in text
