"""Property-based test: random residual networks keep the library's invariants under pruning."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import residual_prune as rp
from tests.helpers import assert_same_state, assert_unchanged, observable_state, state_snapshot

SPELLINGS = ("out = out + x", "out += x", "torch.add(out, x)", "out.add(x)", "x.add_(out)", "x + out")
# layer_scale scales the branch; scale_after_add scales the sum, a parametric op on the main path that
# makes the unit not removable (blocks.py, rule 2)
EXTRAS = ("none", "layer_scale", "scale_after_add", "relu_module", "relu_function")
CONTAINERS = ("sequential", "modulelist", "attributes", "indexed")


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    spelling: str
    extra: str


@dataclasses.dataclass(frozen=True)
class StageSpec:
    container: str
    downsample: bool  # the first block has stride 2 and a 1x1 conv projection shortcut
    width: int
    blocks: tuple[BlockSpec, ...]


@dataclasses.dataclass(frozen=True)
class NetSpec:
    stem_width: int
    stages: tuple[StageSpec, ...]
    alias: bool = False  # the last block is also held as ``net.alias``
    stateful: bool = False  # the forward counts its calls in a buffer and records batch sizes in a list


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, spec: BlockSpec):
        super().__init__()
        self.spelling, self.extra = spec.spelling, spec.extra
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) if stride > 1 else None
        )
        scaled = spec.extra in ("layer_scale", "scale_after_add")
        self.gamma = nn.Parameter(torch.full((cout, 1, 1), 0.5)) if scaled else None
        self.act = nn.ReLU(inplace=True) if spec.extra == "relu_module" else None

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.extra == "layer_scale":
            out = self.gamma * out
        if self.downsample is not None:
            x = self.downsample(x)
        if self.spelling == "out = out + x":
            out = out + x
        elif self.spelling == "out += x":
            out += x
        elif self.spelling == "torch.add(out, x)":
            out = torch.add(out, x)
        elif self.spelling == "out.add(x)":
            out = out.add(x)
        elif self.spelling == "x.add_(out)":  # x is saved by conv1 (and is the caller's): add into a copy
            out = (x if self.downsample is not None else x.clone()).add_(out)
        else:
            out = x + out
        if self.extra == "scale_after_add":
            out = out * self.gamma
        elif self.act is not None:
            out = self.act(out)
        elif self.extra == "relu_function":
            out = F.relu(out)
        return out


class ListStage(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class AttributeStage(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.num_blocks = len(blocks)
        for j, block in enumerate(blocks):
            setattr(self, f"block_{j}", block)

    def forward(self, x):
        for j in range(self.num_blocks):
            x = getattr(self, f"block_{j}")(x)
        return x


class IndexedStage(nn.Module):
    """Indexes its Sequential instead of calling it (deleting an entry would shift the indices)."""

    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        x = self.blocks[0](x)
        for block in self.blocks[1:]:
            x = block(x)
        return x


STAGES = {"modulelist": ListStage, "attributes": AttributeStage, "indexed": IndexedStage}
BLOCK_KEYS = {"sequential": "{}", "modulelist": "blocks.{}", "attributes": "block_{}", "indexed": "blocks.{}"}


class Net(nn.Module):
    def __init__(self, spec: NetSpec):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, spec.stem_width, 3, padding=1, bias=False), nn.BatchNorm2d(spec.stem_width), nn.ReLU()
        )
        channels = spec.stem_width
        for i, stage in enumerate(spec.stages):
            blocks = []
            for j, block in enumerate(stage.blocks):
                stride = 2 if stage.downsample and j == 0 else 1
                blocks.append(Block(channels, stage.width, stride, block))
                channels = stage.width
            container = nn.Sequential(*blocks) if stage.container == "sequential" else STAGES[stage.container](blocks)
            setattr(self, f"stage{i}", container)
        self.num_stages = len(spec.stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 3))
        if spec.alias:
            self.alias = blocks[-1]
        self.stateful = spec.stateful
        if spec.stateful:
            self.register_buffer("calls", torch.zeros((), dtype=torch.long))
            self.batch_sizes: list = []

    def forward(self, x):
        if self.stateful:
            self.calls += 1
            self.batch_sizes.append(x.shape[0])
        x = self.stem(x)
        for i in range(self.num_stages):
            x = getattr(self, f"stage{i}")(x)
        return self.head(x)


def expected_blocks(spec: NetSpec) -> dict[str, bool]:
    """Qualified name of every residual unit -> whether it is removable."""
    return {
        f"stage{i}." + BLOCK_KEYS[stage.container].format(j): not (stage.downsample and j == 0)
        and block.extra != "scale_after_add"
        for i, stage in enumerate(spec.stages)
        for j, block in enumerate(stage.blocks)
    }


@st.composite
def net_specs(draw) -> NetSpec:
    channels = draw(st.integers(4, 16))
    stem_width, stages = channels, []
    for _ in range(draw(st.integers(1, 3))):
        downsample = draw(st.booleans())
        if downsample:
            channels = draw(st.integers(4, 16))
        blocks = draw(
            st.lists(st.builds(BlockSpec, st.sampled_from(SPELLINGS), st.sampled_from(EXTRAS)), min_size=1, max_size=4)
        )
        stages.append(StageSpec(draw(st.sampled_from(CONTAINERS)), downsample, channels, tuple(blocks)))
    return NetSpec(stem_width, tuple(stages), draw(st.booleans()), draw(st.booleans()))


def build(spec: NetSpec, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net(spec)


def _count_call(module: nn.Module, args, output) -> None:
    module.hook_calls = getattr(module, "hook_calls", 0) + 1


def with_caller_state(net: Net) -> Net:
    """What a caller's model carries besides weights: gradients, a forward hook, mixed modes."""
    F.cross_entropy(net(X_TRAIN), torch.tensor([0, 2])).backward()
    net.stem[0].register_forward_hook(_count_call)
    net.stem.eval()
    return net


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def structure(model: nn.Module) -> list[tuple[str, type, bool]]:
    return [(name, type(m), m.training) for name, m in model.named_modules()]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Intra-op threads only add overhead on 8x8 inputs (several times slower on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


X = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
X_TRAIN = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # BN needs 2 samples at 1x1


@settings(max_examples=25, deadline=None, database=None)
@given(spec=net_specs(), data=st.data())
def test_random_residual_networks(spec: NetSpec, data):
    net = with_caller_state(build(spec))
    before = observable_state(net)

    expected = expected_blocks(spec)
    blocks = rp.find_blocks(net, X)
    assert {b.name: b.removable for b in blocks} == expected
    assert [b.name for b in blocks] == list(expected)  # execution order
    removable = sum(expected.values())
    if removable == 0:
        with pytest.raises(rp.NoRemovableBlocksError):
            rp.plan_pruning(net, criterion="random", n=0, example_inputs=X)
        return

    k = data.draw(st.integers(0, removable), label="k")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    plan = rp.plan_pruning(net, criterion="random", n=k, example_inputs=X, seed=seed)
    assert len(plan.removed) == k and all(expected[name] for name in plan.removed)
    planned = rp.apply_plan(net, plan)
    pruned = rp.prune_layers(net, criterion="random", n=k, example_inputs=X, seed=seed)

    params = {b.name: b.params for b in blocks}
    assert num_params(net) - num_params(pruned) == sum(params[name] for name in plan.removed)
    assert_same_state(pruned, state_snapshot(planned))
    # kept layers keep their weights and their state_dict keys
    gone = [
        *plan.removed,
        *(["alias"] if spec.alias and any(net.alias is net.get_submodule(n) for n in plan.removed) else []),
    ]
    reference = {
        key: value for key, value in net.state_dict().items() if not any(key.startswith(name + ".") for name in gone)
    }
    assert list(reference) == list(pruned.state_dict())
    assert all(torch.equal(reference[k], v) for k, v in pruned.state_dict().items())
    rp.verify(net, pruned, plan, X)

    remaining = rp.find_blocks(pruned, X)
    assert (len(remaining), sum(b.removable for b in remaining)) == (len(blocks) - k, removable - k)

    pruned.eval()
    traced = torch.fx.symbolic_trace(pruned)
    with torch.no_grad():
        expected_out = pruned(X)
        torch.testing.assert_close(traced(X), expected_out)
        fresh = rp.apply_plan(build(spec, seed=1), plan)
        fresh.load_state_dict(pruned.state_dict())
        torch.testing.assert_close(fresh.eval()(X), expected_out)

    pruned.train()
    for p in pruned.parameters():
        p.grad = None
    F.cross_entropy(pruned(X_TRAIN), torch.tensor([0, 2])).backward()
    for name, p in pruned.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name

    assert_unchanged(net, before)


def expected_sublayers(spec: NetSpec) -> dict[str, bool]:
    """Every block has one addition: its branch is removable unless the shortcut is a projection."""
    return {
        f"stage{i}." + BLOCK_KEYS[stage.container].format(j) + "#0": not (stage.downsample and j == 0)
        for i, stage in enumerate(spec.stages)
        for j, _ in enumerate(stage.blocks)
    }


@settings(max_examples=15, deadline=None, database=None)
@given(spec=net_specs(), data=st.data())
def test_random_residual_networks_at_sublayer_granularity(spec: NetSpec, data):
    net = with_caller_state(build(spec))
    before = observable_state(net)
    expected = expected_sublayers(spec)
    subs = rp.find_blocks(net, X, granularity="sublayer")
    assert {b.name: b.removable for b in subs} == expected
    removable = sum(expected.values())
    if removable == 0:
        return
    k = data.draw(st.integers(1, removable), label="k")
    plan = rp.plan_pruning(
        net,
        criterion="random",
        n=k,
        example_inputs=X,
        granularity="sublayer",
        seed=data.draw(st.integers(0, 2**16), label="seed"),
    )
    pruned = rp.apply_plan(net, plan)
    params = {b.name: b.params for b in subs}
    assert num_params(net) - num_params(pruned) == sum(params[name] for name in plan.removed)
    rp.verify(net, pruned, plan, X)
    pruned.train()
    F.cross_entropy(pruned(X_TRAIN), torch.tensor([0, 2])).backward()
    assert_unchanged(net, before)
