"""plan_pruning / prune_layers: results, and a clear error for every kind of bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import residual_prune as rp
from residual_prune.models import resnet20
from tests.helpers import assert_same_state, state_snapshot

X = torch.randn(1, 3, 32, 32)


def test_prune_layers_removes_lowest_scored_blocks(cifar_model: nn.Module) -> None:
    plan = rp.plan_pruning(cifar_model, criterion="l1", n=3, example_inputs=X)
    ranked = sorted(plan.scores, key=plan.scores.get)
    assert sorted(plan.removed) == sorted(ranked[:3])
    pruned = rp.prune_layers(cifar_model, criterion="l1", n=3, example_inputs=X)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in cifar_model.parameters())
    assert rp.verify(cifar_model, pruned, plan, X) <= 1e-5


def test_kept_layers_keep_their_weights_and_names(cifar_model: nn.Module) -> None:
    plan = rp.plan_pruning(cifar_model, criterion="random", n=2, example_inputs=X, seed=0)
    pruned = rp.apply_plan(cifar_model, plan)
    original = cifar_model.state_dict()
    kept = pruned.state_dict()
    assert set(kept) < set(original)
    assert all(torch.equal(v, original[k]) for k, v in kept.items())
    assert not any(k.startswith(tuple(f"{r}." for r in plan.removed)) for k in kept)


def test_ratio_and_inplace(cifar_model: nn.Module) -> None:
    plan = rp.plan_pruning(cifar_model, criterion="random", ratio=0.5, example_inputs=X)
    assert len(plan.removed) == 4  # round(0.5 * 7)
    same = rp.prune_layers(cifar_model, criterion="random", ratio=0.5, example_inputs=X, inplace=True)
    assert same is cifar_model
    assert (
        sum(1 for _ in cifar_model.layer1) + sum(1 for _ in cifar_model.layer2) + sum(1 for _ in cifar_model.layer3)
        == 9 - 4
    )


def test_example_inputs_default_to_data_and_one_shot_iterators_are_not_consumed(cifar_model, cifar_batch) -> None:
    seen = []

    def batches():
        for _ in range(2):
            seen.append(1)
            yield cifar_batch

    plan = rp.plan_pruning(cifar_model, criterion="snip", n=1, data=batches(), num_batches=2, progress=False)
    reference = rp.plan_pruning(
        cifar_model, criterion="snip", n=1, data=[cifar_batch, cifar_batch], num_batches=2, progress=False
    )
    assert len(seen) == 2
    assert plan.scores == pytest.approx(reference.scores)


def test_pruned_model_trains_saves_and_traces_again(cifar_model, cifar_batch, tmp_path) -> None:
    plan = rp.plan_pruning(cifar_model, criterion="grasp", n=2, data=[cifar_batch], progress=False)
    pruned = rp.apply_plan(cifar_model, plan)
    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.1)
    x, y = cifar_batch
    losses = []
    for _ in range(3):
        loss = nn.functional.cross_entropy(pruned(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    torch.fx.symbolic_trace(pruned)
    assert len(rp.find_blocks(pruned, X)) == 9 - 2

    plan.save(tmp_path / "plan.json")
    torch.save(pruned.state_dict(), tmp_path / "pruned.pt")
    fresh = rp.apply_plan(resnet20(), rp.PruningPlan.load(tmp_path / "plan.json"))
    fresh.load_state_dict(torch.load(tmp_path / "pruned.pt", weights_only=True))
    pruned.eval(), fresh.eval()
    assert torch.equal(pruned(x), fresh(x))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        if x.abs().sum() >= 0:  # data-dependent control flow defeats torch.fx (always true, so runs are alike)
            return self.conv(x)
        return x


class WithUntraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.Sequential(*[Residual() for _ in range(3)])

    def forward(self, x):
        return self.blocks(self.stem(x)).mean((2, 3))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = DataDependent()

    def forward(self, x):
        return x + self.inner(x)


def _bad_input_cases(temporary_criteria):
    temporary_criteria("nan_scores", lambda model, blocks, data, **kw: {b.name: float("nan") for b in blocks})
    temporary_criteria("partial_scores", lambda model, blocks, data, **kw: {blocks[0].name: 1.0})
    temporary_criteria("broken", lambda model, blocks, data, **kw: 1 / 0)
    temporary_criteria("huge", lambda model, blocks, data, **kw: {b.name: 10**400 for b in blocks})

    def type_error_inside(model, blocks, data, seed: int = 0):
        return {b.name: len(b) for b in blocks}  # a bug of the criterion: ResidualBlock has no len()

    temporary_criteria("type_error_inside", type_error_inside)
    good = (torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    return [
        (dict(criterion="snip", n=1, example_inputs=X), rp.MissingDataError, "needs labelled data"),
        (dict(criterion="l1", n=8, example_inputs=X), rp.InvalidArgumentError, "only 7 removable"),
        (dict(criterion="l1", n=1, ratio=0.5, example_inputs=X), rp.InvalidArgumentError, "exactly one"),
        (dict(criterion="l1", example_inputs=X), rp.InvalidArgumentError, "exactly one"),
        (dict(criterion="l1", n=-1, example_inputs=X), rp.InvalidArgumentError, "non-negative"),
        (dict(criterion="l1", ratio=1.5, example_inputs=X), rp.InvalidArgumentError, r"\[0, 1\]"),
        (dict(criterion="magic", n=1, example_inputs=X), rp.UnknownCriterionError, "known criteria: .*grasp"),
        (dict(criterion="nan_scores", n=1, example_inputs=X), rp.CriterionError, "must be finite"),
        (dict(criterion="partial_scores", n=1, example_inputs=X), rp.CriterionError, "no score for block"),
        (dict(criterion="broken", n=1, example_inputs=X), rp.CriterionError, "ZeroDivisionError"),
        (dict(criterion="huge", n=1, example_inputs=X), rp.CriterionError, "the score inf; scores must be finite"),
        (dict(criterion="type_error_inside", n=1, example_inputs=X, seed=1), rp.CriterionError, "failed: TypeError"),
        (dict(criterion="type_error_inside", n=1, example_inputs=X, sed=1), rp.InvalidArgumentError, "options"),
        (dict(criterion="snip", n=1, data=[(torch.randn(4, 1, 28, 28), good[1])]), rp.DataError, "do not fit"),
        (dict(criterion="snip", n=1, data=[good[0]], example_inputs=X), rp.DataError, r"\(inputs, targets\)"),
        (
            dict(criterion="snip", n=1, data=[(good[0], torch.randint(0, 99, (4,)))], example_inputs=X, progress=False),
            rp.DataError,
            "does not fit the model",
        ),
        (dict(criterion="l1", n=1, example_inputs=torch.randn(1, 5, 32, 32)), rp.DataError, "do not fit"),
        (dict(criterion="l1", n=1, policy="strict", example_inputs=X), rp.InvalidArgumentError, "unknown policy"),
        (dict(criterion="l1", n=1), rp.InvalidArgumentError, "example_inputs"),
        (dict(criterion="random", n=1, example_inputs=X, sed=3), rp.InvalidArgumentError, "sed"),
    ]


def test_bad_input_raises_library_errors_and_leaves_model_untouched(cifar_model, temporary_criteria) -> None:
    cifar_model.train()
    snapshot = state_snapshot(cifar_model)
    for kwargs, error, message in _bad_input_cases(temporary_criteria):
        with pytest.raises(error, match=message) as info:
            rp.prune_layers(cifar_model, **kwargs)
        assert isinstance(info.value, rp.ResidualPruneError)
        assert_same_state(cifar_model, snapshot)
        assert cifar_model.training and all(m.training for m in cifar_model.modules())
        assert all(p.grad is None for p in cifar_model.parameters())


def test_untraceable_model_names_module_and_suggests_leaf_modules() -> None:
    model = WithUntraceable()
    with pytest.raises(rp.TraceError, match=r"blocks\.0\.inner.*DataDependent.*leaf_modules=\(DataDependent,\)"):
        rp.find_blocks(model, X, frontend="fx")
    assert {b.frontend for b in rp.find_blocks(model, X)} == {"eager"}  # "auto" records one run instead
    blocks = rp.find_blocks(model, X, leaf_modules=(DataDependent,))
    assert [b.name for b in blocks if b.removable] == ["blocks.0", "blocks.1", "blocks.2"]
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=X, leaf_modules=(DataDependent,))
    assert len(plan.removed) == 1


def test_registered_notrace_module_is_used() -> None:
    rp.register_notrace_module(DataDependent)
    try:
        assert len(rp.find_blocks(WithUntraceable(), X)) == 3
    finally:
        from residual_prune.tracing import _notrace_modules

        _notrace_modules.discard(DataDependent)


def test_verify_with_inputs_the_model_does_not_accept_is_a_data_error(cifar_model) -> None:
    plan = rp.plan_pruning(cifar_model, criterion="l1", n=1, example_inputs=X)
    pruned = rp.apply_plan(cifar_model, plan)
    with pytest.raises(rp.DataError, match=r"example_inputs of shape \(1, 5, 32, 32\) do not fit"):
        rp.verify(cifar_model, pruned, plan, torch.randn(1, 5, 32, 32))


def test_verify_blames_a_pruned_model_that_fails_where_the_original_works(cifar_model) -> None:
    plan = rp.plan_pruning(cifar_model, criterion="l1", n=1, example_inputs=X)
    with pytest.raises(rp.VerificationError, match="fails on inputs the original accepts"):
        rp.verify(cifar_model, nn.Linear(3, 3), plan, X)


def test_prune_layers_analyses_the_model_once(cifar_model, monkeypatch) -> None:
    import residual_prune.analysis as blocks  # where analyse captures

    calls = []
    capture = blocks.capture
    monkeypatch.setattr(blocks, "capture", lambda *args, **kwargs: calls.append(1) or capture(*args, **kwargs))
    pruned = rp.prune_layers(cifar_model, criterion="l1", n=2, example_inputs=X)
    assert len(calls) == 1  # the plan is applied on the analysis it was made on
    plan = rp.plan_pruning(cifar_model, criterion="l1", n=2, example_inputs=X)
    assert rp.verify(cifar_model, pruned, plan, X) == 0


def test_prune_layers_refuses_inplace_sublayer_pruning_before_scoring(cifar_model, temporary_criteria) -> None:
    calls = []
    temporary_criteria("counted", lambda model, blocks, data, **kw: calls.append(1) or {b.name: 0.0 for b in blocks})
    with pytest.raises(rp.InvalidArgumentError, match="cannot modify the model in place"):
        rp.prune_layers(cifar_model, criterion="counted", n=1, example_inputs=X, granularity="sublayer", inplace=True)
    assert not calls


def test_plan_pruning_passes_loss_fn_and_forward_fn_to_the_criterion(cifar_model, cifar_batch) -> None:
    calls = []

    def loss_fn(outputs, batch):
        calls.append("loss")
        return nn.functional.cross_entropy(outputs, batch["y"])

    def forward_fn(model, batch):
        calls.append("forward")
        return model(batch["x"])

    data = [{"x": cifar_batch[0], "y": cifar_batch[1]}]
    kwargs = dict(criterion="snip", n=1, data=data, example_inputs=X, progress=False)
    plan = rp.plan_pruning(cifar_model, loss_fn=loss_fn, forward_fn=forward_fn, **kwargs)
    assert calls == ["forward", "loss"] and plan.criterion_kwargs == {"progress": False}  # not stored
    assert plan.scores == rp.plan_pruning(cifar_model, **{**kwargs, "data": [cifar_batch]}).scores
    rp.prune_layers(cifar_model, loss_fn=loss_fn, forward_fn=forward_fn, **kwargs)
    assert len(calls) == 4


def test_a_criterion_that_takes_n_is_told_how_many_blocks_the_plan_removes(cifar_model, temporary_criteria) -> None:
    told = []

    def counted(model, blocks, data, n: int = 99):
        told.append(n)
        return {b.name: float(b.order) for b in blocks}

    temporary_criteria("counted_n", counted)
    plan = rp.plan_pruning(cifar_model, criterion="counted_n", n=3, example_inputs=X)
    rp.plan_pruning(cifar_model, criterion="counted_n", ratio=0.5, example_inputs=X)  # 4 of the 7 removable blocks
    assert told == [3, 4] and plan.criterion_kwargs == {}  # not stored: the plan records n as its removed blocks


def test_loss_fn_for_a_criterion_without_a_loss_is_refused(cifar_model, cifar_batch) -> None:
    kwargs = dict(n=1, data=[cifar_batch], example_inputs=X, progress=False)
    with pytest.raises(rp.InvalidArgumentError, match="criterion 'kl' does not take loss_fn"):
        rp.plan_pruning(cifar_model, criterion="kl", loss_fn=lambda outputs, batch: outputs.sum(), **kwargs)
    with pytest.raises(rp.InvalidArgumentError, match="forward_fn must be a function, got int"):
        rp.plan_pruning(cifar_model, criterion="snip", forward_fn=3, **kwargs)


def test_example_inputs_of_dict_batches_are_the_first_batch_without_labels() -> None:
    from residual_prune.api import _first_inputs

    batch = {"input_ids": torch.zeros(4, 7, dtype=torch.long), "labels": torch.zeros(4, dtype=torch.long)}
    inputs, data = _first_inputs(iter([batch]))
    assert inputs.keys() == {"input_ids"} and inputs["input_ids"] is batch["input_ids"]
    assert list(data) == [batch]
    assert _first_inputs(batch)[0].keys() == {"input_ids"}  # a single batch
    with pytest.raises(rp.DataError, match="hold no tensor"):
        _first_inputs([{"labels": batch["labels"]}])
