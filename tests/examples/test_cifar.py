"""The CIFAR example: augmentation, resumable training, the results store and Table 2 at a smoke budget."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from examples.cifar import cka, table2
from examples.cifar import train as train_module
from examples.cifar.budgets import BUDGETS
from examples.cifar.data import PAD, CifarData, augment
from examples.cifar.store import ResultsStore
from examples.cifar.train import Schedule, placed, train, training_step
from residual_prune.models import resnet20
from tests.test_data import write_cifar_npz


def _random_data(train: int = 64, test: int = 20, seed: int = 0) -> CifarData:
    g = torch.Generator().manual_seed(seed)
    return CifarData(
        torch.randint(0, 256, (train, 3, 32, 32), generator=g, dtype=torch.uint8),
        torch.arange(train) % 10,
        torch.randint(0, 256, (test, 3, 32, 32), generator=g, dtype=torch.uint8),
        torch.arange(test) % 10,
        "random test images",
    )


def test_augment_crops_a_window_of_the_padded_image_and_may_flip() -> None:
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = augment(images, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, (PAD,) * 4)
    flipped = 0
    for i in range(len(images)):
        windows = [padded[i, :, dy : dy + 32, dx : dx + 32] for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1)]
        plain = any(torch.equal(out[i], w) for w in windows)
        mirrored = any(torch.equal(out[i], w.flip(2)) for w in windows)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 0 < flipped < len(images) and out.dtype == torch.uint8 and out.shape == images.shape


def test_load_reads_both_splits_from_an_npz(tmp_path: Path) -> None:
    data = CifarData.load(write_cifar_npz(tmp_path / "c.npz"), train_limit=20)
    assert data.train_x.shape == (20, 3, 32, 32) and len(data.test_y) == 20 and "offline JPEG copy" in data.source
    assert torch.bincount(data.train_y, minlength=10).tolist() == [2] * 10


def test_training_learns_and_keeps_rewind_points(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = resnet20()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(
        model,
        _random_data(),
        Schedule(epochs=2, batch_size=16),
        seed=0,
        checkpoint_dir=tmp_path,
        keep_epochs=(0, 1),
        progress=False,
    )
    assert [h["epoch"] for h in result.history] == [1, 2] and result.train_seconds > 0
    assert [h["lr"] for h in result.history] == pytest.approx([0.1, 0.01])  # milestones at 50% and 75% of 2 epochs
    theta0 = torch.load(tmp_path / "theta_0.pt", weights_only=True)
    assert all(torch.equal(theta0[k], initial[k]) for k in initial)
    theta1 = torch.load(tmp_path / "theta_1.pt", weights_only=True)
    assert not torch.equal(theta1["conv1.weight"], initial["conv1.weight"])


class Killed(Exception):
    pass


def test_a_killed_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    data, schedule = _random_data(), Schedule(epochs=3, batch_size=16)
    torch.manual_seed(0)
    straight = resnet20()
    train(straight, data, schedule, seed=3, checkpoint_dir=tmp_path / "a", progress=False)

    def kill_after_two(epoch: int, record: dict) -> None:
        if epoch == 2:
            raise Killed

    torch.manual_seed(0)
    first = resnet20()
    with pytest.raises(Killed):
        train(first, data, schedule, seed=3, checkpoint_dir=tmp_path / "b", progress=False, on_epoch=kill_after_two)
    torch.manual_seed(99)  # a fresh process: other weights, other global random state
    resumed = resnet20()
    result = train(resumed, data, schedule, seed=3, checkpoint_dir=tmp_path / "b", progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_store_skips_what_it_has(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    assert not store.has("t", "r")
    store.save("t", "r", {"accuracy": 1.0})
    assert store.has("t", "r") and store.records("t") == [{"accuracy": 1.0}]
    assert not list((tmp_path / "t").glob(".*"))  # no temporary file left


def test_table2_smoke(tmp_path: Path) -> None:
    budget = dataclasses.replace(BUDGETS["smoke"], schedule=Schedule(epochs=1, batch_size=16))
    store = ResultsStore(tmp_path / "results")
    data = _random_data(train=320, test=40)
    records = table2.run_table(
        "resnet20", ["snip", "grasp"], [1, 2], 1, budget, data, store, runs=tmp_path / "runs", progress=False
    )
    assert [(r["criterion"], r["p"]) for r in records] == [
        ("dense", 0),
        ("snip", 1),
        ("snip", 2),
        ("grasp", 1),
        ("grasp", 2),
    ]
    dense = records[0]
    for r in records[1:]:
        assert len(r["removed"]) == r["p"] and r["params"] < dense["params"] and r["flops"] < dense["flops"]
        assert 0 <= r["accuracy"] <= 100 and r["data"] == "random test images" and r["budget"] == "smoke"
    assert (
        table2.run_table(
            "resnet20", ["snip", "grasp"], [1, 2], 1, budget, data, store, runs=tmp_path / "runs", progress=False
        )
        == []
    )  # everything stored: nothing reruns
    text = table2.report(store.records(table2.TABLE))
    assert "### resnet20, budget `smoke`" in text and text.count("| snip |") == 2 and "random test images" in text

    similarity = cka.run_table("smoke", data, store, runs=tmp_path / "runs", images=30, progress=False)
    assert sorted((r["criterion"], r["p"]) for r in similarity) == [
        ("grasp", 1),
        ("grasp", 2),
        ("snip", 1),
        ("snip", 2),
    ]
    for r in similarity:
        assert set(r["cka"]) == set(cka.LAYERS) and all(0 <= v <= 1 + 1e-9 for v in r["cka"].values())
        assert r["cka"]["layer1"] < 1  # trained from another starting point: not the same representation
    assert cka.run_table("smoke", data, store, runs=tmp_path / "runs", progress=False) == []
    assert cka.report(store.records(cka.TABLE)).count("| snip |") == 2


def test_bf16_autocast_runs_only_where_the_device_has_native_bfloat16(tmp_path: Path, monkeypatch) -> None:
    data, schedule = _random_data(train=32), Schedule(epochs=1, batch_size=16, bf16=True)
    seen: list[torch.dtype] = []
    model = resnet20()
    model.fc.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    monkeypatch.setattr(train_module, "bf16_is_native", lambda device: False)
    with pytest.warns(UserWarning, match="no native bfloat16.*float32"):
        emulated = train(model, data, schedule, seed=0, checkpoint_dir=tmp_path, progress=False)
    assert emulated.precision == emulated.fields()["precision"] == "float32" and set(seen) == {torch.float32}
    monkeypatch.setattr(train_module, "bf16_is_native", lambda device: True)
    with pytest.raises(RuntimeError, match="another training setting"):  # a float32 checkpoint is not resumed in bf16
        train(resnet20(), data, schedule, seed=0, checkpoint_dir=tmp_path, progress=False)
    seen.clear()
    native = train(model, data, schedule, seed=0, progress=False)
    assert native.precision == "bfloat16 autocast" and torch.bfloat16 in seen


def test_a_training_step_is_the_schedules() -> None:
    """Channels-last input, the label-smoothed cross-entropy and Nesterov SGD with weight decay, as written by hand
    (in channels-last too: the two layouts' kernels round differently, by up to 7% of an update on one thread)."""
    cpu = torch.device("cpu")
    schedule = Schedule(epochs=1, lr=0.1, weight_decay=5e-4, nesterov=True, label_smoothing=0.1, channels_last=True)
    torch.manual_seed(0)
    model = resnet20()
    by_hand = placed(copy.deepcopy(model), schedule, cpu)
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    layouts: list[bool] = []
    model.conv1.register_forward_pre_hook(
        lambda m, a: layouts.append(a[0].is_contiguous(memory_format=torch.channels_last))
    )
    _, step = training_step(placed(model, schedule, cpu), schedule, cpu, bf16=False)
    loss = step(x, y)
    optimizer = torch.optim.SGD(by_hand.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    expected = F.cross_entropy(by_hand(x.contiguous(memory_format=torch.channels_last)), y, label_smoothing=0.1)
    expected.backward()
    optimizer.step()
    assert layouts == [True] and model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(loss, expected.detach())
    for (name, got), want in zip(model.named_parameters(), by_hand.parameters(), strict=True):
        torch.testing.assert_close(got, want, msg=name)


def test_a_checkpoint_of_another_setting_is_not_resumed(tmp_path: Path) -> None:
    data = _random_data()
    torch.manual_seed(0)
    train(resnet20(), data, Schedule(epochs=1, batch_size=16), seed=0, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(RuntimeError, match="another training setting"):
        train(resnet20(), data, Schedule(epochs=2, batch_size=16), seed=0, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(RuntimeError, match="delete"):
        train(
            resnet20(),
            _random_data(train=32),
            Schedule(epochs=1, batch_size=16),
            seed=0,
            checkpoint_dir=tmp_path,
            progress=False,
        )


def test_table2_runs_under_torchrun_with_two_processes(tmp_path: Path) -> None:
    """DistributedDataParallel on the CPU (gloo): both processes train, only the first writes results."""
    import os
    import subprocess
    import sys

    npz = write_cifar_npz(tmp_path / "c.npz", train_per_class=6, test_per_class=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "examples.cifar.table2",
            "--arch",
            "resnet20",
            "--criteria",
            "snip",
            "--densities",
            "1",
            "--seeds",
            "1",
            "--budget",
            "smoke",
            "--data",
            str(npz),
            "--results",
            str(tmp_path / "results"),
            "--runs",
            str(tmp_path / "runs"),
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = ResultsStore(tmp_path / "results").records(table2.TABLE)
    assert sorted(r["criterion"] for r in records) == ["dense", "snip"]
    assert all(0 <= r["accuracy"] <= 100 and r["history"][0]["epoch"] == 1 for r in records)
