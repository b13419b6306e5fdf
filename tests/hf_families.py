"""Tiny random Hugging Face models of the families the layer-stack and sub-layer tests cover, and their inputs."""

from __future__ import annotations

import torch
import transformers as hf

COMMON = {"num_hidden_layers": 6, "num_attention_heads": 4, "vocab_size": 100}
DECODER = {"hidden_size": 32, "intermediate_size": 64, "num_key_value_heads": 2, "max_position_embeddings": 64}
FAMILIES = {
    "llama": (lambda: hf.LlamaForCausalLM(hf.LlamaConfig(**DECODER, **COMMON)), hf.AutoModelForCausalLM),
    "qwen2": (  # sliding-window layers: the config's layer_types follows the kept layers
        lambda: hf.Qwen2ForCausalLM(
            hf.Qwen2Config(**DECODER, **COMMON, use_sliding_window=True, sliding_window=4, max_window_layers=3)
        ),
        hf.AutoModelForCausalLM,
    ),
    "mistral": (
        lambda: hf.MistralForCausalLM(hf.MistralConfig(**DECODER, **COMMON, sliding_window=4)),
        hf.AutoModelForCausalLM,
    ),
    "gpt2": (
        lambda: hf.GPT2LMHeadModel(hf.GPT2Config(n_embd=32, n_layer=6, n_head=4, vocab_size=100, n_positions=64)),
        hf.AutoModelForCausalLM,
    ),
    "bert": (lambda: hf.BertModel(hf.BertConfig(hidden_size=32, intermediate_size=37, **COMMON)), hf.AutoModel),
    "vit": (
        lambda: hf.ViTForImageClassification(
            hf.ViTConfig(
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=6,
                num_attention_heads=4,
                image_size=32,
                patch_size=8,
            )
        ),
        hf.AutoModelForImageClassification,
    ),
}


def hf_inputs(family: str, batch: int = 2) -> dict[str, torch.Tensor]:
    """Example inputs of a family's model: images for ViT, token ids otherwise."""
    if family == "vit":
        return {"pixel_values": torch.randn(batch, 3, 32, 32)}
    return {"input_ids": torch.randint(0, 100, (batch, 8))}
