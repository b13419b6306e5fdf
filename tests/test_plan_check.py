"""A plan only ever removes units find_blocks reports as removable; nothing changes before all of it is checked."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from torch import nn

import residual_prune as rp
from tests.helpers import Res, assert_same_state, state_snapshot

X = torch.randn(1, 3, 64, 64)


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18()


@pytest.fixture(scope="module")
def resnet18_plan(resnet18: nn.Module) -> rp.PruningPlan:
    return rp.plan_pruning(resnet18, criterion="l1", n=1, example_inputs=X)


@pytest.mark.parametrize(
    "removed, error, message",
    [
        (["fc"], rp.PlanMismatchError, "'fc', which is not a residual unit"),
        (["layer1"], rp.PlanMismatchError, "'layer1', which is not a residual unit"),
        (["layer1.0.relu"], rp.PlanMismatchError, "'layer1.0.relu', which is not"),
        (["conv1"], rp.PlanMismatchError, "'conv1', which is not"),
        (["layer2.0"], rp.PlanMismatchError, "'layer2.0', which cannot be removed: it carries downsampling"),
        (["layer1.1", "no.such.block"], rp.PlanMismatchError, "'no.such.block', which is not"),
        (["layer1.1", "layer1.1"], rp.CorruptPlanError, "'removed' names 'layer1.1' more than once"),
        ([""], rp.CorruptPlanError, "non-empty strings"),
        ([3], rp.CorruptPlanError, "list of block names"),
    ],
)
def test_a_plan_removing_anything_but_removable_units_is_refused_before_any_change(
    resnet18: nn.Module, resnet18_plan: rp.PruningPlan, removed: list, error: type, message: str
) -> None:
    plan = dataclasses.replace(resnet18_plan, removed=removed)
    snapshot, modules = state_snapshot(resnet18), dict(resnet18.named_modules())
    with pytest.raises(error, match=message):
        rp.apply_plan(resnet18, plan, inplace=True)
    with pytest.raises(error, match=message):
        rp.verify(resnet18, resnet18, plan, X)
    assert_same_state(resnet18, snapshot)
    assert dict(resnet18.named_modules()) == modules


def test_the_error_lists_the_removable_units(resnet18: nn.Module, resnet18_plan: rp.PruningPlan) -> None:
    with pytest.raises(rp.PlanMismatchError, match=r"its removable units are layer1\.0, layer1\.1, layer2\.1"):
        rp.apply_plan(resnet18, dataclasses.replace(resnet18_plan, removed=["fc"]))


def test_a_plan_is_checked_with_its_own_policy(resnet18: nn.Module) -> None:
    plan = rp.plan_pruning(resnet18, criterion="l1", n=1, example_inputs=X, policy="paper")
    with pytest.raises(rp.PlanMismatchError, match="'layer1.1', which cannot be removed: policy='paper'"):
        rp.apply_plan(resnet18, dataclasses.replace(plan, removed=["layer1.1"]))


class Outer(Res):
    """A residual unit holding two residual units: three removable units, at most two of them together."""

    def __init__(self):
        super().__init__()
        self.a, self.b = Res(), Res()

    def forward(self, x):
        y = self.b(self.a(x))
        return y + self.conv(y)


def _nested() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(Outer(), Outer())


NESTED_X = torch.randn(1, 4, 8, 8)


def test_nested_units_are_reported_with_what_they_contain() -> None:
    blocks = {b.name: b for b in rp.find_blocks(_nested(), NESTED_X)}
    assert sorted(blocks) == ["0", "0.a", "0.b", "1", "1.a", "1.b"] and all(b.removable for b in blocks.values())
    assert blocks["0"].contains == ("0.a", "0.b") and blocks["0.a"].contains == ()


def test_a_plan_removing_a_unit_and_one_inside_it_is_refused() -> None:
    model = _nested()
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=NESTED_X)
    for removed in (["0", "0.b"], ["0.a", "0"]):
        with pytest.raises(rp.PlanMismatchError, match="lies inside it"):
            rp.apply_plan(model, dataclasses.replace(plan, removed=removed), inplace=True)
    assert isinstance(model[0].a, Res)


@pytest.fixture
def outer_first(temporary_criteria) -> str:
    # the outer units are the least important
    temporary_criteria(
        "outer_first", lambda model, blocks, data, **kw: {b.name: float(b.name.count(".")) for b in blocks}
    )
    return "outer_first"


def test_asking_for_more_units_than_can_go_together_is_refused_before_scoring(outer_first: str) -> None:
    with pytest.raises(rp.InvalidArgumentError, match="only 4 of the 6 removable blocks can be removed together"):
        rp.plan_pruning(_nested(), criterion=outer_first, n=6, example_inputs=NESTED_X)
    with pytest.raises(rp.InvalidArgumentError, match="Pass n <= 4"):
        rp.plan_pruning(_nested(), criterion=outer_first, ratio=1.0, example_inputs=NESTED_X)


@pytest.mark.parametrize("n, removed", [(2, ["0", "1"]), (3, ["0", "1.a", "1.b"]), (4, ["0.a", "0.b", "1.a", "1.b"])])
def test_exactly_n_units_are_removed_even_when_the_lowest_scored_hold_others(
    outer_first: str, n: int, removed: list[str]
) -> None:
    model = _nested()
    plan = rp.plan_pruning(model, criterion=outer_first, n=n, example_inputs=NESTED_X)
    assert plan.removed == removed
    pruned = rp.apply_plan(model, plan)
    assert rp.verify(model, pruned, plan, NESTED_X) == 0


def test_a_plan_without_input_shapes_needs_example_inputs(resnet18: nn.Module, resnet18_plan: rp.PruningPlan) -> None:
    plan = dataclasses.replace(resnet18_plan, input_shapes=[], inputs=None)  # as older plans may be
    with pytest.raises(rp.PlanError, match="pass example_inputs="):
        rp.apply_plan(resnet18, plan)
    pruned = rp.apply_plan(resnet18, plan, example_inputs=X)
    assert rp.verify(resnet18, pruned, plan, X) == 0
