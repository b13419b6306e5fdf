"""Numbered layer stacks: Hugging Face layers deleted, renumbered, and the config shortened, so that the pruned
model round-trips through ``save_pretrained`` / ``from_pretrained`` and generates as a native smaller model."""

from __future__ import annotations

import types
import warnings

import pytest
import torch
from torch import nn

import residual_prune as rp
from residual_prune.stacks import numbered_stack

from .helpers import Res
from .hf_families import FAMILIES, hf_inputs


def _output(model: nn.Module, inputs: dict) -> torch.Tensor:
    out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("family", list(FAMILIES))
def test_removed_layers_leave_a_model_that_from_pretrained_builds(family: str, tmp_path) -> None:
    build, auto = FAMILIES[family]
    torch.manual_seed(0)
    model = build().eval()
    inputs = hf_inputs(family)
    layers = [b.name for b in rp.find_blocks(model, inputs) if b.removable and b.name.rpartition(".")[2].isdigit()]
    assert len(layers) == 6
    plan = rp.plan_pruning(model, criterion="random", n=2, example_inputs=inputs)
    plan = rp.PruningPlan.from_dict({**plan.to_dict(), "removed": [layers[1], layers[3]]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", rp.PruningWarning)
        pruned = rp.apply_plan(model, plan)
    stack = pruned.get_submodule(layers[0].rpartition(".")[0])
    assert isinstance(stack, nn.ModuleList) and len(stack) == 4 == pruned.config.num_hidden_layers
    assert model.config.num_hidden_layers == 6 and len(model.get_submodule(layers[0].rpartition(".")[0])) == 6
    indices = [{m.layer_idx for m in layer.modules() if hasattr(m, "layer_idx")} for layer in stack]
    assert indices in ([{0}, {1}, {2}, {3}], [set()] * 4)  # renumbered, where the family keeps an index
    if family == "qwen2":
        assert pruned.config.layer_types == [
            "full_attention",
            "full_attention",
            "sliding_attention",
            "sliding_attention",
        ]
    assert rp.verify(model, pruned, plan, inputs) == 0.0
    pruned.save_pretrained(tmp_path)
    reloaded = auto.from_pretrained(tmp_path).eval()
    native = type(pruned)(pruned.config).eval()  # a model built with the smaller config, given the kept weights
    native.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        expected = _output(pruned, inputs)
        assert torch.equal(_output(reloaded, inputs), expected) and torch.equal(_output(native, inputs), expected)
        if family in ("llama", "qwen2", "mistral", "gpt2"):
            ids = torch.randint(0, 100, (1, 6))
            cached = pruned.generate(ids, max_new_tokens=12, do_sample=False, use_cache=True, pad_token_id=0)
            uncached = pruned.generate(ids, max_new_tokens=12, do_sample=False, use_cache=False, pad_token_id=0)
            assert torch.equal(cached, uncached)


class Config(types.SimpleNamespace):
    def to_dict(self) -> dict:
        return dict(vars(self))


class CountedStack(nn.Module):
    """A user model whose config counts its layers; ``special`` is a layer its code treats apart by position."""

    def __init__(self, special: int | None = None):
        super().__init__()
        self.config = Config(num_hidden_layers=4, layer_kinds=["a", "b", "c", "d"], skip_layers=[1, 3], hidden_size=4)
        self.layers = nn.ModuleList(Res() for _ in range(4))
        for i, layer in enumerate(self.layers):
            layer.layer_idx = i
        self.special = special

    def forward(self, x):
        for i, layer in enumerate(self.layers[: self.config.num_hidden_layers]):
            x = layer(x) * (2.0 if i == self.special else 1.0)
        return x


def test_the_config_lists_follow_the_kept_layers() -> None:
    model, x = CountedStack(), torch.randn(1, 4, 6, 6)
    assert numbered_stack(model, "layers.1") == "layers"
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=x)
    plan = rp.PruningPlan.from_dict({**plan.to_dict(), "removed": ["layers.1"]})
    pruned = rp.apply_plan(model, plan)
    assert len(pruned.layers) == 3 and [layer.layer_idx for layer in pruned.layers] == [0, 1, 2]
    assert vars(pruned.config) == {
        "num_hidden_layers": 3,
        "layer_kinds": ["a", "c", "d"],  # one entry per layer
        "skip_layers": [2],  # positions: layer 3 is now layer 2, layer 1 is gone
        "hidden_size": 4,
    }
    assert model.config.num_hidden_layers == 4 and len(model.layers) == 4  # the original is untouched
    assert rp.verify(model, pruned, plan, x) == 0.0


def test_layers_the_code_finds_by_position_are_bypassed_instead() -> None:
    model, x = CountedStack(special=2), torch.randn(1, 4, 6, 6)
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=x)
    plan = rp.PruningPlan.from_dict({**plan.to_dict(), "removed": ["layers.1"]})
    with pytest.warns(rp.PruningWarning, match=r"deleting the layers layers\.1 .* changed CountedStack's outputs"):
        pruned = rp.apply_plan(model, plan)
    assert len(pruned.layers) == 4 and isinstance(pruned.layers[1], rp.surgery.Bypass)
    assert pruned.config.num_hidden_layers == 4
    assert rp.verify(model, pruned, plan, x) == 0.0


def test_a_list_that_is_not_the_only_one_of_its_length_is_not_a_numbered_stack() -> None:
    model = CountedStack()
    model.norms = nn.ModuleList(nn.Identity() for _ in range(4))  # which list does the config count?
    assert numbered_stack(model, "layers.1") is None


class SummedConfig(Config):
    """A config whose layer count is the sum of two others and cannot be set, as ProphetNet's."""

    @property
    def num_hidden_layers(self) -> int:
        return self.encoder_layers + self.decoder_layers

    @num_hidden_layers.setter
    def num_hidden_layers(self, value: int) -> None:
        raise NotImplementedError("set encoder_layers and decoder_layers")


def test_a_stack_whose_count_cannot_be_set_is_not_a_numbered_stack() -> None:
    model, x = CountedStack(), torch.randn(1, 4, 6, 6)
    model.config = SummedConfig(encoder_layers=2, decoder_layers=2)
    assert numbered_stack(model, "layers.1") is None
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=x)
    pruned = rp.apply_plan(model, plan)  # bypassed, as any ModuleList's layer
    assert len(pruned.layers) == 4 and rp.verify(model, pruned, plan, x) == 0.0
