"""Property-based test: a plan file mutated at random gives the exact intended model or a library error."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import residual_prune as rp
from residual_prune.surgery import Bypass
from tests.helpers import Res, assert_unchanged, observable_state


class Outer(Res):
    """A residual unit with one inside it."""

    def __init__(self):
        super().__init__()
        self.inner = Res()

    def forward(self, x):
        y = self.inner(x)
        return y + self.conv(y)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.seq = nn.Sequential(Res(), Outer(), Res())
        self.listed = nn.ModuleList([Res(), Res()])
        self.down = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.seq(self.stem(x))
        for block in self.listed:
            x = block(x)
        return self.head(self.down(x).mean((2, 3)))


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _net() -> Net:
    torch.manual_seed(0)
    return Net()


NET = _net()
NAMES = [name for name, _ in NET.named_modules()]
BLOCKS = {g: {b.name: b for b in rp.find_blocks(NET, X, granularity=g)} for g in ("block", "sublayer")}
VALID = {g: rp.plan_pruning(NET, criterion="l1", n=2, example_inputs=X, granularity=g).to_dict() for g in BLOCKS}

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(10**300, 10**400),
    st.sampled_from([1.0, 0.5, -1e308]),
    st.sampled_from([math.nan, math.inf]),
    st.text(max_size=6),
    st.sampled_from(NAMES + ["seq.1#0", "seq.1.inner#0"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
REMOVABLE = sorted(name for blocks in BLOCKS.values() for name, b in blocks.items() if b.removable)
block_names = st.sampled_from(REMOVABLE) | st.sampled_from(sorted(set(NAMES) | set(BLOCKS["sublayer"])))


@st.composite
def mutated_plans(draw) -> tuple[str, bytes]:
    granularity = draw(st.sampled_from(sorted(VALID)))
    data = copy.deepcopy(VALID[granularity])
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(data) + ["extra"]))
        action = draw(st.sampled_from(["names", "names", "names", "value", "delete"]))
        if action == "names":
            data["removed"] = draw(st.lists(block_names, min_size=1, max_size=3))
        elif action == "value":
            data[key] = draw(json_values)
        else:
            data.pop(key, None)
    data = draw(st.sampled_from([data] * 8 + [[data], {"plan": data}]))
    text = json.dumps(data)
    encoding = draw(st.sampled_from(["utf-8"] * 8 + ["utf-16", "latin-1-garbage", "truncated"]))
    if encoding == "latin-1-garbage":
        raw = text.encode() + b"\xff"
    elif encoding == "truncated":
        raw = text.encode()[: draw(st.integers(0, len(text)))]
    else:
        raw = text.encode(encoding)
    return granularity, raw


def _reference_output(removed: list[str]) -> torch.Tensor:
    """The intended model, built without the library: the removed units replaced by the identity."""
    model = copy.deepcopy(NET)
    for name in removed:
        parent, _, key = name.rpartition(".")
        model.get_submodule(parent)._modules[key] = Bypass()
    with torch.no_grad():
        return model.eval()(X)


@settings(max_examples=80, deadline=None, database=None)
@given(case=mutated_plans())
def test_a_mutated_plan_gives_the_intended_model_or_a_library_error(tmp_path_factory, case) -> None:
    _, raw = case
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    path.write_bytes(raw)
    model = _net()
    before = observable_state(model)
    try:
        plan = rp.PruningPlan.load(path)
        pruned = rp.apply_plan(model, plan)
    except rp.ResidualPruneError:
        assert_unchanged(model, before)
        return
    assert_unchanged(model, before)
    blocks = BLOCKS[plan.granularity]
    assert len(set(plan.removed)) == len(plan.removed)
    assert all(name in blocks and blocks[name].removable for name in plan.removed)
    assert not any(a in blocks[b].contains for a in plan.removed for b in plan.removed)
    removed_params = sum(blocks[name].params for name in plan.removed)
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in pruned.parameters()) == removed_params
    if plan.granularity == "block":
        with torch.no_grad():
            torch.testing.assert_close(pruned.eval()(X), _reference_output(plan.removed), rtol=0, atol=0)
    else:
        rp.verify(model, pruned, plan, X)


@pytest.mark.parametrize("granularity", sorted(VALID))
def test_the_unmutated_plan_applies(granularity: str) -> None:
    plan = rp.PruningPlan.from_dict(VALID[granularity])
    pruned = rp.apply_plan(_net(), plan)
    assert rp.verify(_net(), pruned, plan, X) == 0 or granularity == "sublayer"
