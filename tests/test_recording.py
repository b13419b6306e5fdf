"""The eager front-end: one run recorded as ATen calls, for models whose forward branches on tensor values."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import residual_prune as rp
from residual_prune.inputs import ModelInputs
from residual_prune.recording import capture_eager

from .helpers import Res
from .test_capture import Body


def test_a_torchvision_detector_is_pruned_through_its_post_processing() -> None:
    """A detector takes a list of images and filters boxes by score: neither torch.fx nor torch.export
    captures it, the recording of one run does, and the pruned detector gives the same detections."""
    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=64
    )
    images = ([torch.rand(3, 64, 64), torch.rand(3, 48, 64)],)
    blocks = rp.find_blocks(model, images)
    removable = [b.name for b in blocks if b.removable]
    assert {b.frontend for b in blocks} == {"eager"}
    assert removable and all(name.startswith("backbone.body.") for name in removable)
    plan = rp.plan_pruning(model, criterion="l1", n=2, example_inputs=images, frontend="eager")
    pruned = rp.apply_plan(model, plan)
    assert rp.verify(model, pruned, plan, images) == 0.0
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


class WritesInPlace(nn.Module):
    """``out += x`` as torchvision's ResNet writes it, then a read of ``x`` after the write."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        out = self.conv(x)
        out += x
        return out.relu()


def test_an_in_place_addition_is_a_residual_join() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), WritesInPlace(), WritesInPlace())
    x = torch.randn(1, 3, 8, 8)
    by_fx = rp.find_blocks(model, x, frontend="fx")
    recorded = rp.find_blocks(model, x, frontend="eager")
    assert [(b.name, b.removable, b.joins) for b in recorded] == [(b.name, b.removable, b.joins) for b in by_fx]
    assert [b.name for b in recorded if b.removable] == ["1", "2"]


def test_the_record_names_parameters_inputs_and_the_modules_of_each_call() -> None:
    model, x = Body(), torch.randn(1, 3, 8, 8)
    traced = capture_eager(model, ModelInputs.of(x))
    weights = {w for node in traced.nodes for w in traced.ops.weights(node)}
    assert weights == {name for name, _ in model.named_parameters()}
    assert [n.name for n in traced.inputs] == ["input_0"] and traced.shapes[traced.inputs[0]] == (1, 3, 8, 8)
    assert traced.call_counts == {
        "stem": 1,
        "blocks": 1,
        "blocks.0": 1,
        "blocks.0.conv": 1,
        "blocks.1": 1,
        "blocks.1.conv": 1,
    }
    convolutions = [n for n in traced.nodes if "convolution" in str(n.target)]
    assert [traced.module_stack(n) for n in convolutions] == [
        ["stem"],
        ["blocks", "blocks.0", "blocks.0.conv"],
        ["blocks", "blocks.1", "blocks.1.conv"],
    ]
    assert traced.flops is not None and traced.flops[""] == traced.flops["stem"] + traced.flops["blocks"] > 0


def test_a_model_without_weights_or_that_fails_on_its_inputs_is_refused() -> None:
    with torch.device("meta"):
        on_meta = Res()
    with pytest.raises(rp.TraceError, match="on the meta device; use frontend='export'"):
        rp.find_blocks(on_meta, torch.randn(1, 4, 8, 8), frontend="eager")
    with pytest.raises(rp.DataError, match=r"Res fails on the example inputs .* inside `conv`.*Pass inputs"):
        rp.find_blocks(Res(), torch.randn(1, 3, 8, 8), frontend="eager")  # 3 channels into a 4-channel conv


class ScalesAChannelInPlace(nn.Module):
    """``x + conv(x)``, then its first channel doubled through a view: the unit is not a residual unit."""

    def __init__(self, by_index: bool):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.by_index = by_index

    def forward(self, x):
        out = x + self.conv(x)
        if self.by_index:
            out[:, 0] *= 2  # torch.fx cannot trace an item assignment
        else:
            out.narrow(1, 0, 1).mul_(2)
        return out


@pytest.mark.parametrize(
    ("frontend", "by_index"), [("fx", False), ("export", False), ("export", True), ("eager", False), ("eager", True)]
)
def test_a_write_through_a_view_changes_the_tensor_it_views(frontend: str, by_index: bool) -> None:
    model = nn.Sequential(ScalesAChannelInPlace(by_index), ScalesAChannelInPlace(by_index))
    blocks = rp.find_blocks(model, torch.randn(1, 4, 6, 6), frontend=frontend)
    assert [(b.name, b.removable) for b in blocks] == [("0", False), ("1", False)]
    assert all("on its main path is outside any residual branch" in (b.reason or "") for b in blocks)


class PermutedResidual(nn.Module):
    """``x + conv(x)``, then made contiguous channels-last and viewed, then back: the view needs the strides
    that ``.contiguous()`` gave (torchvision's MaxViT partitions its windows so)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        y = (x + self.conv(x)).permute(0, 2, 3, 1).contiguous()
        return y.view(n, h, w * c).view(n, h, w, c).permute(0, 3, 1, 2)


def test_a_main_path_through_contiguous_and_view_is_replayed_with_its_strides() -> None:
    model, x = nn.Sequential(PermutedResidual(), PermutedResidual()), torch.randn(1, 4, 3, 5)
    by_fx = rp.find_blocks(model, x, frontend="fx")
    recorded = rp.find_blocks(model, x, frontend="eager")
    assert (
        [(b.name, b.removable) for b in recorded]
        == [(b.name, b.removable) for b in by_fx]
        == [("0", True), ("1", True)]
    )
