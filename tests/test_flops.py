"""FLOP counting: the in-pass counter of find_blocks agrees with fvcore, module by module."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import residual_prune as rp
from residual_prune.flops import count_flops_by_module
from residual_prune.models import resnet20
from residual_prune.tracing import get_notrace_modules, trace


class NormsAndResampling(nn.Module):
    """The operations torch's own counter skips and fvcore counts, each inside a residual block."""

    def __init__(self):
        super().__init__()
        self.gn = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(2, 8))
        self.inorm = nn.Sequential(nn.Conv2d(8, 8, 1), nn.InstanceNorm2d(8))
        self.ln = nn.LayerNorm(16, elementwise_affine=False)
        self.bn = nn.BatchNorm2d(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        x = x + self.gn(x)
        x = x + self.inorm(x)
        x = x + self.ln(x)
        x = x + F.interpolate(F.avg_pool2d(self.bn(x), 2), scale_factor=2)
        x = x + F.interpolate(F.adaptive_avg_pool2d(x, 4), size=16, mode="bilinear")
        grid = torch.zeros(1, 16, 16, 2)
        x = x + F.grid_sample(x, grid, align_corners=False)
        tokens = x.flatten(2).transpose(1, 2)  # (1, 256, 8)
        x = x + self.attn(tokens, tokens, tokens, need_weights=False)[0].transpose(1, 2).reshape(x.shape)
        return x + (tokens.transpose(1, 2) @ tokens).mean() + F.adaptive_avg_pool2d(x, 1)


class FunctionalCalls(nn.Module):
    """The same operations through the torch.* ops, other F.interpolate modes, an affine instance norm, a
    training-mode batch norm and cross-attention with other key and value widths."""

    def __init__(self):
        super().__init__()
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.weight = nn.Parameter(torch.rand(8))
        self.cross = nn.MultiheadAttention(8, 2, kdim=4, vdim=6)

    def forward(self, x):
        x = x + self.inorm(x)
        x = x + torch.batch_norm(x, self.weight, None, None, None, True, 0.1, 1e-5, False)
        x = x + torch.layer_norm(x, (16,)) + torch.group_norm(x, 4, self.weight)
        x = x + F.interpolate(F.interpolate(x, scale_factor=2, mode="bilinear", antialias=True), size=16, mode="area")
        x = x + F.interpolate(x, size=16, mode="nearest-exact") + F.interpolate(x.flatten(2), size=256).view(x.shape)
        x = x + torch.grid_sampler(x, x[:, :2].permute(0, 2, 3, 1).tanh(), 0, 0, False)
        tokens = x.flatten(2).permute(2, 0, 1)  # (256, 1, 8), sequence first
        attended = self.cross(tokens, tokens[..., :4], tokens[..., :6], need_weights=False)[0]
        return x + attended.permute(1, 2, 0).reshape(x.shape)


def _zoo() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    import timm
    import torchvision

    return [
        ("cifar resnet20", resnet20(), (1, 3, 32, 32)),
        ("torchvision resnet18", torchvision.models.resnet18(), (1, 3, 64, 64)),
        ("torchvision mobilenet_v3_small", torchvision.models.mobilenet_v3_small(), (1, 3, 64, 64)),
        ("timm vit_tiny", timm.create_model("vit_tiny_patch16_224", img_size=64), (1, 3, 64, 64)),
        ("timm convnext_atto", timm.create_model("convnext_atto"), (1, 3, 64, 64)),
        ("norms and resampling", NormsAndResampling().eval(), (1, 8, 16, 16)),
        ("functional calls", FunctionalCalls().eval(), (1, 8, 16, 16)),
    ]


def _inside_opaque_leaf(model: nn.Module, name: str) -> bool:
    """fvcore itemises the children of modules that tracing keeps whole; the in-pass counter does not."""
    leaves = tuple(get_notrace_modules())
    parts = name.split(".")
    return any(isinstance(model.get_submodule(".".join(parts[:i])), leaves) for i in range(1, len(parts)))


@pytest.mark.parametrize("name,model,shape", _zoo(), ids=lambda v: v if isinstance(v, str) else "")
def test_in_pass_counter_matches_fvcore(name: str, model: nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    reference = count_flops_by_module(model, (x,))
    counted = trace(model, x).flops
    assert counted[""] == reference[""] > 0
    compared = [
        k
        for k in reference
        if k
        and not _inside_opaque_leaf(model, k)
        and not isinstance(model.get_submodule(k), tuple(get_notrace_modules()))
    ]
    assert len(compared) >= 3
    assert {k: counted.get(k, 0) for k in compared} == {k: reference[k] for k in compared}
    for block in rp.find_blocks(model, x):
        assert block.flops == reference.get(block.name, 0)


def test_norms_and_resampling_are_counted_as_fvcore_does() -> None:
    x = torch.randn(1, 8, 16, 16)
    counted = trace(NormsAndResampling().eval(), x).flops
    numel = x.numel()
    assert counted["gn.1"] == 5 * numel  # affine norm: 5 per element
    assert counted["inorm.1"] == 4 * numel  # no affine: 4
    assert counted["ln"] == 4 * numel
    assert counted["bn"] == 2 * numel  # eval-mode BN with affine: 2
    assert counted["attn"] == 256 * 8 * 8 * 4 + 2 * 256 * 256 * 8  # projections + Q K^T and A V (256 tokens of 8)


def test_find_blocks_runs_the_model_once() -> None:
    calls = []
    model = resnet20()
    model.conv1.register_forward_hook(lambda *args: calls.append(1))
    blocks = rp.find_blocks(model, torch.randn(1, 3, 32, 32))
    assert len(calls) == 1 and all(b.flops > 0 for b in blocks)
    rp.plan_pruning(model, criterion="random", n=1, example_inputs=torch.randn(1, 3, 32, 32))
    assert len(calls) == 2


def test_count_flops_false_reports_none() -> None:
    blocks = rp.find_blocks(resnet20(), torch.randn(1, 3, 32, 32), count_flops=False)
    assert blocks and all(b.flops is None for b in blocks)


def test_counter_failure_gives_flops_none_with_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self, node, run):
        raise RuntimeError("no formula for this op")

    monkeypatch.setattr("residual_prune.flops.NodeFlopCounter.count", broken)
    with pytest.warns(rp.FlopCountWarning, match="could not count the FLOPs of CifarResNet"):
        blocks = rp.find_blocks(resnet20(), torch.randn(1, 3, 32, 32))
    assert blocks and all(b.flops is None for b in blocks) and any(b.removable for b in blocks)


class NotJitTraceable(nn.Module):
    """A model torch.jit.trace (used by fvcore) cannot handle but torch.fx can."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        if torch.jit.is_tracing():
            raise RuntimeError("this model does not support torch.jit.trace")
        return x + self.body(x)


def test_fvcore_failure_gives_none_with_warning_but_find_blocks_still_counts() -> None:
    x = torch.randn(1, 8, 16, 16)
    with pytest.warns(rp.FlopCountWarning, match="fvcore could not count"):
        assert count_flops_by_module(NotJitTraceable(), (x,)) is None
    (block,) = rp.find_blocks(NotJitTraceable(), x)
    assert block.flops == 8 * 8 * 9 * 16 * 16
