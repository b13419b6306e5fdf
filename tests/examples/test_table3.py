"""Table 3: filter counting, filter pruning to a filter count with SNIP/GraSP-style importance, and the table at a
smoke budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from examples.cifar import table2, table3
from examples.cifar.budgets import BUDGETS
from examples.cifar.filters import ScoreImportance, count_filters, filter_scores, prune_to_filters
from examples.cifar.store import ResultsStore
from examples.cifar.tickets import build
from examples.cifar.train import Schedule
from residual_prune.models import resnet20
from tests.examples.test_cifar import _random_data


def test_count_filters_of_resnet20_by_hand() -> None:
    # stem 16; per stage 3 blocks x 2 convs of 16 / 32 / 64 channels; 1x1 downsample convs of 32 and 64
    assert count_filters(resnet20()) == 16 + 6 * 16 + (6 * 32 + 32) + (6 * 64 + 64) == 784
    assert count_filters(build("resnet20", ["layer1.1"])) == 784 - 2 * 16
    assert count_filters(build("resnet20", ["layer3.2", "layer2.1"])) == 784 - 2 * 64 - 2 * 32


def _kept(ratio: float) -> int:
    """resnet20 after torch-pruning removes ``ratio`` of every group's channels: each stage has 7 convs of its width
    (3 block-internal groups, one residual-stream group of 4 convs: stem or downsample, and 3 second convs)."""
    return sum(7 * int(width * (1 - ratio)) for width in (16, 32, 64))


def test_filter_prune_reaches_the_closest_filter_count_and_leaves_the_input_alone() -> None:
    torch.manual_seed(0)
    model = resnet20()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = (torch.randn(16, 3, 32, 32), torch.arange(16) % 10)
    target = count_filters(build("resnet20", ["layer3.1"]))  # 656
    pruned, ratio = prune_to_filters(model, "snip", target, batch)
    kept = count_filters(pruned)
    reachable = {_kept(r / 4000) for r in range(0, 3801)}
    assert kept == _kept(ratio) and abs(kept - target) == min(abs(n - target) for n in reachable)
    assert abs(kept - target) <= 7
    assert pruned.training
    norms = [m for m in pruned.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.running_var.eq(1).all() and m.num_batches_tracked == 0 for m in norms)  # torch-pruning traced in eval
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # BN statistics included
    assert model.training and all(p.grad is None for p in model.parameters()) and count_filters(model) == 784
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert pruned(torch.randn(3, 3, 32, 32)).shape == (3, 10)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 1, bias=False)
        self.conv2 = nn.Conv2d(4, 5, 1, bias=False)
        self.fc = nn.Linear(5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(torch.tanh(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def _conv1_group(model: nn.Module, x: torch.Tensor) -> tp.Group:
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    return graph.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=list(range(4)))


def _per_filter(conv1: torch.Tensor, conv2: torch.Tensor) -> torch.Tensor:
    """Sum over what removing a conv1 filter removes: its kernel and conv2's input slice."""
    return conv1.flatten(1).sum(1) + conv2.transpose(0, 1).flatten(1).sum(1)


def test_grasp_importance_is_minus_the_grasp_score_summed_per_filter() -> None:
    torch.manual_seed(0)
    model = Tiny().double()
    x, y = torch.randn(6, 3, 5, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 4, 5])
    names = ["conv1.weight", "conv2.weight", "fc.weight"]
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    theta = torch.cat([params[n].detach().flatten() for n in names])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        weights = dict(zip(names, torch.split(flat, [s.numel() for s in shapes]), strict=True))
        weights = {n: w.view(s) for (n, w), s in zip(weights.items(), shapes, strict=True)}
        logits = torch.func.functional_call(model, {**params, **weights}, (x,))
        return F.cross_entropy(logits / 200.0, y)

    g = torch.func.grad(loss)(theta)
    hessian = torch.func.hessian(loss)(theta)  # 82 x 82
    grasp_score = -(theta * (hessian @ g))  # GraSP's S = -(w * Hg), per weight
    s_conv1, s_conv2, _ = torch.split(grasp_score, [s.numel() for s in shapes])
    expected = -_per_filter(s_conv1.view(shapes[0]), s_conv2.view(shapes[1]))  # importance = -S (high S: removed)

    scores = filter_scores(model, "grasp", (x, y))
    assert [k + ".weight" for k in scores] == names
    got = ScoreImportance({model.get_submodule(k): v for k, v in scores.items()})(_conv1_group(model, x[:1]))
    assert torch.allclose(got.double(), expected, rtol=1e-4, atol=1e-12), (got, expected)


def test_snip_importance_is_torch_prunings_taylor_importance() -> None:
    torch.manual_seed(1)
    model = Tiny()
    x, y = torch.randn(6, 3, 5, 5), torch.tensor([0, 1, 2, 3, 4, 5])
    scores = filter_scores(model, "snip", (x, y))
    F.cross_entropy(model(x), y).backward()
    group = _conv1_group(model, x[:1])
    taylor = tp.importance.GroupTaylorImportance(
        group_reduction="sum", normalizer=None, target_types=[nn.Conv2d, nn.Linear]
    )(group)
    got = ScoreImportance({model.get_submodule(k): v for k, v in scores.items()})(group)
    hand = _per_filter(
        (model.conv1.weight * model.conv1.weight.grad).abs(), (model.conv2.weight * model.conv2.weight.grad).abs()
    )
    assert torch.allclose(got, taylor, rtol=1e-5) and torch.allclose(got, hand.detach(), rtol=1e-5)


def test_snip_importance_matches_taylor_on_every_group_of_a_resnet() -> None:
    torch.manual_seed(0)
    model = resnet20()
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8)
    scores = filter_scores(model, "snip", (x, y))  # BN on batch statistics, the rest in eval mode: as below
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()
    F.cross_entropy(model(x), y).backward()
    ours = ScoreImportance({model.get_submodule(k): v for k, v in scores.items()})
    taylor = tp.importance.GroupTaylorImportance(
        group_reduction="sum", normalizer=None, target_types=[nn.Conv2d, nn.Linear]
    )
    groups = list(
        tp.DependencyGraph().build_dependency(model, example_inputs=x[:1]).get_all_groups(ignored_layers=[model.fc])
    )
    assert len(groups) == 12  # per stage: 3 block-internal groups and the residual stream (fc reads layer3's)
    for group in groups:
        assert torch.allclose(ours(group), taylor(group), rtol=1e-4)


def test_table3_smoke(tmp_path: Path) -> None:
    budget = dataclasses.replace(BUDGETS["smoke"], schedule=Schedule(epochs=1, batch_size=16))
    store = ResultsStore(tmp_path / "results")
    data = _random_data(train=64, test=20)  # 4 steps per training run, a calibration batch of 64
    run = dict(runs=tmp_path / "runs", progress=False)
    records = table3.run_table("resnet20", ["snip"], [1], 1, budget, data, store, **run)
    assert [r["run_id"] for r in records] == ["resnet20-smoke-filter-snip-p1-seed0"]
    assert sorted(r["run_id"] for r in store.records(table2.TABLE)) == [
        "resnet20-smoke-dense-p0-seed0",
        "resnet20-smoke-snip-p1-seed0",
    ]
    (record,) = records
    dense, layer = (store.records(table2.TABLE)[i] for i in (0, 1))
    assert record["target_filters"] == count_filters(build("resnet20", layer["removed"])) < 784
    assert abs(record["filters"] - record["target_filters"]) <= 7 and record["dense_filters"] == 784
    assert record["params"] < dense["params"] and record["flops"] < dense["flops"] and 0 < record["filter_ratio"] < 1
    assert 0 <= record["accuracy"] <= 100 and record["data"] == "random test images" and record["budget"] == "smoke"
    assert record["layer_run_id"] == layer["run_id"] and record["machine"]["cores"] >= 1 and record["train_seconds"] > 0
    assert table3.run_table("resnet20", ["snip"], [1], 1, budget, data, store, **run) == []  # nothing reruns
    text = table3.report(store.records(table2.TABLE), store.records(table3.TABLE))
    assert text.startswith("## Table 3: layer vs filter pruning at matched filter sparsity")
    assert "### resnet20, budget `smoke`" in text and "| dense | 0 | 784 |" in text and "random test images" in text
    assert f"| snip | 1 | {record['target_filters']} / {record['filters']} |" in text
    # a dense run of a seed that has no filter ticket (another table trained it) stays out of the dense row
    other_seed = {**dense, "seed": 1, "run_id": "resnet20-smoke-dense-p0-seed1", "accuracy": dense["accuracy"] + 50}
    text = table3.report([*store.records(table2.TABLE), other_seed], store.records(table3.TABLE))
    assert f"| {dense['accuracy']:.2f} | | | | 1 |" in text
    assert table3.main(["--report", "--results", str(tmp_path / "results")]) == 0
