"""Fresh-process runs for the ``capture`` section of :mod:`benchmarks.speed`.

Each :class:`Job` builds one model (optionally on the ``meta`` device) in a new Python process,
runs the steps it names (``find_blocks``, ``plan_pruning(criterion="random")``, ``apply_plan``)
once, cold, and reports their wall-clock times and the process's peak resident memory
(``ru_maxrss`` at its end, imports included). A job that runs past its timeout is stopped
and reported as such, so one slow capture cannot hold the machine:

    python -m benchmarks.capture '{"subject": "llama_tiny", "steps": ["find_blocks"]}' out.json
"""

from __future__ import annotations

import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
SEED = 0
TIMEOUT = 300  # seconds a job may run before it is stopped
STEPS = ("find_blocks", "plan_pruning", "apply_plan")


@dataclasses.dataclass(frozen=True)
class Subject:
    """A model measured in fresh processes: its label, how to build it and how it is called."""

    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[nn.Module], Any]


def _llama(**dims: Any) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**dims))


def _token_ids(model: nn.Module, length: int = 16) -> dict[str, Any]:
    return {"input_ids": torch.zeros(1, length, dtype=torch.long), "use_cache": False}


def _timm(name: str, **kwargs: Any) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False, **kwargs)


def _image(model: nn.Module, size: tuple[int, int, int] | None = None) -> torch.Tensor:
    """One random image of ``size``, by default the model's default input size (timm's data config)."""
    if size is None:
        import timm

        size = timm.data.resolve_model_data_config(model)["input_size"]
    return torch.randn(1, *size, generator=torch.Generator().manual_seed(SEED))


LLAMA_7B: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
}
LLAMA_TINY: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 256,
}
SUBJECTS = {
    "llama_7b": Subject("Llama, 7B-scale dimensions", partial(_llama, **LLAMA_7B), _token_ids),
    "llama_tiny": Subject("Llama, tiny dimensions", partial(_llama, **LLAMA_TINY), _token_ids),
    "deepseek_vit_412m": Subject("timm deepseek_vit_412m", partial(_timm, "deepseek_vit_412m"), _image),
    "deepseek_vit_tiny": Subject(
        "timm deepseek_vit_412m, tiny dimensions",
        partial(_timm, "deepseek_vit_412m", depth=2, embed_dim=64, num_heads=4, img_size=56),
        partial(_image, size=(3, 56, 56)),
    ),
}


@dataclasses.dataclass(frozen=True)
class Job:
    """What one fresh process does: build ``subject`` (on ``meta`` or with random weights) and run ``steps``."""

    subject: str
    steps: tuple[str, ...] = ("find_blocks",)
    frontend: str = "auto"
    meta: bool = False
    n: int = 1  # blocks to remove (plan_pruning)
    threads: int = 2


def peak_rss_bytes() -> int:
    """The peak resident set size of this process so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _shapes(inputs: Any) -> Any:
    """The shape of a tensor input, or of each tensor of a dict of keyword arguments."""
    if isinstance(inputs, dict):
        return {k: list(v.shape) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    return list(inputs.shape)


def measure(job: Job) -> dict[str, Any]:
    """Run ``job`` in this process: build time, each step's seconds, what the steps found, peak RSS."""
    subject = SUBJECTS[job.subject]
    import residual_prune as rp

    torch.set_num_threads(job.threads)
    result: dict[str, Any] = {"rss_after_imports": peak_rss_bytes()}
    start = time.perf_counter()
    with torch.device("meta") if job.meta else nullcontext():
        model = subject.build()
    result["build_seconds"] = time.perf_counter() - start
    result["params"] = sum(p.numel() for p in model.parameters())
    inputs = subject.inputs(model)
    result["input"] = _shapes(inputs)
    seconds, plan = {}, None
    for step in job.steps:
        start = time.perf_counter()
        if step == "find_blocks":
            blocks = rp.find_blocks(model, inputs, frontend=job.frontend)
            result.update(
                units=len(blocks),
                removable=sum(b.removable for b in blocks),
                frontend_used=blocks[0].frontend if blocks else None,
            )
        elif step == "plan_pruning":
            plan = rp.plan_pruning(
                model, criterion="random", n=job.n, example_inputs=inputs, frontend=job.frontend, seed=SEED
            )
            result.update(removed=plan.removed, frontend_used=plan.frontend)
        elif step == "apply_plan":
            if plan is None:
                raise ValueError("apply_plan needs plan_pruning before it in the job's steps")
            result["params_pruned"] = sum(p.numel() for p in rp.apply_plan(model, plan).parameters())
        else:
            raise ValueError(f"unknown step {step!r}; choose from {STEPS}")
        seconds[step] = time.perf_counter() - start
    result["seconds"] = seconds
    result["peak_rss"] = peak_rss_bytes()
    return result


def in_fresh_process(job: Job, timeout: float = TIMEOUT) -> dict[str, Any]:
    """:func:`measure` of ``job`` in a new Python process, stopped after ``timeout`` seconds.

    The record is the job plus :func:`measure`'s result, or ``timed_out: True``, or ``error``
    (the child's last line of stderr)."""
    record: dict[str, Any] = {**dataclasses.asdict(job), "timeout": timeout}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "benchmarks.capture", json.dumps(dataclasses.asdict(job)), str(out)]
        try:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {**record, "timed_out": True}
        if done.returncode != 0 or not out.exists():
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            return {**record, "error": lines[-1]}
        return {**record, **json.loads(out.read_text())}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(args[0])
    job = Job(**{**spec, "steps": tuple(spec.get("steps", Job.steps))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = measure(job)
    Path(args[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
