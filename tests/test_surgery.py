"""apply_plan on each kind of container, and verify's own check."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import residual_prune as rp
from residual_prune.surgery import Bypass
from tests.helpers import Res


class InList(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(Res() for _ in range(4))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class ByName(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second, self.third = Res(), Res(), Res()

    def forward(self, x):
        return self.third(self.second(self.first(x)))


X = torch.randn(1, 4, 8, 8)


def _plan(model: nn.Module, removed: list[str]) -> rp.PruningPlan:
    plan = rp.plan_pruning(model, criterion="random", n=len(removed), example_inputs=X)
    plan.removed = removed
    return plan


def test_sequential_keeps_the_names_of_kept_blocks() -> None:
    model = nn.Sequential(*[Res() for _ in range(4)])
    pruned = rp.apply_plan(model, _plan(model, ["1", "2"]))
    assert list(pruned._modules) == ["0", "3"] and len(pruned) == 2 and pruned[1] is pruned._modules["3"]
    assert rp.verify(model, pruned, _plan(model, ["1", "2"]), X) == 0


def test_module_list_keeps_indices() -> None:
    model = InList()
    plan = _plan(model, ["blocks.0", "blocks.2"])
    pruned = rp.apply_plan(model, plan)
    assert len(pruned.blocks) == 4
    assert isinstance(pruned.blocks[0], Bypass) and isinstance(pruned.blocks[2], Bypass)
    assert torch.equal(pruned.blocks[1].conv.weight, model.blocks[1].conv.weight)
    assert sorted(pruned.state_dict()) == [
        "blocks.1.conv.bias",
        "blocks.1.conv.weight",
        "blocks.3.conv.bias",
        "blocks.3.conv.weight",
    ]
    assert rp.verify(model, pruned, plan, X) == 0


class IndexedList(nn.Module):
    """The owner indexes its list: deleting from it would move the extra layer."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(Res() for _ in range(3))
        self.after_first = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == 0:
                x = self.after_first(x)
        return x


def test_index_dependent_forward_survives() -> None:
    model = IndexedList()
    plan = _plan(model, ["blocks.0"])
    assert rp.verify(model, rp.apply_plan(model, plan), plan, X) == 0


class ExtraArguments(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(Res() for _ in range(3))

    def forward(self, x):
        for block in self.blocks:
            x = block(x, x.shape[-1], mask=None)
        return x


class ResWithArguments(Res):
    def forward(self, x, size=None, mask=None):
        return x + self.conv(x)


def test_blocks_called_with_extra_arguments() -> None:
    model = ExtraArguments()
    model.blocks = nn.ModuleList(ResWithArguments() for _ in range(3))
    plan = _plan(model, ["blocks.1"])
    assert rp.verify(model, rp.apply_plan(model, plan), plan, X) == 0


def test_attribute_blocks_become_identity() -> None:
    model = ByName()
    plan = _plan(model, ["second"])
    pruned = rp.apply_plan(model, plan)
    assert isinstance(pruned.second, nn.Identity) and type(pruned) is ByName
    assert not any(k.startswith("second.") for k in pruned.state_dict())
    assert rp.verify(model, pruned, plan, X) == 0


def test_verify_detects_a_wrong_model() -> None:
    model = nn.Sequential(*[Res() for _ in range(3)])
    plan = _plan(model, ["1"])
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong[0].conv.weight.add_(1.0)
    with pytest.raises(rp.VerificationError, match="max abs error"):
        rp.verify(model, wrong, plan, X)


class CountedCopies(Res):
    copies = 0

    def __deepcopy__(self, memo):
        CountedCopies.copies += 1
        clone = Res.__new__(CountedCopies)
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return clone


def test_removed_blocks_are_not_copied() -> None:
    model = nn.Sequential(Res(), CountedCopies(), CountedCopies(), Res())
    CountedCopies.copies = 0
    pruned = rp.apply_plan(model, _plan(model, ["1"]))
    assert CountedCopies.copies == 1  # only the kept block "2"
    assert list(pruned._modules) == ["0", "2", "3"] and isinstance(pruned[1], CountedCopies)
    assert pruned[1].conv.weight is not model[2].conv.weight and len(model) == 4
    assert rp.verify(model, pruned, _plan(model, ["1"]), X) == 0


class Aliased(nn.Module):
    """Holds its second block twice: in the Sequential and as an attribute."""

    def __init__(self, alias_first: bool = False):
        super().__init__()
        if alias_first:  # registered first, the alias is the name tracing reports
            self.last = Res()
            self.body = nn.Sequential(Res(), self.last, Res())
        else:
            self.body = nn.Sequential(Res(), Res(), Res())
            self.last = self.body[1]

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("alias_first", [False, True])
def test_a_block_held_twice_is_removed_from_every_holder(alias_first: bool) -> None:
    model = Aliased(alias_first)
    name = "last" if alias_first else "body.1"
    plan = _plan(model, [name])
    pruned = rp.apply_plan(model, plan)
    assert isinstance(pruned.last, Bypass) and isinstance(pruned.body[1], Bypass)
    assert not any(k.startswith(("last.", "body.1.")) for k in pruned.state_dict())
    assert rp.verify(model, pruned, plan, X) == 0
    x = torch.randn(2, 4, 8, 8)
    reference = nn.Sequential(model.body[0], model.body[2])
    assert torch.equal(pruned(x), reference(x))
    assert model.body[1] is model.last and isinstance(model.last, Res)


class Indexed(nn.Module):
    """Indexes its Sequential instead of calling it: deleting an entry would shift the indices."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(Res(), Res(), Res())

    def forward(self, x):
        x = self.blocks[0](x)
        for block in self.blocks[1:]:
            x = block(x)
        return x


@pytest.mark.parametrize("removed", [["blocks.0"], ["blocks.1", "blocks.2"], ["blocks.0", "blocks.1", "blocks.2"]])
def test_an_indexed_sequential_keeps_its_indices(removed: list[str]) -> None:
    model = Indexed()
    plan = _plan(model, removed)
    pruned = rp.apply_plan(model, plan)
    assert len(pruned.blocks) == 3 and all(isinstance(pruned.blocks[int(n[-1])], Bypass) for n in removed)
    assert rp.verify(model, pruned, plan, X) == 0
    x = torch.randn(2, 4, 8, 8)
    kept = [model.blocks[i] for i in range(3) if f"blocks.{i}" not in removed]
    assert torch.equal(pruned(x), nn.Sequential(*kept)(x))


def test_a_stand_in_pickled_before_it_had_call_shapes_still_runs() -> None:
    from residual_prune.surgery import Bypass

    old = Bypass()
    del old.keyword, old.constants  # as unpickled from a release whose Bypass had no such attributes
    x = torch.randn(2, 3)
    assert torch.equal(old(x, "mask"), x)
    out, none = Bypass("hidden_states", (None,))(hidden_states=x, mask=None)
    assert torch.equal(out, x) and out is not x and none is None  # a copy, as the removed block returned


def test_a_stand_in_keeps_the_plain_attributes_the_owner_reads() -> None:
    class Typed(nn.Module):
        def __init__(self, kind: str):
            super().__init__()
            self.kind, self.index = kind, 3
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return x + self.fc(x)

    class Owner(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([Typed("mix"), Typed("mix"), Typed("skip")])

        def forward(self, x):
            for layer in self.layers:
                if layer.kind == "mix":  # reads an attribute of each layer, as Nemotron-H's model does
                    x = layer(x)
            return x

    model, x = Owner(), torch.randn(2, 4)
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=x)
    pruned = rp.apply_plan(model, plan)
    assert rp.verify(model, pruned, plan, x) == 0.0
    stand_in = pruned.get_submodule(plan.removed[0])
    assert (stand_in.kind, stand_in.index) == ("mix", 3) and not list(stand_in.parameters())


class AddsInPlace(nn.Module):
    """VITS's HiFi-GAN sums its resblocks in place: ``out = blocks[0](h); out += blocks[1](h); ...``."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Res(), Res(), Res()])

    def forward(self, h):
        out = self.blocks[0](h)
        out += self.blocks[1](h)
        out += self.blocks[2](h)
        return out


def test_a_caller_that_adds_in_place_to_a_stand_ins_result_does_not_write_into_its_input() -> None:
    model, x = AddsInPlace(), torch.randn(1, 4, 6, 6)
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=x)
    plan = rp.PruningPlan.from_dict({**plan.to_dict(), "removed": ["blocks.0"]})
    pruned = rp.apply_plan(model, plan)
    assert isinstance(pruned.blocks[0], Bypass)
    with torch.no_grad():
        expected = x + model.blocks[1](x) + model.blocks[2](x)  # blocks.0 as the identity
        assert torch.allclose(pruned(x.clone()), expected, atol=1e-6)
    assert rp.verify(model, pruned, plan, x) < 1e-5


def test_reaching_into_a_removed_block_says_which_attribute_and_why() -> None:
    class Rescales(nn.Module):
        """Reads a submodule of every block outside their forward, as RWKV rescales its layers."""

        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Res(), Res()])

        def forward(self, x):
            if self.training:
                for block in self.blocks:
                    block.conv.weight.data.mul_(1.0)
            for block in self.blocks:
                x = block(x)
            return x

    model, x = Rescales(), torch.randn(1, 4, 6, 6)
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=x)
    pruned = rp.apply_plan(model, plan).train()
    with pytest.raises(AttributeError, match="'conv': the model reads `conv` of a block that apply_plan removed"):
        pruned(x)
