"""The capture front-ends give the same analysis; ``auto`` falls back from torch.fx to torch.export to eager."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import residual_prune as rp
from residual_prune.capture import count_flops, frontend_order
from residual_prune.flops import count_flops_by_module
from residual_prune.inputs import ModelInputs
from residual_prune.models import resnet20

from .helpers import Res, assert_unchanged, observable_state


def _summary(blocks: list[rp.ResidualBlock]) -> list[tuple]:
    return [(b.name, b.removable, b.params, b.input_shape, b.output_shape, b.joins, b.contains) for b in blocks]


@pytest.mark.parametrize("frontend", ["export", "eager"])
@pytest.mark.parametrize("policy", ["default", "paper"])
def test_each_front_end_finds_what_fx_finds_on_resnet18(frontend: str, policy: str) -> None:
    model = torchvision.models.resnet18(num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    by_fx = rp.find_blocks(model, x, frontend="fx", policy=policy)
    found = rp.find_blocks(model, x, frontend=frontend, policy=policy)
    assert _summary(found) == _summary(by_fx)
    assert [b.flops for b in found] == [b.flops for b in by_fx]  # all in fvcore's convention
    assert {b.frontend for b in by_fx} == {"fx"} and {b.frontend for b in found} == {frontend}
    assert sum(b.removable for b in found) == (5 if policy == "default" else 1)  # three blocks downsample


class Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.Sequential(Res(), Res())

    def forward(self, x):
        return self.blocks(self.stem(x))


class LoopsOverItsInput(nn.Module):
    """A top-level forward that iterates over its input tensor: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.body = Body()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return torch.stack([self.head(self.body(image[None]).mean((2, 3)))[0] for image in x])


def test_auto_falls_back_to_torch_export_and_the_plan_remembers_it() -> None:
    model = LoopsOverItsInput()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(rp.TraceError, match="torch.fx could not trace"):
        rp.find_blocks(model, x, frontend="fx")
    blocks = rp.find_blocks(model, x)
    assert [(b.name, b.removable, b.frontend) for b in blocks] == [
        ("body.blocks.0", False, "export"),  # called once per image: twice
        ("body.blocks.1", False, "export"),
    ]
    assert "called 2 times" in (blocks[0].reason or "")
    one = torch.randn(1, 3, 8, 8)
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=one)
    assert plan.frontend == "export"
    pruned = rp.apply_plan(model, plan)
    assert rp.verify(model, pruned, plan, one) == 0.0
    assert rp.PruningPlan.from_dict(plan.to_dict()).frontend == "export"


class ChecksItsInput(Body):
    def forward(self, x):
        if x.sum() > 0:  # a branch on a tensor value: neither torch.fx nor torch.export can capture it
            x = x * 2
        return super().forward(x)


def test_auto_falls_back_to_recording_one_run_where_the_forward_branches_on_values() -> None:
    model, x = ChecksItsInput(), torch.randn(1, 3, 8, 8)
    blocks = rp.find_blocks(model, x)
    assert [(b.name, b.removable, b.frontend) for b in blocks] == [
        ("blocks.0", True, "eager"),
        ("blocks.1", True, "eager"),
    ]
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=x)
    assert plan.frontend == "eager"
    pruned = rp.apply_plan(model, plan)  # checked again, by a recording on zeros of the inputs' shape
    assert rp.verify(model, pruned, plan, x) == 0.0


def test_no_front_end_says_what_each_reported() -> None:
    class RefusesPositiveInputs(Body):
        def forward(self, x):
            if x.sum() > 0:
                raise ValueError("this model takes negative images")
            return super().forward(x)

    with pytest.raises(rp.DataError) as info:
        rp.find_blocks(RefusesPositiveInputs(), torch.ones(1, 3, 8, 8))
    message = str(info.value)
    assert "- fx: torch.fx could not trace" in message
    assert "- export: torch.export (non-strict) could not capture the top-level forward of Refuses" in message
    assert "test_capture.py" in message  # the line of the model's code where export failed
    assert "- eager: RefusesPositiveInputs fails on the example inputs (1, 3, 8, 8)" in message
    assert "this model takes negative images" in message


def test_frontend_arguments_are_checked() -> None:
    model, x = Body(), torch.randn(1, 3, 8, 8)
    with pytest.raises(rp.InvalidArgumentError, match="unknown frontend 'onnx'"):
        rp.find_blocks(model, x, frontend="onnx")
    with pytest.raises(rp.InvalidArgumentError, match="frontend='export'"):
        rp.find_blocks(model, {"x": x}, frontend="fx")
    with pytest.raises(rp.InvalidArgumentError, match="train-mode graph is captured by torch.fx only"):
        frontend_order("export", model, ModelInputs.of(x), needs_fx=True)
    exported = rp.find_blocks(model, x, frontend="export", granularity="sublayer")  # removed by stand-ins there
    assert [b.name for b in exported] == [b.name for b in rp.find_blocks(model, x, granularity="sublayer")]
    assert frontend_order("auto", model, ModelInputs.of(x)) == ["fx", "export", "eager"]
    assert frontend_order("auto", model, ModelInputs.of({"x": x})) == ["export", "eager"]
    with torch.device("meta"):
        on_meta = Body()
    assert frontend_order("auto", on_meta, ModelInputs.of(x)) == ["export"]  # nothing runs on meta


def test_keyword_inputs_are_passed_as_keywords() -> None:
    class TakesKeywords(Body):
        def forward(self, *, pixel_values, scale=1.0):
            return super().forward(pixel_values) * scale

    model, x = TakesKeywords(), torch.randn(1, 3, 8, 8)
    inputs = {"pixel_values": x, "scale": 2.0}
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=inputs)
    assert plan.inputs == {
        "args": [],
        "kwargs": {"pixel_values": {"shape": [1, 3, 8, 8], "dtype": "float32"}, "scale": {"value": 2.0}},
    }
    pruned = rp.apply_plan(model, plan)  # checked again on zeros of the recorded inputs
    assert rp.verify(model, pruned, plan, inputs) == 0.0


class Masked(nn.Module):
    """A block that takes a mask beside its input; the mask feeds only its branch."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, mask):
        return x + self.fc(x) * mask


class MaskFirst(Masked):
    def forward(self, mask, x):
        return x + self.fc(x) * mask


class MaskedNet(nn.Module):
    def __init__(self, mask_first: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList([MaskFirst(), MaskFirst()] if mask_first else [Masked(), Masked()])
        self.mask_first = mask_first

    def forward(self, x):
        mask = (x > 0).float()
        for block in self.blocks:
            x = block(mask, x) if self.mask_first else block(x, mask)
        return x


@pytest.mark.parametrize("frontend", ["fx", "export", "eager"])
def test_a_unit_with_side_inputs_is_removable_when_its_first_argument_is_the_main_path(frontend: str) -> None:
    x = torch.randn(2, 4)
    blocks = rp.find_blocks(MaskedNet(), x, frontend=frontend)
    assert [(b.name, b.removable) for b in blocks] == [("blocks.0", True), ("blocks.1", True)]
    model = MaskedNet()
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=x, frontend=frontend)
    assert rp.verify(model, rp.apply_plan(model, plan), plan, x) == 0.0
    swapped = rp.find_blocks(MaskedNet(mask_first=True), x, frontend=frontend)
    assert [b.removable for b in swapped] == [False, False]  # a stand-in would return the mask
    assert "not to the tensor it gets as first argument" in (swapped[0].reason or "")


@pytest.mark.parametrize("frontend", ["export", "eager"])
def test_capture_leaves_the_model_as_it_was(frontend: str) -> None:
    class Remembers(Body):
        def __init__(self):
            super().__init__()
            self.total = torch.zeros(3)  # a plain tensor attribute, which export and eager runs write for real

        def forward(self, x):
            self.total.add_(1)
            return super().forward(x)

    model = Remembers()
    before = observable_state(model)
    rp.find_blocks(model, torch.randn(1, 3, 8, 8), frontend=frontend)
    assert_unchanged(model, before)
    assert not model.total.any()


def test_a_model_on_the_meta_device_is_analysed_and_pruned_without_weights() -> None:
    x = torch.randn(1, 3, 32, 32)
    real = rp.find_blocks(torchvision.models.resnet18(num_classes=10), x)
    with torch.device("meta"):
        model = torchvision.models.resnet18(num_classes=10)
    blocks = rp.find_blocks(model, x)
    assert _summary(blocks) == _summary(real) and {b.frontend for b in blocks} == {"export"}
    with pytest.raises(rp.InvalidArgumentError, match="meta device"):
        rp.find_blocks(model, x, frontend="fx")
    with pytest.raises(rp.InvalidArgumentError, match="criterion 'l1' reads the weights.*criterion='random'"):
        rp.plan_pruning(model, criterion="l1", n=2, example_inputs=x)
    plan = rp.plan_pruning(model, criterion="random", n=2, example_inputs=x)
    pruned = rp.apply_plan(model, plan)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert all(p.is_meta for p in pruned.parameters())
    with pytest.raises(rp.InvalidArgumentError, match="meta device and has no weights"):
        rp.verify(model, pruned, plan, x)


@pytest.mark.parametrize("frontend", ["fx", "export", "eager"])
def test_count_flops_gives_fvcores_whole_model_count(frontend: str) -> None:
    model, x = resnet20(), torch.randn(1, 3, 32, 32)
    assert count_flops(model, x, frontend=frontend) == count_flops_by_module(model, (x,))[""] > 0


class HeldTwice(nn.Module):
    """One block held under two names and called through both: a shared block, under any name."""

    def __init__(self):
        super().__init__()
        self.a = Res()
        self.b = self.a
        self.c = Res()

    def forward(self, x):
        return self.c(self.b(self.a(x)))


@pytest.mark.parametrize("frontend", ["fx", "export", "eager"])
def test_a_block_called_through_two_names_is_one_shared_block(frontend: str) -> None:
    blocks = rp.find_blocks(HeldTwice(), torch.randn(1, 4, 6, 6), frontend=frontend)
    assert [(b.name, b.removable) for b in blocks] == [("a", False), ("c", True)]
    assert "called 2 times" in (blocks[0].reason or "")
