"""The models the core must handle: expected blocks, exact removal, verify, original untouched."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

import residual_prune as rp
from residual_prune.models import resnet20, resnet32, resnet44, resnet56, resnet110
from residual_prune.surgery import Bypass
from tests.helpers import assert_same_state, state_snapshot

# (builder, input size, residual units, removable under policy="default")
MODELS = {
    "torchvision:resnet18": (lambda: torchvision.models.resnet18(), 32, 8, 5),
    "torchvision:resnet50": (lambda: torchvision.models.resnet50(), 32, 16, 12),
    "torchvision:resnext50_32x4d": (lambda: torchvision.models.resnext50_32x4d(), 32, 16, 12),
    "torchvision:wide_resnet50_2": (lambda: torchvision.models.wide_resnet50_2(), 32, 16, 12),
    "torchvision:mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(), 32, 10, 10),
    "torchvision:mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(), 32, 6, 6),
    "torchvision:efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(), 32, 9, 9),
    "torchvision:regnet_y_400mf": (lambda: torchvision.models.regnet_y_400mf(), 32, 16, 12),
    "torchvision:convnext_tiny": (lambda: torchvision.models.convnext_tiny(), 32, 18, 18),
    "torchvision:vit_b_16": (lambda: torchvision.models.vit_b_16(), 224, 12, 12),
    "torchvision:swin_t": (lambda: torchvision.models.swin_t(), 112, 12, 12),
    "timm:resnet50": (lambda: timm.create_model("resnet50"), 32, 16, 12),
    "timm:resnetv2_50": (lambda: timm.create_model("resnetv2_50"), 32, 16, 12),
    "timm:convnext_tiny": (lambda: timm.create_model("convnext_tiny"), 32, 18, 18),
    "timm:vit_small_patch16_224": (lambda: timm.create_model("vit_small_patch16_224"), 224, 12, 12),
    "timm:deit_tiny_patch16_224": (lambda: timm.create_model("deit_tiny_patch16_224"), 224, 12, 12),
    "timm:efficientnet_b0": (lambda: timm.create_model("efficientnet_b0"), 32, 9, 9),
    "cifar:resnet20": (resnet20, 32, 9, 7),
    "cifar:resnet32": (resnet32, 32, 15, 13),
    "cifar:resnet44": (resnet44, 32, 21, 19),
    "cifar:resnet56": (resnet56, 32, 27, 25),
    "cifar:resnet110": (resnet110, 32, 54, 52),
}


def _structure(model: torch.nn.Module) -> list[tuple[str, str]]:
    return [(name, type(m).__name__) for name, m in model.named_modules()]


@pytest.mark.parametrize("key", list(MODELS))
def test_model_prunes_exactly(key: str) -> None:
    build, size, units, removable = MODELS[key]
    torch.manual_seed(0)
    model = build()
    x = torch.randn(2, 3, size, size)
    blocks = rp.find_blocks(model, x)
    assert len(blocks) == units
    assert sum(b.removable for b in blocks) == removable
    for b in blocks:
        assert (b.reason is None) == b.removable
        assert model.get_submodule(b.name) is not None
        assert b.params == sum(p.numel() for p in model.get_submodule(b.name).parameters())
        if b.removable:
            assert b.input_shape == b.output_shape

    snapshot, structure, mode = state_snapshot(model), _structure(model), model.training
    plan = rp.plan_pruning(model, criterion="random", n=2, example_inputs=x, seed=3)
    pruned = rp.apply_plan(model, plan)
    assert_same_state(model, snapshot)
    assert _structure(model) == structure and model.training == mode

    removed_params = sum(b.params for b in blocks if b.name in plan.removed)
    assert removed_params > 0
    assert sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for p in model.parameters()) - removed_params
    names = {n for n, _ in pruned.named_modules()}
    assert all(r not in names or isinstance(pruned.get_submodule(r), Bypass) for r in plan.removed)
    assert rp.verify(model, pruned, plan, x) <= 1e-3

    pruned.train()
    out = pruned(x)
    out = out if isinstance(out, torch.Tensor) else out[0]
    out.float().sum().backward()
    grads = [p.grad for p in pruned.parameters() if p.requires_grad]
    assert grads and all(g is None or torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_vgg_is_valid_input_but_not_prunable() -> None:
    model = torchvision.models.vgg11()
    x = torch.randn(1, 3, 32, 32)
    assert rp.find_blocks(model, x) == []
    with pytest.raises(rp.NoRemovableBlocksError, match="no residual connection"):
        rp.prune_layers(model, criterion="l1", n=1, example_inputs=x)


def test_alexnet_is_valid_input_but_not_prunable() -> None:
    model = torchvision.models.alexnet()
    x = torch.randn(1, 3, 64, 64)
    assert rp.find_blocks(model, x) == []
    with pytest.raises(rp.NoRemovableBlocksError):
        rp.plan_pruning(model, criterion="random", n=1, example_inputs=x)


@pytest.mark.parametrize(
    "build, default, paper",
    [(resnet32, 13, 9), (resnet56, 25, 21)],
)
def test_paper_policy_protects_blocks_next_to_downsampling(build, default: int, paper: int) -> None:
    model = build()
    x = torch.randn(1, 3, 32, 32)
    blocks = {b.name: b for b in rp.find_blocks(model, x, policy="paper")}
    assert sum(b.removable for b in rp.find_blocks(model, x)) == default
    assert sum(b.removable for b in blocks.values()) == paper
    n = len(model.layer1)
    for name in (f"layer1.{n - 1}", "layer2.1", f"layer2.{n - 1}", "layer3.1"):
        assert not blocks[name].removable and "paper" in blocks[name].reason
    assert blocks["layer1.0"].removable and blocks[f"layer3.{n - 1}"].removable
    assert "downsampling" in blocks["layer2.0"].reason


def test_paper_policy_on_stage_transition_layers() -> None:
    """ConvNeXt downsamples between stages with separate layers: the neighbours are protected."""
    model = torchvision.models.convnext_tiny()
    blocks = {b.name: b for b in rp.find_blocks(model, torch.randn(1, 3, 64, 64), policy="paper")}
    assert not blocks["features.1.2"].removable and not blocks["features.3.0"].removable
    assert blocks["features.1.0"].removable and blocks["features.5.4"].removable
    assert sum(b.removable for b in blocks.values()) == 18 - 6


def _tiny_transformers() -> dict[str, tuple]:
    """Hugging Face models of each kind at tiny sizes (random init): (model, inputs, units, removable)."""
    import transformers as hf

    ids = {"input_ids": torch.randint(0, 100, (1, 8)), "use_cache": False}
    text = {"vocab_size": 100, "num_attention_heads": 4, "intermediate_size": 64}
    return {
        "llama": (
            hf.LlamaForCausalLM(hf.LlamaConfig(hidden_size=32, num_hidden_layers=3, num_key_value_heads=2, **text)),
            ids,
            3,
            3,
        ),
        "gpt2": (
            hf.GPT2LMHeadModel(
                hf.GPT2Config(vocab_size=100, n_embd=32, n_layer=3, n_head=4, bos_token_id=0, eos_token_id=0)
            ),
            ids,
            3,
            3,
        ),
        "bert (post-norm)": (
            hf.BertForMaskedLM(hf.BertConfig(hidden_size=32, num_hidden_layers=3, **text)),
            {"input_ids": ids["input_ids"], "attention_mask": torch.ones(1, 8, dtype=torch.long)},
            6,  # per layer: the layer and its attention, which returns (output, weights nobody reads)
            6,
        ),
        "vit": (
            hf.ViTForImageClassification(
                hf.ViTConfig(
                    hidden_size=32,
                    num_hidden_layers=3,
                    image_size=32,
                    patch_size=8,
                    **{k: v for k, v in text.items() if k != "vocab_size"},
                )
            ),
            {"pixel_values": torch.randn(1, 3, 32, 32)},
            3,
            3,
        ),
    }


@pytest.mark.parametrize("key", ["llama", "gpt2", "bert (post-norm)", "vit"])
def test_hugging_face_model_prunes_exactly_with_keyword_inputs(key: str) -> None:
    torch.manual_seed(0)
    model, inputs, units, removable = _tiny_transformers()[key]
    model.eval()
    before = state_snapshot(model)
    blocks = rp.find_blocks(model, inputs)
    assert {b.frontend for b in blocks} == {"export"}
    assert (len(blocks), sum(b.removable for b in blocks)) == (units, removable), [(b.name, b.reason) for b in blocks]
    plan = rp.plan_pruning(model, criterion="l1", n=2, example_inputs=inputs)
    pruned = rp.apply_plan(model, plan)
    assert rp.verify(model, pruned, plan, inputs) == 0.0
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    reloaded = rp.apply_plan(model, rp.PruningPlan.from_dict(plan.to_dict()))  # replays on zeros of the inputs
    assert_same_state(model, before)
    with torch.no_grad():
        assert torch.equal(pruned(**inputs)[0], reloaded(**inputs)[0])
