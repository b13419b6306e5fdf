"""Block discovery: what counts as a removable residual unit, and why the others are kept."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import residual_prune as rp

X = torch.randn(1, 8, 16, 16)


def conv(c_in: int = 8, c_out: int = 8, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(conv(), nn.ReLU(), conv())

    def forward(self, x):
        return x + self.body(x)


class LayerScaleDropPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = conv()
        self.gamma = nn.Parameter(torch.full((8, 1, 1), 0.1))
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        return torch.add(x, self.drop(self.gamma * self.body(x)))


class UNetSkip(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = conv(stride=2)
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)

    def forward(self, x):
        return x + self.up(self.down(x))


class Projection(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = conv()
        self.shortcut = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.shortcut(x) + self.body(x)


class ConvThenResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = conv()
        self.body = conv()

    def forward(self, x):
        x = self.pre(x)
        return x + self.body(x)


class Net(nn.Module):
    def __init__(self, *blocks: nn.Module, shared: bool = False):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.shared = Plain() if shared else None
        self.extra = conv()

    def forward(self, x):
        x = self.blocks(x)
        if self.shared is not None:
            x = self.shared(self.shared(x))
        x = x + self.extra(x)  # a residual in the top-level forward
        return x.mean((2, 3))


def _by_name(model: nn.Module) -> dict[str, rp.ResidualBlock]:
    return {b.name: b for b in rp.find_blocks(model, X)}


def test_identity_units_with_scaled_branches_are_removable() -> None:
    blocks = _by_name(Net(Plain(), LayerScaleDropPath()))
    assert blocks["blocks.0"].removable and blocks["blocks.1"].removable
    assert blocks["blocks.1"].type == "LayerScaleDropPath"
    assert (blocks["blocks.0"].stage, blocks["blocks.0"].index, blocks["blocks.1"].index) == ("blocks", 0, 1)
    assert blocks["blocks.0"].flops > 0 and blocks["blocks.0"].params == 2 * (8 * 8 * 9 + 8)
    assert blocks["blocks.0"].input_shape == blocks["blocks.0"].output_shape == (1, 8, 16, 16)
    assert [b.order for b in blocks.values()] == list(range(len(blocks)))


def test_excluded_units_say_why() -> None:
    blocks = _by_name(Net(UNetSkip(), Projection(), ConvThenResidual(), shared=True))
    assert "down and back up" in blocks["blocks.0"].reason and "U-Net" in blocks["blocks.0"].reason
    assert "shortcut is not the identity" in blocks["blocks.1"].reason
    assert "`blocks.2.pre`" in blocks["blocks.2"].reason and "main path" in blocks["blocks.2"].reason
    assert "called 2 times" in blocks["shared"].reason
    assert "top-level forward" in blocks[""].reason
    assert not any(b.removable for b in blocks.values())


def test_downsampling_unit_is_excluded() -> None:
    class Down(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = conv(8, 16, stride=2)
            self.proj = nn.Conv2d(8, 16, 1, stride=2)

        def forward(self, x):
            return self.body(x) + self.proj(x)

    block = _by_name(nn.Sequential(Down()))["0"]
    assert not block.removable and "downsampling" in block.reason and "(1, 16, 8, 8)" in block.reason


class ReducedKeys(nn.Module):
    """PVT-style attention: keys come from a strided convolution, the output keeps the resolution."""

    def __init__(self):
        super().__init__()
        self.reduce = nn.Conv2d(8, 8, 2, stride=2)
        self.proj = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        keys = self.reduce(x).flatten(2)  # (B, C, HW/4)
        queries = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        attention = torch.softmax(queries @ keys, dim=-1) @ keys.transpose(1, 2)  # (B, HW, C)
        return x + self.proj(attention.transpose(1, 2).reshape(x.shape))


class TokenLayout(nn.Module):
    """Swin-style: the unit reshapes its input to tokens and back around the residual."""

    def __init__(self, undo: bool = True):
        super().__init__()
        self.undo = undo
        self.mlp = nn.Linear(8, 8)

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        tokens = tokens + self.mlp(tokens)
        out = tokens.reshape(b, h, w, c)
        return out.permute(0, 3, 1, 2) if self.undo else out.reshape(b, c, h, w)


class Mix(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = conv(), conv()

    def forward(self, x):
        return self.a(x) + self.b(x)


class ParallelSum(nn.Module):
    """A residual block whose branch sums two parallel paths (no identity side) in a submodule."""

    def __init__(self):
        super().__init__()
        self.mix = Mix()

    def forward(self, x):
        return x + self.mix(x)


class PositionFromShape(nn.Module):
    """Adds an embedding computed from the input's shape only: not a residual join."""

    def forward(self, x):
        h, w = x.shape[-2:]
        grid = torch.arange(h * w, dtype=x.dtype).reshape(1, 1, h, w)
        return x + grid


def test_branch_that_only_reduces_keys_is_removable() -> None:
    blocks = _by_name(nn.Sequential(ReducedKeys(), Plain()))
    assert blocks["0"].removable, blocks["0"].reason


def test_layout_operations_on_the_main_path_must_cancel() -> None:
    blocks = _by_name(nn.Sequential(TokenLayout(undo=True), TokenLayout(undo=False)))
    assert blocks["0"].removable, blocks["0"].reason
    assert not blocks["1"].removable and "rearranges" in blocks["1"].reason


class TanhGELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(0.79788456 * (x + 0.044715 * x * x * x)))


def test_sums_that_are_not_residual_are_not_reported() -> None:
    blocks = rp.find_blocks(nn.Sequential(ParallelSum(), PositionFromShape(), TanhGELU()), X)
    assert [(b.name, b.removable, b.joins) for b in blocks] == [("0", True, 1)]


class ReturnsState(nn.Module):
    """A residual block that also returns a hidden state: a stand-in could not return the pair."""

    def __init__(self):
        super().__init__()
        self.body = conv()

    def forward(self, x):
        h = self.body(x)
        return x + h, h


class StateStage(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(ReturnsState() for _ in range(2))

    def forward(self, x):
        for block in self.blocks:
            x, h = block(x)
        return x * h  # the last block's state is read, the first's is dropped


@pytest.mark.parametrize("frontend", ["fx", "export", "eager"])
def test_block_returning_a_tuple_is_removable_only_where_its_other_outputs_are_dropped(frontend: str) -> None:
    blocks = rp.find_blocks(StateStage(), X, frontend=frontend)
    assert [(b.name, b.removable) for b in blocks] == [("blocks.0", True), ("blocks.1", False)]
    assert "gives 2 outputs" in (blocks[1].reason or "")
    model = StateStage()
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=X, frontend=frontend)
    pruned = rp.apply_plan(model, plan)
    assert pruned.blocks[0].constants == (None,) and rp.verify(model, pruned, plan, X) == 0.0


class OptionalMask(nn.Module):
    """`if mask is not None` must see the default, not a traced placeholder."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(Plain(), Plain())

    def forward(self, x, mask=None, *, scale: float = 1.0):
        if mask is not None:
            x = x * mask.view(1, 1, *x.shape[-2:])
        return self.blocks(x) * scale


def test_defaulted_forward_arguments_keep_their_defaults() -> None:
    model = OptionalMask()
    plan = rp.plan_pruning(model, criterion="random", n=1, example_inputs=X)
    assert rp.verify(model, rp.apply_plan(model, plan), plan, X) == 0


class SharedOnTwoInputs(nn.Module):
    """One block applied to two different tensors: its nodes have two inputs and two outputs."""

    def __init__(self):
        super().__init__()
        self.pre = conv()
        self.shared = Plain()

    def forward(self, x):
        return self.shared(x) + self.shared(self.pre(x))


def test_shared_block_is_reported_as_shared_not_by_its_inputs() -> None:
    blocks = _by_name(nn.Sequential(SharedOnTwoInputs()))
    reason = blocks["0.shared"].reason
    assert "called 2 times (shared weights)" in reason and "inputs" not in reason


class PostNorm(nn.Module):
    """A post-norm unit, ``LayerNorm(x + fc(x))``, as in BERT's layers."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)

    def forward(self, x):
        return self.norm(x + self.fc(x))


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_post_norm_units_go_under_the_default_policy_and_stay_under_the_paper_policy(frontend: str) -> None:
    model = nn.Sequential(PostNorm(), PostNorm(), nn.Linear(4, 2))
    x = torch.randn(2, 4)
    default = rp.find_blocks(model, x, frontend=frontend)
    assert [(b.name, b.removable) for b in default] == [("0", True), ("1", True)]
    paper = rp.find_blocks(model, x, frontend=frontend, policy="paper")
    assert [b.removable for b in paper] == [False, False]
    assert "on its main path is outside any residual branch" in (paper[0].reason or "")
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=x, frontend=frontend)
    assert rp.verify(model, rp.apply_plan(model, plan), plan, x) == 0.0


class ParallelBranches(nn.Module):
    """``x + attention(ln x) + mlp(ln x)``, summed left to right as Cohere's decoder layers write it."""

    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(8)
        self.attn = nn.Linear(8, 8)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))

    def forward(self, x):
        h = self.ln(x)
        return x + self.attn(h) + self.mlp(h)


@pytest.mark.parametrize("frontend", ["fx", "export", "eager"])
def test_a_second_branch_added_to_a_residual_join_is_part_of_the_unit(frontend: str) -> None:
    model = nn.Sequential(ParallelBranches(), ParallelBranches(), nn.Linear(8, 2))
    x = torch.randn(2, 5, 8)
    blocks = rp.find_blocks(model, x, frontend=frontend)
    assert [(b.name, b.removable) for b in blocks] == [("0", True), ("1", True)]
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=x, frontend=frontend)
    assert rp.verify(model, rp.apply_plan(model, plan), plan, x) == 0.0
    sublayers = rp.find_blocks(model, x, granularity="sublayer")  # the two branches share the norm
    assert not any(b.removable for b in sublayers if b.kind == "sublayer")


class DownAndUp(nn.Module):
    """Attention at half resolution, as timm's ConvAttention computes it (a strided conv, then upsampling)."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, x):
        return self.up(self.down(x))


class ResAroundDownAndUp(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = DownAndUp()

    def forward(self, x):
        return x + self.inner(x)


def test_an_opaque_module_that_upsamples_inside_is_a_round_trip_in_resolution() -> None:
    model, x = nn.Sequential(ResAroundDownAndUp(), ResAroundDownAndUp()), torch.randn(1, 4, 8, 8)
    opaque = rp.find_blocks(model, x, frontend="fx", leaf_modules=(DownAndUp,))
    assert [(b.name, b.removable) for b in opaque] == [("0", False), ("1", False)]
    assert "inside the opaque `0.inner`" in (opaque[0].reason or "")
    traced = rp.find_blocks(model, x, frontend="fx")  # the same answer as when it is traced through
    assert [b.removable for b in traced] == [False, False] and "down and back up" in (traced[0].reason or "")


class TakesItsShortcut(nn.Module):
    """``relu(f(x) + shortcut)``, its shortcut computed by the caller, as timm's DLA trees call their blocks."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x, shortcut):
        return torch.relu(self.conv(x) + shortcut)


class PassesAnIdentityShortcut(nn.Module):
    def __init__(self):
        super().__init__()
        self.project = nn.Identity()
        self.block = TakesItsShortcut()

    def forward(self, x):
        return self.block(x, self.project(x))


@pytest.mark.parametrize("frontend", ["fx", "export", "eager"])
def test_a_shortcut_through_the_callers_identities_is_the_identity(frontend: str) -> None:
    model, x = nn.Sequential(nn.Conv2d(3, 4, 1), PassesAnIdentityShortcut()), torch.randn(1, 3, 8, 8)
    blocks = rp.find_blocks(model, x, frontend=frontend)
    assert [(b.name, b.removable) for b in blocks] == [("1.block", True)]
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=x, frontend=frontend)
    assert rp.verify(model, rp.apply_plan(model, plan), plan, x) == 0.0
