"""Sub-layers of Hugging Face models removed by module stand-ins (FinerCut's attention and MLP apart): the result
equals the model whose removed branches return zeros, frees their weights, and keeps generate exact with the cache."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
import transformers as hf
from torch import nn

import residual_prune as rp
from residual_prune.branch_surgery import ZeroBranch

from .helpers import assert_same_state, state_snapshot
from .hf_families import COMMON, DECODER, FAMILIES, hf_inputs

DECODERS = ("llama", "qwen2", "mistral", "gpt2")


def _sublayer_plan(model: nn.Module, inputs: dict, removed: list[str]) -> rp.PruningPlan:
    plan = rp.plan_pruning(model, criterion="random", n=1, example_inputs=inputs, granularity="sublayer")
    return dataclasses.replace(plan, removed=removed)


def _cached_step_gap(model: nn.Module) -> float:
    """How far the last token's logits of a cached step are from those of one forward over all tokens."""
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids).logits[:, -1]
        prefix = model(ids[:, :8], use_cache=True)
        # transformers 5.x renames past_key_values to cache
        key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        step = model(ids[:, 8:], use_cache=True, **{key: prefix[key]}).logits[:, -1]
    return float((full - step).abs().max())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_attention_and_mlp_removed_apart(family: str) -> None:
    build, _ = FAMILIES[family]
    torch.manual_seed(0)
    model = build().eval()
    inputs = hf_inputs(family)
    subs = [b for b in rp.find_blocks(model, inputs, granularity="sublayer") if b.removable]
    assert len(subs) == 12 and all(b.ends is not None and b.ends.leaves for b in subs)  # 6 layers x 2 branches
    # qwen2's layers mix attention types: its first full-attention layer's attention (layer 0) stays
    removed = [subs[2].name, subs[3].name] if family == "qwen2" else [subs[0].name, subs[3].name]
    plan = _sublayer_plan(model, inputs, removed)
    before = state_snapshot(model)
    pruned = rp.apply_plan(model, plan)
    assert_same_state(model, before)
    leaves = [b.ends.leaves for b in subs if b.name in removed]
    assert all(isinstance(pruned.get_submodule(name), ZeroBranch) for name in leaves)
    assert type(pruned) is type(model)
    freed = sum(b.params for b in subs if b.name in removed)  # what the plan counts: the branch's norm goes too
    assert freed > sum(p.numel() for name in leaves for p in model.get_submodule(name).parameters())
    assert sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for p in model.parameters()) - freed
    kept = pruned.state_dict()
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in kept.items())
    assert rp.verify(model, pruned, plan, inputs) <= 1e-6
    if family in DECODERS:
        assert _cached_step_gap(pruned) <= 1e-5
        ids = torch.randint(0, 100, (1, 5), generator=torch.Generator().manual_seed(2))
        cached = pruned.generate(ids, max_new_tokens=10, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = pruned.generate(ids, max_new_tokens=10, do_sample=False, use_cache=False, pad_token_id=0)
        assert torch.equal(cached, uncached)


def test_the_kept_attentions_are_renumbered_for_the_cache() -> None:
    torch.manual_seed(0)
    model = hf.LlamaForCausalLM(hf.LlamaConfig(**DECODER, **COMMON)).eval()
    inputs = hf_inputs("llama")
    plan = _sublayer_plan(model, inputs, ["model.layers.0#0", "model.layers.2#0"])
    pruned = rp.apply_plan(model, plan)
    kept = [layer.self_attn.layer_idx for layer in pruned.model.layers if not isinstance(layer.self_attn, ZeroBranch)]
    assert kept == [0, 1, 2, 3]
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(6))  # the original's stay
    assert _cached_step_gap(pruned) <= 1e-5
    for new, layer in enumerate(pruned.model.layers):  # with the old numbers, the cache reads an empty layer 0
        layer.self_attn.layer_idx = new
    assert _cached_step_gap(pruned) > 1e-4


def test_the_first_attention_of_a_type_stays_where_layers_mix_types() -> None:
    build, _ = FAMILIES["qwen2"]
    torch.manual_seed(0)
    model = build().eval()
    assert model.config.layer_types[:4] == ["full_attention"] * 3 + ["sliding_attention"]
    inputs = hf_inputs("qwen2")
    for name in ("model.layers.0#0", "model.layers.3#0"):  # the first full and the first sliding attention
        with pytest.raises(rp.PlanError, match="mix attention types"):
            rp.apply_plan(model, _sublayer_plan(model, inputs, [name]))
    pruned = rp.apply_plan(model, _sublayer_plan(model, inputs, ["model.layers.4#0"]))
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers if hasattr(layer.self_attn, "k_proj")] == [
        0,
        1,
        2,
        3,
        5,
    ]
    assert _cached_step_gap(pruned) <= 1e-5


def test_a_sublayer_plan_file_rebuilds_the_model(tmp_path) -> None:
    torch.manual_seed(0)
    model = hf.GPT2LMHeadModel(hf.GPT2Config(n_embd=32, n_layer=6, n_head=4, vocab_size=100, n_positions=64)).eval()
    inputs = hf_inputs("gpt2")
    plan = rp.plan_pruning(
        model, criterion="block_influence", n=3, data=[inputs], example_inputs=inputs, granularity="sublayer"
    )
    path = plan.save(tmp_path / "plan.json")
    again = rp.apply_plan(model, rp.PruningPlan.load(path))
    with torch.no_grad():
        assert torch.equal(again(**inputs).logits, rp.apply_plan(model, plan)(**inputs).logits)
    stood_in = {name for name, m in again.named_modules() if isinstance(m, ZeroBranch)}
    blocks = {b.name: b for b in rp.find_blocks(model, inputs, granularity="sublayer")}
    ends = [blocks[name].ends.leaves for name in plan.removed]  # attn or mlp
    assert stood_in == {*ends, *(f"{end.rpartition('.')[0]}.ln_{1 if end.endswith('attn') else 2}" for end in ends)}


def test_numbers_a_model_computes_with_stay() -> None:
    # ImageGPT scales attention by 1 / (layer_idx + 1): renumbering would change the kept layers' outputs
    torch.manual_seed(0)
    config = hf.ImageGPTConfig(
        n_embd=32, n_layer=3, n_head=4, vocab_size=100, n_positions=64, scale_attn_by_inverse_layer_idx=True
    )
    model = hf.ImageGPTForCausalImageModeling(config).eval()
    inputs = {"input_ids": torch.randint(0, 99, (1, 8), generator=torch.Generator().manual_seed(1))}
    plan = _sublayer_plan(model, inputs, ["transformer.h.1#0"])
    pruned = rp.apply_plan(model, plan)
    assert [getattr(layer.attn, "layer_idx", None) for layer in pruned.transformer.h] == [0, 1, 2]
    assert isinstance(pruned.transformer.h[1].attn, ZeroBranch)
    assert rp.verify(model, pruned, plan, inputs) <= 1e-6
    with pytest.raises(rp.PlanError, match="outputs change when its ImageGPTAttention modules are renumbered"):
        rp.apply_plan(model, dataclasses.replace(plan, removed=["transformer.h.0#0"]))
    assert not any(m._forward_hooks for m in model.modules())  # the checks' hooks are gone, refused or not


def test_a_post_norm_branch_loses_its_attention_too() -> None:
    # Olmo2 normalizes the attention's output: the branch ends in the norm, and the attention before it goes too
    torch.manual_seed(0)
    config = hf.Olmo2Config(**DECODER, **COMMON, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    model = hf.Olmo2ForCausalLM(config).eval()
    inputs = hf_inputs("llama")
    blocks = {b.name: b for b in rp.find_blocks(model, inputs, granularity="sublayer")}
    plan = _sublayer_plan(model, inputs, ["model.layers.0#0", "model.layers.2#1"])
    pruned = rp.apply_plan(model, plan)
    assert blocks["model.layers.0#0"].ends.leaves == "model.layers.0.post_attention_layernorm"
    assert isinstance(pruned.model.layers[0].self_attn.q_proj, ZeroBranch)
    freed = sum(blocks[name].params for name in plan.removed)
    assert sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for p in model.parameters()) - freed
    assert rp.verify(model, pruned, plan, inputs) <= 1e-6
    assert _cached_step_gap(pruned) <= 1e-5


class Mixer(nn.Module):
    """An attention stand-in that numbers itself, as Hugging Face attention modules do."""

    def __init__(self, layer_idx: int):
        super().__init__()
        self.layer_idx, self.linear = layer_idx, nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class TwoMixers(nn.Module):
    """A decoder layer with self- and cross-attention of one class and one number: x + a(x), then + b(x)."""

    def __init__(self, layer_idx: int):
        super().__init__()
        self.a, self.b = Mixer(layer_idx), Mixer(layer_idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.a(x)
        return x + self.b(x)


class KeywordDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(TwoMixers(i) for i in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def test_numbers_shared_by_two_modules_stay_and_the_first_is_kept() -> None:
    torch.manual_seed(0)
    model, inputs = KeywordDecoder(), {"x": torch.randn(2, 5, 4)}  # keyword inputs: captured by torch.export
    with pytest.raises(rp.PlanError, match="not numbered one per layer in order"):
        rp.apply_plan(model, _sublayer_plan(model, inputs, ["layers.0#1"]))
    plan = _sublayer_plan(model, inputs, ["layers.1#0", "layers.2#1"])
    pruned = rp.apply_plan(model, plan)
    assert [(m.layer_idx) for m in pruned.modules() if isinstance(m, Mixer)] == [0, 0, 1, 2]  # unchanged
    assert rp.verify(model, pruned, plan, inputs) == 0.0
