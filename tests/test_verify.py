"""verify on models whose inputs are keyword arguments and whose outputs are containers of tensors."""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch
from torch import nn

import residual_prune as rp
from tests.helpers import Res

X = torch.randn(2, 4, 6, 6)


@dataclasses.dataclass
class Output(collections.OrderedDict):
    """Like Hugging Face's ``ModelOutput``: a dataclass that is also an ordered dict of its set fields."""

    logits: torch.Tensor | None = None
    hidden: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) is not None:
                self[field.name] = getattr(self, field.name)


class Heads(nn.Module):
    """Three residual blocks, then pooled features and two linear heads, returned as ``kind`` says."""

    def __init__(self, kind: str = "dict"):
        super().__init__()
        self.kind = kind
        self.body = nn.Sequential(Res(), Res(), Res())
        self.head = nn.Linear(4, 3)
        self.aux = nn.Linear(4, 2)

    def forward(self, x):
        features = self.body(x).mean((2, 3))
        if self.kind == "dataclass":
            return Output(logits=self.head(features), hidden=features)
        if self.kind == "detections":  # a list of per-image dicts, as torchvision's detection models return
            return [{"boxes": self.head(features[i : i + 1]), "scores": self.aux(features[i])} for i in range(2)]
        return {"features": features, "logits": self.head(features), "aux": self.aux(features)}


class Renamed(nn.Module):
    """The pruned model with its output container changed by ``edit``."""

    def __init__(self, model: nn.Module, edit):
        super().__init__()
        self.model, self.edit = model, edit

    def forward(self, x):
        return self.edit(self.model(x))


def _pruned(kind: str, example_inputs=X) -> tuple[nn.Module, nn.Module, rp.PruningPlan]:
    model = Heads(kind)
    plan = rp.plan_pruning(model, criterion="random", n=1, example_inputs=example_inputs)
    return model, rp.apply_plan(model, plan), plan


def _perturb(weight: torch.Tensor, by: float) -> None:
    with torch.no_grad():
        weight += by


@pytest.mark.parametrize("kind", ["dict", "dataclass", "detections"])
def test_a_correctly_pruned_model_with_container_outputs_passes(kind) -> None:
    model, pruned, plan = _pruned(kind)
    assert rp.verify(model, pruned, plan, X) == 0


def test_dataclass_outputs_are_compared_field_by_field() -> None:
    model, pruned, plan = _pruned("dataclass")
    _perturb(pruned.head.bias, 0.1)
    with pytest.raises(rp.VerificationError, match=r"in its output logits, max abs error 0\.1"):
        rp.verify(model, pruned, plan, X)


def test_the_output_with_the_largest_error_is_named() -> None:
    model, pruned, plan = _pruned("dict")
    _perturb(pruned.aux.bias, 0.01)
    _perturb(pruned.head.bias, 1.0)
    with pytest.raises(rp.VerificationError, match=r"in its output \['logits'\], .*\(1 other outputs differ too\)"):
        rp.verify(model, pruned, plan, X)


def test_a_small_output_is_held_to_its_own_scale() -> None:
    model, pruned, plan = _pruned("dict")
    _perturb(model.head.weight, 1e4)  # logits of about 1e4 must not excuse an error of 1e-2 in aux
    _perturb(pruned.head.weight, 1e4)
    _perturb(pruned.aux.bias, 1e-2)
    with pytest.raises(rp.VerificationError, match=r"in its output \['aux'\]"):
        rp.verify(model, pruned, plan, X)


def test_a_missing_entry_in_nested_outputs_is_named_by_its_path() -> None:
    model, pruned, plan = _pruned("detections")
    dropped = Renamed(pruned, lambda out: [out[0], {"boxes": out[1]["boxes"]}])
    with pytest.raises(rp.VerificationError, match=r"output \[1\]\['scores'\] is missing"):
        rp.verify(model, dropped, plan, X)


def test_renamed_keys_are_a_difference_even_with_equal_values() -> None:
    model, pruned, plan = _pruned("dict")
    renamed = Renamed(pruned, lambda out: {("logit" if k == "logits" else k): v for k, v in out.items()})
    with pytest.raises(rp.VerificationError, match=r"output \['logits'\] is missing"):
        rp.verify(model, renamed, plan, X)


def test_a_different_container_or_length_is_named() -> None:
    model, pruned, plan = _pruned("detections")
    with pytest.raises(rp.VerificationError, match=r"output \[2\] is not in the reference's output"):
        rp.verify(model, Renamed(pruned, lambda out: [*out, out[0]]), plan, X)
    with pytest.raises(rp.VerificationError, match=r"output \[0\] is a tuple where the reference returns a dict"):
        rp.verify(model, Renamed(pruned, lambda out: [tuple(d.values()) for d in out]), plan, X)


def test_keyword_inputs_are_passed_by_name() -> None:
    model, pruned, plan = _pruned("dict", {"x": X})
    assert rp.verify(model, pruned, plan, {"x": X}) == 0
    _perturb(pruned.head.bias, 0.1)
    with pytest.raises(rp.VerificationError, match=r"output \['logits'\]"):
        rp.verify(model, pruned, plan, {"x": X})


class Noisy(nn.Module):
    """Three residual blocks on the input plus uniform noise drawn in every forward, eval mode included
    (as masked autoencoders' random masking or VITS's flow noise)."""

    def __init__(self, noise_scale: float = 1.0):
        super().__init__()
        self.noise_scale = noise_scale
        self.body = nn.Sequential(Res(), Res(), Res())

    def forward(self, x):
        return self.body(x + self.noise_scale * torch.rand_like(x))


def test_a_model_that_draws_random_numbers_gets_the_same_ones_in_both_runs() -> None:
    model = Noisy()
    plan = rp.plan_pruning(model, criterion="random", n=1, example_inputs=X)
    assert rp.verify(model, rp.apply_plan(model, plan), plan, X) == 0


def test_verify_leaves_the_callers_random_state_as_it_was() -> None:
    model = Noisy(noise_scale=0.0)  # draws random numbers that do not change its output
    plan = rp.plan_pruning(model, criterion="random", n=1, example_inputs=X)
    pruned = rp.apply_plan(model, plan)
    before = torch.get_rng_state()
    rp.verify(model, pruned, plan, X)
    assert torch.equal(torch.get_rng_state(), before)
