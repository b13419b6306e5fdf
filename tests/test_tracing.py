"""Tracing leaves the model as it was, and every failure says what to pass instead."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import residual_prune as rp
from residual_prune import modes
from tests.helpers import NormedRes as Block
from tests.helpers import assert_unchanged, observable_state

X = torch.randn(2, 4, 8, 8)
Y = torch.tensor([0, 2])


class Stateful(nn.Module):
    """A forward that writes into the model: a history list, a dict, a set, a counter buffer,
    a plain tensor attribute updated in place and an int attribute."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(Block(), Block())
        self.head = nn.Linear(4, 3)
        self.history: list[torch.Tensor] = []
        self.cache: dict[str, object] = {"nested": []}
        self.seen_shapes: set[int] = set()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.running = torch.zeros(4)
        self.steps = 0

    def forward(self, x):
        self.history.append(x)
        self.cache["last"] = x
        self.cache["nested"].append(x)
        self.seen_shapes.add(len(self.history))
        self.calls += 1
        self.running.add_(1.0)
        self.steps = self.steps + 1
        return self.head(self.blocks(x).mean((2, 3)))


def _stateful_in_use() -> Stateful:
    torch.manual_seed(0)
    model = Stateful()
    model.train()
    model.blocks[1].eval()
    model.head.weight.grad = torch.full_like(model.head.weight, 0.5)
    model.blocks[0].conv.bias.requires_grad_(False)
    model.blocks[0].register_forward_hook(lambda module, args, output: None)
    model.history.append(torch.ones(1))
    return model


def test_find_blocks_leaves_the_model_bit_identical() -> None:
    model = _stateful_in_use()
    history, cache, nested = model.history, model.cache, model.cache["nested"]
    before = observable_state(model)
    blocks = rp.find_blocks(model, X[:1])
    assert [b.name for b in blocks if b.removable] == ["blocks.0", "blocks.1"]
    assert_unchanged(model, before)
    assert model.history is history and len(history) == 1 and not any(isinstance(v, torch.fx.Proxy) for v in history)
    assert model.cache is cache and set(cache) == {"nested"} and cache["nested"] is nested and nested == []
    assert int(model.calls) == 0 and model.steps == 0 and not model.running.any()


@pytest.mark.parametrize("criterion", ["snip", "grasp", "synflow", "kl", "l1"])
def test_plans_leave_the_model_bit_identical(criterion: str) -> None:
    model = _stateful_in_use()
    before = observable_state(model)
    options = {"progress": False} if criterion in ("snip", "grasp", "kl") else {}
    plan = rp.plan_pruning(model, criterion=criterion, n=1, data=[(X, Y)], **options)
    assert len(plan.removed) == 1
    assert_unchanged(model, before)


def test_model_state_kept_restores_replaced_and_deleted_attributes() -> None:
    model = _stateful_in_use()
    before = observable_state(model)
    with modes.model_state_kept(model):
        model.head.weight.data = torch.zeros(1)  # a new tensor behind the same Parameter
        model.blocks[0].conv.weight.data.mul_(2)  # an in-place write that autograd does not see
        model.blocks[0].conv.weight.grad = torch.ones_like(model.blocks[0].conv.weight)
        model.blocks[1].bn.running_mean = torch.ones(4)  # a buffer replaced
        model.blocks[1]._forward_hooks.clear()
        del model.steps
        model.extra = 1
        model.eval()
        model.head.weight.requires_grad_(False)
    assert_unchanged(model, before)
    assert not hasattr(model, "extra")


@pytest.mark.filterwarnings("ignore:.*torch.jit.trace.*deprecated:FutureWarning")
@pytest.mark.parametrize("wrap", [torch.jit.script, lambda m: torch.jit.trace(m, X[:1])], ids=["script", "trace"])
def test_torchscript_models_are_refused_with_advice(wrap) -> None:
    scripted = wrap(nn.Sequential(Block(), Block()).eval())
    with pytest.raises(rp.TraceError, match="TorchScript.*cannot be analysed.*eager nn.Module"):
        rp.find_blocks(scripted, X[:1])


def test_wrapped_models_name_what_to_pass() -> None:
    model = nn.Sequential(Block(), Block())
    with pytest.raises(rp.TraceError, match=r"DataParallel; pass the wrapped module, model\.module"):
        rp.find_blocks(nn.DataParallel(model), X[:1])
    with pytest.raises(rp.TraceError, match=r"torch\.compile.*model\._orig_mod.*compile the pruned model afterwards"):
        rp.plan_pruning(torch.compile(model), criterion="l1", n=1, example_inputs=X[:1])
    assert [b.removable for b in rp.find_blocks(model, X[:1])] == [True, True]


class Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.Sequential(Block(), Block())

    def forward(self, x):
        return self.blocks(self.stem(x))


class ChecksItsInput(nn.Module):
    """The top-level forward branches on a tensor value, as detection models' input checks do."""

    def __init__(self):
        super().__init__()
        self.body = Body()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            x = x * 2
        return self.head(self.body(x).mean((2, 3)))


class LoopsOverItsInput(ChecksItsInput):
    def forward(self, x):
        return torch.stack([self.head(self.body(image[None]).mean((2, 3)))[0] for image in x])


@pytest.mark.parametrize("cls", [ChecksItsInput, LoopsOverItsInput])
def test_untraceable_top_level_forward_suggests_the_largest_submodule(cls: type[nn.Module]) -> None:
    model = cls()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(rp.TraceError, match="top-level forward") as info:
        rp.find_blocks(model, x, frontend="fx")
    message = str(info.value)
    assert "plan_pruning(model.body, ...)" in message and "model.head" in message
    assert "leaf_modules" not in message and "TheModuleClass" not in message
    assert [b.name for b in rp.find_blocks(model.body, x) if b.removable] == ["blocks.0", "blocks.1"]


def test_torchvision_detector_is_answered_with_its_backbone() -> None:
    """torchvision's GeneralizedRCNN.forward iterates over its inputs; here with a tiny backbone."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    backbone = Body()
    backbone.out_channels = 4
    model = FasterRCNN(
        backbone,
        min_size=32,
        max_size=32,
        box_roi_pool=MultiScaleRoIAlign(["0"], 2, 2),
        box_head=TwoMLPHead(4 * 2 * 2, 4),
        box_predictor=FastRCNNPredictor(4, 2),
    ).eval()
    with pytest.raises(rp.TraceError, match=r"top-level forward of FasterRCNN.*plan_pruning\(model\.backbone"):
        rp.find_blocks(model, torch.randn(1, 3, 32, 32), frontend="fx")


@pytest.mark.parametrize("leaf_modules", ["Block", Block, Block(), ("Block",), (Block, 3)])
def test_leaf_modules_must_be_module_classes(leaf_modules) -> None:
    with pytest.raises(rp.InvalidArgumentError, match=r"leaf_modules=\(MyBlock,\)"):
        rp.find_blocks(nn.Sequential(Block()), X[:1], leaf_modules=leaf_modules)


@pytest.mark.parametrize("leaf_modules", ["Block", Block])
def test_leaf_modules_are_checked_by_plan_pruning_and_apply_plan(leaf_modules) -> None:
    model = nn.Sequential(Block(), Block())
    with pytest.raises(rp.InvalidArgumentError, match=rf"got {leaf_modules!r}"):
        rp.plan_pruning(model, criterion="l1", n=1, example_inputs=X[:1], leaf_modules=leaf_modules)
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=X[:1])
    with pytest.raises(rp.InvalidArgumentError, match=rf"got {leaf_modules!r}"):
        rp.apply_plan(model, plan, leaf_modules=leaf_modules)
