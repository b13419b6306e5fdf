"""The ``residual-prune`` command line: analyze a model, prune it, list the criteria, run the demo.

Results go to stdout, progress and warnings to stderr. User errors (bad arguments, a model
factory that fails, an ``--out`` that cannot be written, library errors) are printed as
``error: <message>`` with exit code 2, without a traceback; ``--out`` is checked before any work.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__, huggingface, models
from .analysis import POLICIES, ResidualBlock, find_blocks, report
from .api import plan_pruning
from .capture import FRONTENDS, count_flops
from .criteria import CriterionInfo, accepted_options, get_criterion_info, list_criteria
from .data import (
    DATA_ENV_VAR,
    cifar10_calibration,
    image_folder_batches,
    synthetic_batches,
)
from .errors import (
    DataError,
    FlopCountWarning,
    InvalidArgumentError,
    MissingDataError,
    ResidualPruneError,
    TraceError,
)
from .granularity import GRANULARITIES
from .inputs import ModelInputs
from .modes import eval_mode
from .plan import PruningPlan
from .plan_check import check_plan
from .reporting import blocks_table, format_count, format_table, summary_table
from .surgery import apply_checked
from .verify import verify

__all__ = ["BuiltModel", "build_model", "main"]

CIFAR_ARCHS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
MODEL_SYNTAX = (
    "torchvision:NAME (e.g. torchvision:resnet50), timm:NAME (e.g. timm:resnet18), "
    f"cifar:{'|'.join(CIFAR_ARCHS)}, hf:DIR_OR_NAME (a Hugging Face transformers model: a save_pretrained "
    "directory, or a hub name when online), or package.module:factory (a function returning an nn.Module)"
)
_PROBE_SAMPLES = 4


@dataclasses.dataclass
class BuiltModel:
    """A model built from a MODEL spec, with what the commands need to know about it."""

    module: nn.Module
    spec: str
    family: str  # "cifar", "torchvision", "timm" or "python"
    input_size: tuple[int, ...]
    imports: str  # Python that rebuilds the architecture: ``imports`` then ``code``
    code: str


def _size(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def _step(message: str) -> None:
    print(f"{message}...", file=sys.stderr, flush=True)


def _weights_error(spec: str, exc: Exception) -> ResidualPruneError:
    return ResidualPruneError(
        f"could not get the pretrained weights of {spec} ({type(exc).__name__}: {exc}); without internet, "
        "drop --pretrained and pass --checkpoint PATH (a state_dict saved with torch.save)"
    )


def _torchvision_model(name: str, pretrained: bool) -> nn.Module:
    import torchvision

    if name not in torchvision.models.list_models():
        raise InvalidArgumentError(f"torchvision has no model {name!r}; see torchvision.models.list_models()")
    try:
        return torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None)
    except Exception as exc:  # only the weights download can fail here
        if not pretrained:
            raise
        raise _weights_error(f"torchvision:{name}", exc) from exc


def _timm_model(name: str, pretrained: bool) -> nn.Module:
    import timm

    if not timm.is_model(name):
        similar = ", ".join(timm.list_models(f"*{name}*")[:8]) or "see timm.list_models()"
        raise InvalidArgumentError(f"timm has no model {name!r}; similar names: {similar}")
    try:
        return timm.create_model(name, pretrained=pretrained)
    except Exception as exc:  # only the weights download can fail here
        if not pretrained:
            raise
        raise _weights_error(f"timm:{name}", exc) from exc


_FACTORY_CONTRACT = "the factory must be callable with no arguments and return an nn.Module"


def _python_model(module_name: str, factory: str) -> nn.Module:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidArgumentError(f"cannot import {module_name!r} ({exc}); MODEL must be {MODEL_SYNTAX}") from exc
    except Exception as exc:  # the module itself raised while being imported
        raise InvalidArgumentError(
            f"importing {module_name!r} failed ({type(exc).__name__}: {exc}); fix that module"
        ) from exc
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise InvalidArgumentError(f"{module_name} has no function {factory!r}; MODEL must be {MODEL_SYNTAX}")
    try:
        model = fn()
    except Exception as exc:  # needs arguments, or fails while building
        raise InvalidArgumentError(
            f"{module_name}:{factory}() failed ({type(exc).__name__}: {exc}); {_FACTORY_CONTRACT}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(
            f"{module_name}:{factory}() returned a {type(model).__name__}, not an nn.Module; {_FACTORY_CONTRACT}"
        )
    return model


def build_model(spec: str, *, pretrained: bool = False, input_size: Sequence[int] | None = None) -> BuiltModel:
    """Build the model named by ``spec`` (see ``MODEL_SYNTAX``) and find its default input size."""
    family, sep, name = spec.partition(":")
    if not sep or not family or not name:
        raise InvalidArgumentError(f"bad MODEL {spec!r}; MODEL must be {MODEL_SYNTAX}")
    if family == "cifar":
        if name not in CIFAR_ARCHS:
            raise InvalidArgumentError(f"unknown CIFAR model {name!r}; choose one of {', '.join(CIFAR_ARCHS)}")
        if pretrained:
            raise InvalidArgumentError("the CIFAR ResNets have no pretrained weights; pass --checkpoint PATH instead")
        built = BuiltModel(
            getattr(models, name)(),
            spec,
            "cifar",
            (3, 32, 32),
            "import residual_prune.models",
            f"residual_prune.models.{name}()",
        )
    elif family == "torchvision":
        side = 299 if name == "inception_v3" else 224
        built = BuiltModel(
            _torchvision_model(name, pretrained),
            spec,
            "torchvision",
            (3, side, side),
            "import torchvision",
            f"torchvision.models.get_model({name!r}, weights=None)",
        )
    elif family == "timm":
        module = _timm_model(name, pretrained)
        size = tuple((getattr(module, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224)))
        built = BuiltModel(module, spec, "timm", size, "import timm", f"timm.create_model({name!r})")
    else:
        if pretrained:
            raise InvalidArgumentError("--pretrained works with torchvision: and timm: models only")
        built = BuiltModel(
            _python_model(family, name), spec, "python", (3, 224, 224), f"import {family}", f"{family}.{name}()"
        )
    if input_size is not None:
        if len(input_size) != 3 or any(s < 1 for s in input_size):
            raise InvalidArgumentError(f"--input-size takes three positive integers C H W, got {list(input_size)}")
        built.input_size = tuple(input_size)
    return built


def _load_checkpoint(model: nn.Module, path: str) -> None:
    if not Path(path).is_file():
        raise InvalidArgumentError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # unpickling refused, truncated zip, not a torch file
        raise InvalidArgumentError(
            f"cannot load checkpoint {path} ({type(exc).__name__}: {exc}); it must be a state_dict saved with "
            "torch.save(model.state_dict(), path)"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a common training wrapper
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InvalidArgumentError(f"checkpoint {path} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InvalidArgumentError(f"checkpoint {path} does not fit the model: {exc}") from exc


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), eval_mode(model):
        out = model(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise InvalidArgumentError(
            "--data synthetic needs a classifier returning logits (batch, classes); pass --data DIR instead"
        )
    return out.shape[1]


def _synthetic(
    shape: Sequence[int], num_classes: int, batch_size: int, num_batches: int, seed: int
) -> tuple[list, str]:
    batches = synthetic_batches(shape, num_classes, batch_size=batch_size, num_batches=num_batches, seed=seed)
    return batches, (
        f"SYNTHETIC random labelled data ({num_batches} batch{'es' if num_batches != 1 else ''} of {batch_size}, "
        "seeded noise): the scores rank blocks on noise, not on real images"
    )


def _calibration(
    args: argparse.Namespace, built: BuiltModel, info: CriterionInfo
) -> tuple[list | None, torch.Tensor, str]:
    """Calibration batches (None for data-free criteria), probe inputs and a description of the data."""
    shape = built.input_size
    if not info.requires_data:
        probe = torch.randn(_PROBE_SAMPLES, *shape, generator=torch.Generator().manual_seed(args.seed))
        return None, probe, f"none (criterion {info.name!r} is data-free)"
    _step(f"loading {args.batch_size * args.num_batches} calibration images")
    if args.data == "synthetic":
        x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(args.seed))
        classes = _num_classes(built.module, x)
        batches, description = _synthetic(shape, classes, args.batch_size, args.num_batches, args.seed)
    elif built.family == "cifar":
        try:
            batches, description = cifar10_calibration(
                args.data, batch_size=args.batch_size, num_batches=args.num_batches, seed=args.seed
            )
        except DataError as exc:
            raise DataError(f"{exc}; or pass --data synthetic to score on random data") from exc
    elif args.data is None:
        raise MissingDataError(
            f"criterion {info.name!r} needs labelled images: pass --data DIR (an ImageFolder, DIR/CLASS/IMAGE.jpg, "
            "with the model's classes) or --data synthetic, or choose a data-free criterion (synflow, l1, random)"
        )
    else:
        _, height, width = shape  # an image model's C H W
        batches, description = image_folder_batches(
            args.data, (height, width), batch_size=args.batch_size, num_batches=args.num_batches, seed=args.seed
        )
    return batches, batches[0][0][:_PROBE_SAMPLES], description


def _stage(block: ResidualBlock) -> str:
    """The parent of a block, or the unit of a sub-layer (``blocks.3#1`` -> ``blocks.3``)."""
    return block.stage or "-"


def _ranks(plan: PruningPlan) -> dict[str, int]:
    order = sorted(plan.scores, key=lambda name: plan.scores[name])
    return {name: i + 1 for i, name in enumerate(order)}


def _total_flops(model: nn.Module, x: Any) -> int | None:
    """The model's FLOPs on ``x``, or None (with a warning) where they cannot be counted."""
    try:
        return count_flops(model, x)
    except TraceError as exc:
        warnings.warn(f"could not count the FLOPs of {type(model).__name__}: {exc}", FlopCountWarning, stacklevel=2)
        return None


def _prune_and_report(
    model: nn.Module, plan: PruningPlan, probe: Any, flops_inputs: Any
) -> tuple[nn.Module, dict[str, ResidualBlock]]:
    """Apply the plan and verify it on ``probe``; print the before/after table (FLOPs on ``flops_inputs``) and
    the removed blocks. Returns the pruned model and the scored units by name."""
    _step(f"removing {len(plan.removed)} blocks and verifying the result")
    checked = check_plan(model, plan)  # as apply_plan does; its analysis also describes the units
    pruned = apply_checked(model, checked)
    blocks = {b.name: b for b in report(model, checked.analysis, plan.granularity)}
    error = verify(model, pruned, plan, probe)
    _step("counting FLOPs before and after")
    flops_before, flops_after = (_total_flops(m, flops_inputs) for m in (model, pruned))
    params_before, params_after = (sum(p.numel() for p in m.parameters()) for m in (model, pruned))
    removable = len(plan.scores)
    print()
    print(
        summary_table(
            [
                ("params", params_before, params_after),
                ("FLOPs", flops_before, flops_after),
                ("removable residual blocks", removable, removable - len(plan.removed)),
            ]
        )
    )
    ranks = _ranks(plan)
    rows = [
        [name, _stage(blocks[name]), f"{plan.scores[name]:.4g}", f"{ranks[name]}/{removable}"] for name in plan.removed
    ]
    print(f"\nremoved blocks ({plan.criterion} score, rank 1 = least important):")
    print(format_table(["block", "stage", "score", "rank"], rows, right=(2, 3)))
    print(
        f"\nverified: the pruned model equals the original with the removed blocks as identities "
        f"(max abs difference {error:.3g} on inputs {ModelInputs.of(probe).describe()})"
    )
    return pruned, blocks


def _analyzed_model(args: argparse.Namespace) -> tuple[nn.Module, Any, str]:
    """The model ``analyze`` shows, its example inputs and how to describe them."""
    if args.model.startswith("hf:"):
        hf = huggingface.load(args.model[3:])
        inputs = hf.example_inputs(args.seq_len)
        return hf.module, inputs, ModelInputs.of(inputs).describe()
    built = build_model(args.model, input_size=args.input_size)
    x = torch.randn(1, *built.input_size, generator=torch.Generator().manual_seed(0))
    return built.module, x, _size(built.input_size)


def _analyze(args: argparse.Namespace) -> int:
    model, x, described = _analyzed_model(args)
    _step(f"tracing {args.model} with input {described}")
    blocks = find_blocks(model, x, policy=args.policy, granularity=args.granularity, frontend=args.frontend)
    total = _total_flops(model, x)
    params = sum(p.numel() for p in model.parameters())
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "class": type(model).__name__,
                    **({"input_size": list(x.shape[1:])} if isinstance(x, torch.Tensor) else {}),
                    "inputs": ModelInputs.of(x).to_json(),
                    "policy": args.policy,
                    "params": params,
                    "flops": total,
                    "blocks": [b.to_dict() for b in blocks],
                },
                indent=2,
            )
        )
        return 0
    print(blocks_table(blocks, total))
    removable = sum(b.removable for b in blocks)
    print(
        f"\n{args.model} ({type(model).__name__}, input {described}, "
        f"policy {args.policy}): {len(blocks)} residual units, {removable} removable; "
        f"{format_count(params)} params, {format_count(total)} FLOPs"
    )
    return 0


def _output_dir(text: str) -> Path:
    """The ``--out`` directory, checked before any work: it must be a directory we can create and write to.

    Nothing is created here: the nearest existing folder on the path must be a writable directory.
    """
    if not text.strip():
        raise InvalidArgumentError(
            "--out is empty; pass the directory for plan.json and pruned_state_dict.pt, e.g. --out runs/r20"
        )
    out = Path(text).expanduser()
    existing = out
    try:
        existing = next(p for p in (out, *out.parents) if p.exists())
        if not existing.is_dir():
            where = "is" if existing == out else f"is under {existing}, which is"
            raise InvalidArgumentError(f"--out {text} {where} a file, not a directory; pass a directory path")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot write to --out {text}: no file can be created in {existing} ({exc.strerror or exc}); "
            "pass a directory you can write to"
        ) from exc
    return out


def _save_results(out: Path, plan: PruningPlan, pruned: nn.Module) -> tuple[Path, Path]:
    try:
        out.mkdir(parents=True, exist_ok=True)
        plan_path = plan.save(out / "plan.json")
        state_path = out / "pruned_state_dict.pt"
        torch.save(pruned.state_dict(), state_path)
    except OSError as exc:  # checked up front; a full disk or a concurrent change can still fail
        raise ResidualPruneError(
            f"could not write the results to {out} ({exc}); free some space or pick another --out"
        ) from exc
    return plan_path, state_path


def _hf_calibration(args: argparse.Namespace, hf: huggingface.HFModel, info: CriterionInfo) -> tuple[list | None, str]:
    if not info.requires_data:
        return None, f"none (criterion {info.name!r} is data-free)"
    if args.data is None:
        raise MissingDataError(
            f"criterion {info.name!r} needs calibration data: pass --data FILE.txt (text models) or --data DIR "
            "(an ImageFolder, image models), or choose a data-free criterion (random, l1)"
        )
    if hf.takes_pixels:
        height, width = hf.example_inputs(1)["pixel_values"].shape[-2:]
        images, description = image_folder_batches(
            args.data, (height, width), batch_size=args.batch_size, num_batches=args.num_batches, seed=args.seed
        )
        return huggingface.image_batches(images), description
    texts = huggingface.text_batches(
        args.data, hf, seq_len=args.seq_len, batch_size=args.batch_size, num_batches=args.num_batches
    )
    return texts, f"{args.data}: {len(texts)} batches of {args.batch_size} x {args.seq_len} tokens"


def _scored_plan(
    args: argparse.Namespace, info: CriterionInfo, model: nn.Module, batches: list | None, example_inputs: Any
) -> PruningPlan:
    """Score the removable blocks with the command's criterion and options, and plan their removal."""
    candidates = {"seed": args.seed, **({"num_batches": len(batches)} if batches else {})}
    options = accepted_options(info, candidates)  # plugins are not sent options they lack
    _step(f"scoring the removable blocks with {args.criterion}")
    return plan_pruning(
        model,
        criterion=args.criterion,
        n=args.n,
        ratio=args.ratio,
        data=batches,
        example_inputs=example_inputs,
        policy=args.policy,
        granularity=args.granularity,
        frontend=args.frontend,
        **options,
    )


def _prune_hf(args: argparse.Namespace, out: Path, info: CriterionInfo) -> int:
    hf = huggingface.load(args.model[3:])
    batches, description = _hf_calibration(args, hf, info)
    inputs = hf.example_inputs(args.seq_len)
    print(f"model: {args.model} ({type(hf.module).__name__}, inputs {ModelInputs.of(inputs).describe()})")
    print(f"calibration data: {description}")
    plan = _scored_plan(args, info, hf.module, batches, inputs)
    pruned, _ = _prune_and_report(hf.module, plan, inputs, inputs)
    # a config cannot describe a layer without its attention or MLP: sub-layer plans are saved with the dense model
    sublayers = plan.granularity == "sublayer"
    try:
        out.mkdir(parents=True, exist_ok=True)
        huggingface.save(out, hf.module if sublayers else pruned, hf)
        plan_path = plan.save(out / "plan.json")
    except OSError as exc:
        raise ResidualPruneError(f"could not write the results to {out} ({exc}); pick another --out") from exc
    cls = type(pruned).__name__
    load = f"    from transformers import {cls}\n    model = {cls}.from_pretrained({str(out)!r})"
    if not sublayers:
        print(f"\nwrote the pruned model to {out} (and {plan_path.name}); to load it:\n{load}")
        return 0
    print(
        f"\nwrote the dense model and {plan_path.name} to {out} (save_pretrained cannot describe layers without "
        f"their attention or MLP); to load the pruned model:\n    import residual_prune\n{load}\n"
        f"    model = residual_prune.apply_plan(model, residual_prune.PruningPlan.load({str(plan_path)!r}))"
    )
    return 0


def _prune(args: argparse.Namespace) -> int:
    out = _output_dir(args.out)
    info = get_criterion_info(args.criterion)
    torch.manual_seed(args.seed)
    if args.model.startswith("hf:"):
        return _prune_hf(args, out, info)
    built = build_model(args.model, pretrained=args.pretrained, input_size=args.input_size)
    if args.checkpoint:
        _load_checkpoint(built.module, args.checkpoint)
    batches, probe, description = _calibration(args, built, info)
    print(f"model: {args.model} ({type(built.module).__name__}, input {_size(built.input_size)})")
    print(f"calibration data: {description}")
    plan = _scored_plan(args, info, built.module, batches, probe[:1])
    pruned, _ = _prune_and_report(built.module, plan, probe, probe[:1])
    plan_path, state_path = _save_results(out, plan, pruned)
    print(f"\nwrote {plan_path} and {state_path}; to load the pruned model:")
    print(
        f"    import torch, residual_prune\n    {built.imports}\n    model = {built.code}\n"
        f"    plan = residual_prune.PruningPlan.load({str(plan_path)!r})\n"
        f"    pruned = residual_prune.apply_plan(model, plan)\n"
        f"    pruned.load_state_dict(torch.load({str(state_path)!r}, weights_only=True))"
    )
    return 0


def _criteria(args: argparse.Namespace) -> int:
    rows = []
    for name in list_criteria():
        info = get_criterion_info(name)
        doc = (inspect.getdoc(info.fn) or "").split("\n", 1)[0].replace("``", "")
        rows.append(
            [
                name,
                info.source,
                "yes" if info.requires_data else "no",
                "yes" if info.gradient_based else "no",
                doc if len(doc) <= 60 else doc[:57] + "...",
            ]
        )
    print(format_table(["name", "source", "needs data", "gradients", "description"], rows))
    return 0


def _demo_data(args: argparse.Namespace) -> tuple[list, str]:
    try:
        return cifar10_calibration(args.data, batch_size=args.batch_size, num_batches=args.num_batches, seed=0)
    except DataError as exc:
        if args.data is not None or os.environ.get(DATA_ENV_VAR):
            raise
        print(
            f"WARNING: {exc}.\nWARNING: using a SYNTHETIC calibration batch instead; its scores rank the "
            "blocks on random noise, not on CIFAR-10 images.",
            file=sys.stderr,
        )
        return _synthetic((3, 32, 32), 10, args.batch_size, args.num_batches, 0)


def _stage_table(plan: PruningPlan, blocks: dict[str, ResidualBlock]) -> str:
    stages: dict[str, list[str]] = {}
    for name in plan.scores:
        stages.setdefault(_stage(blocks[name]), []).append(name)
    rows = []
    for stage, names in stages.items():
        values = [plan.scores[n] for n in names]
        removed = sum(n in plan.removed for n in names)
        rows.append(
            [stage, len(names), removed, f"{min(values):.4g}", f"{sum(values) / len(values):.4g}", f"{max(values):.4g}"]
        )
    return format_table(["stage", "scored", "removed", "min", "mean", "max"], rows, right=(1, 2, 3, 4, 5))


def _demo(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    print(
        f"residual-prune demo: remove {args.n} residual blocks of a CIFAR-10 {args.arch} at initialization "
        "with GraSP (Jordao et al., 'When Layers Play the Lottery, all Tickets Win at Initialization')"
    )
    torch.manual_seed(0)
    model = getattr(models, args.arch)()
    _step(f"loading {args.batch_size * args.num_batches} CIFAR-10 calibration images")
    batches, description = _demo_data(args)
    print(f"calibration data: {description}")
    _step(f"scoring the removable blocks of {args.arch} with GraSP")
    plan = plan_pruning(model, criterion="grasp", n=args.n, data=batches, num_batches=len(batches))
    probe = batches[0][0][:_PROBE_SAMPLES]
    _, blocks = _prune_and_report(model, plan, probe, probe[:1])
    print("\nGraSP scores per stage (higher = keep):")
    print(_stage_table(plan, blocks))
    print(f"\ndone in {time.perf_counter() - start:.1f} s")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help=MODEL_SYNTAX)
    parser.add_argument(
        "--input-size",
        nargs=3,
        type=_positive_int,
        metavar=("C", "H", "W"),
        help="input shape without the batch dimension (default: the model's: 3 32 32 for cifar:, "
        "timm's pretrained_cfg, 3 224 224 otherwise)",
    )
    parser.add_argument(
        "--seq-len",
        type=_positive_int,
        default=128,
        help="tokens per sequence of hf: text models (example inputs and calibration) (default: %(default)s)",
    )
    parser.add_argument(
        "--granularity",
        choices=GRANULARITIES,
        default="block",
        help="'sublayer' treats each residual branch on its own, e.g. a transformer block's "
        "attention and MLP (default: %(default)s)",
    )
    parser.add_argument(
        "--policy",
        choices=POLICIES,
        default="default",
        help="'paper' also keeps the blocks next to every downsampling (default: %(default)s)",
    )
    parser.add_argument(
        "--frontend",
        choices=FRONTENDS,
        default="auto",
        help="how the model's graph is captured: torch.fx, torch.export, one recorded run ('eager'), or 'auto' "
        "(torch.fx where it applies, then torch.export, then eager) (default: %(default)s)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="residual-prune", description="Prune whole residual blocks (layers).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    analyze = sub.add_parser("analyze", help="list the residual blocks of a model and which can be removed")
    _add_model_arguments(analyze)
    analyze.add_argument("--json", action="store_true", help="print the blocks as JSON")
    analyze.set_defaults(func=_analyze)

    prune = sub.add_parser("prune", help="score the blocks, remove the least important, save plan and weights")
    _add_model_arguments(prune)
    prune.add_argument("--criterion", required=True, help="a name from `residual-prune criteria`")
    count = prune.add_mutually_exclusive_group(required=True)
    count.add_argument("--n", type=int, help="number of blocks to remove")
    count.add_argument("--ratio", type=float, help="fraction of the removable blocks to remove")
    prune.add_argument(
        "--data",
        help="calibration data: a CIFAR-10 .npz or torchvision root (cifar: models), a UTF-8 text file "
        "(hf: text models), an ImageFolder directory (other models), or 'synthetic'",
    )
    prune.add_argument("--batch-size", type=_positive_int, default=64, help="default: %(default)s")
    prune.add_argument("--num-batches", type=_positive_int, default=1, help="default: %(default)s")
    prune.add_argument("--seed", type=int, default=0, help="seed of the weights, data subset and random criterion")
    prune.add_argument("--pretrained", action="store_true", help="load pretrained weights (downloads them)")
    prune.add_argument("--checkpoint", help="a state_dict to load into the model before scoring")
    prune.add_argument(
        "--out",
        required=True,
        help="directory for plan.json and pruned_state_dict.pt, or for hf: models the save_pretrained files "
        "(created if missing; checked before any work)",
    )
    prune.set_defaults(func=_prune)

    criteria = sub.add_parser("criteria", help="list the built-in and plugin criteria")
    criteria.set_defaults(func=_criteria)

    demo = sub.add_parser("demo", help="prune a CIFAR-10 ResNet-56 at initialization with GraSP, end to end")
    demo.add_argument(
        "--data",
        help=f"CIFAR-10 .npz or torchvision root (default: ${DATA_ENV_VAR}, then "
        "~/.cache/residual_prune/cifar10, downloaded when online)",
    )
    demo.add_argument("--n", type=int, default=4, help="blocks to remove (default: %(default)s)")
    demo.add_argument("--num-batches", type=_positive_int, default=2, help="default: %(default)s")
    demo.add_argument("--batch-size", type=_positive_int, default=64, help="default: %(default)s")
    demo.add_argument("--arch", choices=CIFAR_ARCHS, default="resnet56", help="default: %(default)s")
    demo.set_defaults(func=_demo)
    return parser


@contextlib.contextmanager
def _readable_warnings() -> Iterator[None]:
    """Show warnings as one ``warning: ...`` line each; hide torch's jit deprecation notice (from fvcore)."""

    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*", category=FutureWarning)
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 2 error)."""
    args = _parser().parse_args(argv)
    try:
        with _readable_warnings():
            return args.func(args)
    except ResidualPruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
