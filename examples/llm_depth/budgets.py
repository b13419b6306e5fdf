"""Budgets: the model, its training and fine-tuning schedules, and how much is measured, per machine size.

The ``cpu`` budget was sized on the 2-core Xeon (with AMX) this example was written on, while other jobs loaded
it. There one torch thread beat two (threads waiting on each other behind the other load): a training step of
the 2.5M-parameter, 12-layer model on 16 x 128 tokens took 0.5 s with one thread and 0.8-0.9 s (spikes of
several seconds) with two; a decoded token 3.6 ms against 45-90 ms. bf16 autocast was no faster at this width,
so it is an option (``--bf16``), not the default. 2,400 steps (4.9M tokens, about 20 minutes), 11 fine-tunings
of 50 steps (about 3 minutes: pruned models step faster), 22 held-out evaluations (1 s each), the scoring (5 s
at most per plan) and the decode timings (under a minute) make a run of about 25 minutes.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from .corpus import SEPARATOR, VOCAB_SIZE

__all__ = ["BUDGETS", "RESULTS", "ROOT", "RUNS", "Budget", "ModelSize", "Schedule", "build_model"]

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "llm_depth"  # one JSON record per measurement (committed)
RUNS = ROOT / "runs" / "llm_depth"  # checkpoints (git-ignored)


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """A ``LlamaConfig``'s shape: width, depth, heads, MLP width and the training sequence length."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    seq_len: int


@dataclasses.dataclass(frozen=True)
class Schedule:
    """AdamW with a linear warm-up and a cosine decay to ``min_lr_ratio * lr``; gradients clipped to ``clip``."""

    steps: int
    lr: float
    warmup: int
    batch_size: int
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    min_lr_ratio: float = 0.1
    clip: float = 1.0

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclasses.dataclass(frozen=True)
class Budget:
    name: str
    model: ModelSize
    schedule: Schedule  # training the dense model
    finetune: Schedule  # the short fine-tuning of every pruned model (and of the dense model, as a control)
    checkpoint_every: int  # training steps between checkpoints (and between loss lines in the history)
    eval_windows: int  # held-out windows of seq_len tokens for the perplexity
    calibration_batches: int  # batches of training windows the data-driven criteria score on
    calibration_batch_size: int
    prompt_tokens: int  # decode timing: prompt length, new tokens, timed runs per model
    new_tokens: int
    speed_repeats: int
    description: str
    seed: int = 0


BUDGETS = {
    "cpu": Budget(
        "cpu",
        ModelSize(hidden=128, layers=12, heads=4, intermediate=352, seq_len=128),
        Schedule(steps=2400, lr=2e-3, warmup=100, batch_size=16),
        Schedule(steps=50, lr=5e-4, warmup=5, batch_size=16),
        checkpoint_every=100,
        eval_windows=128,
        calibration_batches=4,
        calibration_batch_size=8,
        prompt_tokens=32,
        new_tokens=128,
        speed_repeats=7,
        description=(
            "a 2.5M-parameter, 12-layer Llama (width 128) trained for 2,400 AdamW steps of 16 x 128 byte tokens "
            "(4.9M tokens) on a 2-core CPU; fine-tuning: 50 steps at lr 5e-4; perplexity on 128 held-out windows "
            "of 128 tokens"
        ),
    ),
    "smoke": Budget(
        "smoke",
        ModelSize(hidden=32, layers=4, heads=2, intermediate=64, seq_len=32),
        Schedule(steps=4, lr=1e-3, warmup=1, batch_size=4),
        Schedule(steps=2, lr=1e-3, warmup=1, batch_size=4),
        checkpoint_every=2,
        eval_windows=8,
        calibration_batches=2,
        calibration_batch_size=2,
        prompt_tokens=8,
        new_tokens=8,
        speed_repeats=2,
        description="smoke test: a 4-layer, width-32 Llama, 4 training steps; checks the pipeline, not the numbers",
    ),
}


def build_model(size: ModelSize, seed: int) -> Any:
    """A freshly initialised ``LlamaForCausalLM`` of ``size`` over byte tokens (the seed decides the weights)."""
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        max_position_embeddings=4 * size.seq_len,
        bos_token_id=SEPARATOR,
        eos_token_id=SEPARATOR,
        pad_token_id=SEPARATOR,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config)
