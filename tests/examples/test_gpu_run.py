"""The one-GPU command (examples.cifar.gpu_run), at smoke size on the CPU: the runs of Table 2 and the Table 4 cost
rows, trained by several processes from one queue, skipped when stored; and the schedule the gpu and cpu-full budgets
use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from examples.cifar import gpu_run
from examples.cifar import train as train_module
from examples.cifar.budgets import BUDGETS
from examples.cifar.store import ResultsStore
from examples.cifar.train import Schedule, train
from residual_prune.models import resnet20
from tests.examples.test_cifar import _random_data
from tests.test_data import write_cifar_npz


def test_the_jobs_are_table2_and_the_papers_table4_densities_longest_first() -> None:
    jobs = gpu_run.jobs()
    assert len(jobs) == len(set(jobs)) == 16
    assert {(c, p) for a, c, p in jobs if a == "resnet32"} == {("dense", 0)} | {
        (c, p) for c in ("snip", "grasp") for p in range(1, 6)
    }
    assert {(c, p) for a, c, p in jobs if a == "resnet56"} == {
        ("dense", 0),
        ("grasp", 3),
        ("grasp", 4),
        ("grasp", 5),
        ("grasp", 12),
    }
    assert jobs[0] == ("resnet56", "dense", 0) and jobs[-1] == ("resnet32", "grasp", 5)


def test_smoke_run_with_two_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        gpu_run, "TABLE2", [("resnet32", "dense", 0), ("resnet32", "snip", 1), ("resnet32", "grasp", 2)]
    )
    npz = write_cifar_npz(tmp_path / "c.npz", train_per_class=32, test_per_class=2)
    argv = ["--budget", "smoke", "--workers", "2", "--archs", "resnet32", "--data", str(npz)]
    argv += ["--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]
    assert gpu_run.main(argv) == 0
    store = ResultsStore(tmp_path / "results")
    trained = store.records("table2")
    assert len(trained) == 3 and {r["budget"] for r in trained} == {"smoke"}
    assert sorted((r["criterion"], len(r["removed"])) for r in trained) == [("dense", 0), ("grasp", 2), ("snip", 1)]
    assert all("1 other run" in r["timing_note"] for r in trained)  # trained two at once: wall-clock not their own
    (timing,) = store.records("table4")  # the grasp tickets against dense, side by side
    assert set(timing["step_seconds"]) == {"0", "2"} and timing["device"] == "cpu"
    summary = json.loads((tmp_path / "results" / "gpu_run-smoke.json").read_text())
    assert summary["runs"] == 3 and summary["total_seconds"] >= summary["train_seconds"] > 0
    capsys.readouterr()
    assert gpu_run.main(argv) == 0  # everything stored: nothing trained again
    assert "0 runs trained" in capsys.readouterr().out


def test_the_one_cycle_schedule() -> None:
    schedule = Schedule(epochs=2, lr=0.4, decay="linear", warmup=0.25)
    lrs = [schedule.lr_at(e, s, 4) for e in range(2) for s in range(4)]  # 8 steps, the first 2 warm up
    assert lrs == pytest.approx([0.2, 0.4, 0.4, 0.4 * 5 / 6, 0.4 * 4 / 6, 0.4 * 3 / 6, 0.4 * 2 / 6, 0.4 / 6])
    assert Schedule(epochs=4).lr_at(2, 7, 10) == pytest.approx(0.01)  # step decay: by epoch, as before
    with pytest.raises(ValueError, match="decay must be"):
        Schedule(epochs=1, decay="cosine")
    for name in ("gpu", "cpu-full"):
        budget = BUDGETS[name]
        assert budget.train_limit is None and budget.schedule.decay == "linear" and budget.schedule.bf16


def test_bf16_channels_last_training_follows_float32(monkeypatch) -> None:
    monkeypatch.setattr(train_module, "bf16_is_native", lambda device: True)  # bf16 even where it is emulated
    data = _random_data(train=64, test=16)
    data.train_x[:, 0] = (data.train_x[:, 0] // 8 + 24 * data.train_y[:, None, None]).to(torch.uint8)  # learnable
    options = {"epochs": 6, "lr": 0.1, "batch_size": 16, "decay": "linear", "warmup": 0.2, "label_smoothing": 0.1}
    losses = {}
    for fast in (False, True):
        torch.manual_seed(0)
        model = resnet20()
        schedule = Schedule(**options, nesterov=True, channels_last=fast, bf16=fast)
        result = train(model, data, schedule, seed=0, progress=False)
        assert result.precision == ("bfloat16 autocast" if fast else "float32")
        losses[fast] = [h["loss"] for h in result.history]
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.conv1.weight.dtype == torch.float32  # autocast: the weights and the optimizer stay float32
    assert losses[True][-1] < 0.6 * losses[True][0] and losses[False][-1] < 0.6 * losses[False][0]
    assert losses[True][-1] == pytest.approx(losses[False][-1], rel=0.1)
