"""FLOP counting: the in-pass counter of find_blocks and the exported-graph counter agree with fvcore, module by
module."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

import residual_prune as rp
from residual_prune.flops import count_flops_by_module, count_graph_flops
from residual_prune.models import resnet20
from residual_prune.modes import eval_mode
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


_ZOO = _zoo()  # built once: the tests of both counters share the models and fvcore's counts of them


@functools.cache
def _fvcore_flops(model: nn.Module, shape: tuple[int, ...]) -> dict[str, int] | None:
    return count_flops_by_module(model, (torch.randn(shape),))


def _inside_opaque_leaf(model: nn.Module, name: str) -> bool:
    """fvcore itemises the children of modules that tracing keeps whole; the in-pass counter does not."""
    leaves = tuple(get_notrace_modules())
    parts = name.split(".")
    return any(isinstance(model.get_submodule(".".join(parts[:i])), leaves) for i in range(1, len(parts)))


@pytest.mark.parametrize("name,model,shape", _ZOO, ids=lambda v: v if isinstance(v, str) else "")
def test_in_pass_counter_matches_fvcore(name: str, model: nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    reference = _fvcore_flops(model, shape)
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


def _exported(model: nn.Module, *inputs: torch.Tensor, **options) -> torch.export.ExportedProgram:
    with eval_mode(model):
        return torch.export.export(model, inputs, strict=False, **options)


def _assert_graph_counts_as_fvcore(counted: dict[str, int], reference: dict[str, int]) -> None:
    """Every module fvcore reports has its FLOPs, and no module fvcore does not know has any."""
    assert counted[""] > 0 and set(counted) <= set(reference)
    assert {k: counted.get(k, 0) for k in reference} == reference


@pytest.mark.parametrize(
    "name,model,shape",
    [z for z in _ZOO if z[0] != "cifar resnet20"],  # the torchvision ResNet covers it
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_exported_graph_counter_matches_fvcore(name: str, model: nn.Module, shape: tuple[int, ...]) -> None:
    counted = count_graph_flops(_exported(model, torch.randn(shape)).graph)
    _assert_graph_counts_as_fvcore(counted, _fvcore_flops(model, shape))


class MoreOps(nn.Module):
    """A transposed grouped convolution, einsums (ellipsis, three operands, a trace), a chain of batched
    matmuls and a layer run under no_grad (a subgraph in the exported graph)."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)
        self.mix = nn.Parameter(torch.rand(5, 6))
        self.chain = nn.Parameter(torch.rand(3, 6, 6))
        self.head = nn.Linear(6, 6)

    def forward(self, x):
        y = self.up(x)
        tokens = y.flatten(2).transpose(1, 2)
        mixed = torch.einsum("bchw,dc->bdhw", y, self.mix)
        chained = torch.einsum("...ij,jk,kl->...il", tokens, self.chain[0], self.chain[1])
        attended = tokens @ tokens.transpose(1, 2) @ tokens
        with torch.no_grad():
            head = self.head(tokens)
        traces = torch.einsum("bii->b", self.chain)
        return mixed.sum() + chained.sum() + attended.sum() + head.sum() + traces.sum()


def test_exported_graph_counter_counts_transposed_convs_einsums_and_no_grad_regions_as_fvcore() -> None:
    x = torch.randn(1, 4, 5, 5)
    counted = count_graph_flops(_exported(MoreOps(), x).graph)
    _assert_graph_counts_as_fvcore(counted, count_flops_by_module(MoreOps(), (x,)))
    assert counted["up"] == 4 * 3 * 3 * 3 * 5 * 5  # transposed: weight (4, 6/2, 3, 3) at every input position
    assert counted["head"] == 11 * 11 * 6 * 6


class Broadcasts(nn.Module):
    """A matmul whose first operand is broadcast over the batch, and a baddbmm."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(4, 8))

    def forward(self, x, a, b):
        return (self.weight @ x).sum() + torch.baddbmm(a @ b, a, b).sum()


def test_exported_graph_counter_counts_broadcast_matmul_and_baddbmm_where_fvcore_does_not() -> None:
    inputs = torch.randn(3, 8, 5), torch.randn(2, 4, 3), torch.randn(2, 3, 5)
    counted = count_graph_flops(_exported(Broadcasts(), *inputs).graph)
    reference = count_flops_by_module(Broadcasts(), inputs)
    bmm = 2 * 4 * 3 * 5
    assert reference[""] == 4 * 8 * 5 + bmm  # the weight once, no baddbmm
    assert counted[""] == 3 * 4 * 8 * 5 + 2 * bmm


def test_decomposed_graph_counter_matches_fvcore_but_pooling_to_one() -> None:
    """run_decompositions lowers the ops to native norms, convolution, addmm, bmm (attention), ...; adaptive
    average pooling to 1x1 becomes a mean, which is not counted (NormsAndResampling pools its output so)."""
    model, x = NormsAndResampling().eval(), torch.randn(1, 8, 16, 16)
    graph = _exported(model, x).run_decompositions().graph
    counted, reference = count_graph_flops(graph), count_flops_by_module(model, (x,))
    assert counted[""] == reference[""] - x.numel()
    _assert_graph_counts_as_fvcore({**counted, "": reference[""]}, reference)


class DynamicAndStatic(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.proj = nn.Linear(8, 4)
        self.register_buffer("table", torch.rand(5, 8))

    def forward(self, x):
        return self.conv(x).mean((2, 3)) + self.proj(self.table).sum(0)


def test_exported_graph_counter_skips_nodes_of_symbolic_shape() -> None:
    batch = torch.export.Dim("batch")
    graph = _exported(DynamicAndStatic(), torch.randn(2, 3, 8, 8), dynamic_shapes=({0: batch},)).graph
    assert count_graph_flops(graph) == {"": 5 * 8 * 4, "proj": 5 * 8 * 4}  # the conv's batch is symbolic


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


def test_exported_graph_counter_counts_native_multi_head_attention_as_fvcore() -> None:
    """export records nn.MultiheadAttention's unfused path; a graph may hold its fused kernel (fvcore's path)."""
    model, x = SelfAttention().eval(), torch.randn(2, 5, 8)
    graph = fx.Graph()

    def value(name: str, tensor: torch.Tensor) -> fx.Node:
        node = graph.placeholder(name)
        node.meta["val"] = tensor
        return node

    attn = model.attn
    weights = [value(n, t.detach()) for n, t in [("w", attn.in_proj_weight), ("b", attn.in_proj_bias)]]
    projection = [value(n, t.detach()) for n, t in [("pw", attn.out_proj.weight), ("pb", attn.out_proj.bias)]]
    query = value("x", x)
    fused = graph.call_function(
        torch.ops.aten._native_multi_head_attention.default, (query, query, query, 8, 2, *weights, *projection)
    )
    fused.meta["val"] = model(x), torch.empty(0)
    fused.meta["nn_module_stack"] = {"L__self__": ("", "SelfAttention"), "L__self___attn": ("attn", "MHA")}
    graph.output(fused)
    reference = count_flops_by_module(model, (x,))
    assert count_graph_flops(graph) == {"": reference[""], "attn": reference["attn"]} and reference["attn"] > 0
