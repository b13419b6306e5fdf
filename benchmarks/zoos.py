"""Model zoos for the benchmarks: a registry (like torchvision's ``list_models``/``get_model``)
mapping each zoo name to the models it lists and to a builder.

A model is named by a *spec*, ``"ZOO:NAME"`` (``"timm:resnet18"``, ``"transformers:llama"``).
:func:`build` returns ``(model, example_inputs)``: a randomly initialised model in eval mode
(``torch.manual_seed(0)``, no downloads) and inputs in the form it is called with: a tensor
(``model(x)``), a tuple of positional arguments (``model(*args)``, e.g. ``([image],)`` for a
detection model or ``(frame1, frame2)`` for RAFT) or a dict of keyword arguments
(``model(**kwargs)``, as Hugging Face models are). :func:`call` makes that call;
:func:`output_tensors` flattens whatever comes back (tensors, tuples, lists, dicts,
``ModelOutput``) into its tensors.

timm is listed one model per family (module): its variant with the fewest parameters. The zoo
also gives a family's larger variants in increasing parameter count (``Zoo.variants``), from
which :mod:`benchmarks.coverage` picks a representative where the smallest has residual units
but every one carries downsampling (one block per stage).

    python -m benchmarks.zoos --list smp             # the specs of a zoo
    python -m benchmarks.zoos --time smp monai       # build + one forward of every model, timed
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import math
import signal
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

Inputs = Any  # a tensor, a tuple of positional arguments, or a dict of keyword arguments
Builder = Callable[[str], tuple[nn.Module, Inputs]]

SMALL = 64  # image side tried first; a model's own size when it refuses it
BATCH = 2  # images per batch: batch norm in train mode needs more than one value per channel


@dataclasses.dataclass(frozen=True)
class Zoo:
    """A source of models: ``models()`` lists their names, ``build(name)`` makes one."""

    name: str
    models: Callable[[], list[str]]
    build: Builder
    package: str  # the distribution the models come from, whose version the results depend on
    trains: bool = True  # False: the models need more than their inputs in train mode (detection targets)
    # the larger variants of a listed model's family, smallest first (None: the zoo lists no families)
    variants: Callable[[str], list[str]] | None = None


_ZOOS: dict[str, Zoo] = {}


def register_zoo(
    name: str,
    *,
    models: Callable[[], list[str]],
    package: str,
    trains: bool = True,
    variants: Callable[[str], list[str]] | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator: register ``build(name) -> (model, example_inputs)`` as zoo ``name`` listing ``models()``,
    whose models come from the distribution ``package``; ``variants(name)``, where the zoo lists one
    model per family, gives the larger variants of ``name``'s family in increasing size."""

    def register(build: Builder) -> Builder:
        if name in _ZOOS:
            raise ValueError(f"a zoo named {name!r} is already registered")
        if ":" in name or not name:
            raise ValueError(f"zoo name {name!r} must be non-empty without ':' (specs are ZOO:NAME)")
        _ZOOS[name] = Zoo(name, models, build, package, trains, variants)
        return build

    return register


def list_zoos() -> list[str]:
    """The registered zoo names, in registration order."""
    return list(_ZOOS)


def get_zoo(name: str) -> Zoo:
    """The zoo registered as ``name``; :class:`ValueError` naming the zoos if there is none."""
    try:
        return _ZOOS[name]
    except KeyError:
        raise ValueError(f"unknown zoo {name!r}; choose from {', '.join(_ZOOS)}") from None


def package_version(zoo: str) -> str:
    """``"<package> <version>"`` of the distribution zoo ``zoo``'s models come from (``not installed``)."""
    from importlib.metadata import PackageNotFoundError, version

    package = get_zoo(zoo).package
    try:
        return f"{package} {version(package)}"
    except PackageNotFoundError:
        return f"{package} not installed"


def split_spec(spec: str) -> tuple[str, str]:
    """``"ZOO:NAME"`` -> ``(zoo, name)``, the zoo checked to be registered."""
    zoo, sep, name = spec.partition(":")
    if not sep or not name:
        raise ValueError(f"model spec {spec!r} is not ZOO:NAME (e.g. timm:resnet18)")
    get_zoo(zoo)
    return zoo, name


def list_models(zoos: list[str] | None = None) -> list[str]:
    """The specs of every model of ``zoos`` (default: all registered zoos)."""
    return [f"{zoo}:{name}" for zoo in (zoos or list_zoos()) for name in get_zoo(zoo).models()]


def build(spec: str) -> tuple[nn.Module, Inputs]:
    """The model named ``spec``, randomly initialised (seed 0) in eval mode, and its example inputs."""
    zoo, name = split_spec(spec)
    torch.manual_seed(0)
    model, inputs = get_zoo(zoo).build(name)
    return model.eval(), inputs


def call(model: nn.Module, inputs: Inputs) -> Any:
    """``model(x)``, ``model(*args)`` or ``model(**kwargs)``, as the form of ``inputs`` says."""
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    raise TypeError(f"example inputs must be a tensor, a tuple or a dict, not {type(inputs).__name__}")


def output_tensors(output: Any) -> Iterator[torch.Tensor]:
    """Every tensor in ``output``, depth first: tuples, lists, dicts and ``ModelOutput`` are opened,
    anything else (a cache, ``None``, a number) is skipped."""
    if isinstance(output, torch.Tensor):
        yield output
    elif isinstance(output, Mapping):  # ModelOutput is an OrderedDict of its non-None fields
        for value in output.values():
            yield from output_tensors(value)
    elif isinstance(output, (tuple, list)):
        for value in output:
            yield from output_tensors(value)


def training_loss(output: Any) -> torch.Tensor:
    """The sum of every floating output tensor that depends on the parameters (a loss to call backward on)."""
    terms = [t.float().sum() for t in output_tensors(output) if t.is_floating_point() and t.requires_grad]
    if not terms:
        raise RuntimeError("no floating-point output depends on the parameters: nothing to back-propagate")
    return torch.stack(terms).sum()


def describe(inputs: Inputs) -> str:
    """The inputs' shapes, e.g. ``3x64x64`` (one batched tensor: per sample, as older records were),
    ``[3x128x128]``, ``2x3x64x64, 2x3x64x64`` or ``input_ids 2x8, use_cache False``."""

    def shape(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            return "x".join(map(str, value.shape)) or "scalar"
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(shape(v) for v in value) + "]"
        return repr(value)

    if isinstance(inputs, torch.Tensor):
        return "x".join(map(str, inputs.shape[1:]))
    if isinstance(inputs, Mapping):
        return ", ".join(f"{k} {shape(v)}" for k, v in inputs.items())
    return ", ".join(shape(v) for v in inputs)


def runs_on(model: nn.Module, inputs: Inputs) -> bool:
    """Whether ``model`` (put in eval mode) runs on ``inputs`` without raising."""
    try:
        with torch.no_grad():
            call(model.eval(), inputs)
    except Exception:
        return False
    return True


def first_accepted(model: nn.Module, candidates: list[Inputs]) -> Inputs:
    """The first of ``candidates`` (smallest first) that ``model`` runs on in eval mode; the last one
    is returned untried, so that a model refusing them all fails where its inputs are used."""
    return next((inputs for inputs in candidates[:-1] if runs_on(model, inputs)), candidates[-1])


def images(*sizes: tuple[int, ...], batch: int = BATCH) -> list[torch.Tensor]:
    """Random batches of the given per-sample shapes (candidates for :func:`first_accepted`)."""
    return [torch.randn(batch, *size) for size in sizes]


# ---------------------------------------------------------------------------------------------
# torchvision


def _torchvision_names(module_name: str) -> Callable[[], list[str]]:
    def names() -> list[str]:
        import importlib

        import torchvision

        return torchvision.models.list_models(module=importlib.import_module(module_name))

    return names


@register_zoo("torchvision", models=_torchvision_names("torchvision.models"), package="torchvision")
def _torchvision(name: str) -> tuple[nn.Module, Inputs]:
    import torchvision

    model = torchvision.models.get_model(name, weights=None).eval()
    native = (3, 299, 299) if name == "inception_v3" else (3, 224, 224)
    return model, first_accepted(model, images((3, SMALL, SMALL), native))


@register_zoo(
    "torchvision-detection",
    models=_torchvision_names("torchvision.models.detection"),
    package="torchvision",
    trains=False,
)
def _torchvision_detection(name: str) -> tuple[nn.Module, Inputs]:
    """A list of one 128x128 image; R-CNN, RetinaNet and FCOS also resize to 128 (not 800)."""
    import torchvision

    side = 128
    try:
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None, min_size=side, max_size=side)
    except TypeError:  # SSD has its own fixed size
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None)
    return model.eval(), ([torch.rand(3, side, side)],)


@register_zoo(
    "torchvision-segmentation", models=_torchvision_names("torchvision.models.segmentation"), package="torchvision"
)
def _torchvision_segmentation(name: str) -> tuple[nn.Module, Inputs]:
    import torchvision

    model = torchvision.models.get_model(name, weights=None, weights_backbone=None).eval()
    return model, images((3, SMALL, SMALL))[0]


@register_zoo("torchvision-video", models=_torchvision_names("torchvision.models.video"), package="torchvision")
def _torchvision_video(name: str) -> tuple[nn.Module, Inputs]:
    """4 frames of 64x64 where the model takes them; else its own 16x224x224 (MViT, S3D)."""
    import torchvision

    model = torchvision.models.get_model(name, weights=None).eval()
    return model, first_accepted(model, images((3, 4, SMALL, SMALL), (3, 16, 224, 224)))


@register_zoo("torchvision-flow", models=_torchvision_names("torchvision.models.optical_flow"), package="torchvision")
def _torchvision_flow(name: str) -> tuple[nn.Module, Inputs]:
    """Two 128x128 frames (RAFT's correlation pyramid needs feature maps of at least 16x16)."""
    import torchvision

    model = torchvision.models.get_model(name, weights=None).eval()
    return model, tuple(images((3, 128, 128), (3, 128, 128)))


# ---------------------------------------------------------------------------------------------
# timm: one model per family (module), the one with the fewest parameters; its larger variants, in
# increasing size, for the coverage sweep to find a representative where the smallest has no removable unit


@functools.cache  # forked sweep children inherit the counts the parent made while listing the zoo
def _meta_params(name: str) -> float:
    """Parameter count of a timm model built on the meta device (no memory, no init); inf if it cannot."""
    import timm

    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
    except Exception:
        return float("inf")
    return float(sum(p.numel() for p in model.parameters()))


def by_size(names: list[str]) -> list[str]:
    """``names`` in increasing parameter count (timm's ``test_*`` models excluded unless there is nothing
    else), ties by name."""
    candidates = [n for n in names if not n.startswith("test_")] or names
    return sorted(candidates, key=lambda n: (_meta_params(n), len(n), n))


def smallest(names: list[str]) -> str:
    """The variant with the fewest parameters (timm's ``test_*`` models excluded), ties by name."""
    return by_size(names)[0]


def _timm_family(name: str) -> list[str]:
    """Every model of the timm family (module) ``name`` belongs to, deprecated aliases left out."""
    import timm  # noqa: F401 - registers the models
    from timm.models._registry import _deprecated_models, _model_to_module, _module_to_models

    if name not in _model_to_module:
        raise ValueError(f"timm has no model {name!r}")
    return sorted(n for n in _module_to_models[_model_to_module[name]] if n not in _deprecated_models)


def _timm_larger_variants(name: str) -> list[str]:
    """The models of ``name``'s family that come after it in increasing parameter count (those that
    cannot be built on the meta device left out); only this family's models are counted."""
    ordered = [n for n in by_size(_timm_family(name)) if math.isfinite(_meta_params(n))]
    return ordered[ordered.index(name) + 1 :] if name in ordered else []


def _timm_names() -> list[str]:
    import timm  # noqa: F401 - registers the models
    from timm.models._registry import _module_to_models
    from tqdm import tqdm

    families = [(family, sorted(names)) for family, names in sorted(_module_to_models.items()) if names]
    bar = tqdm(families, desc="choosing the smallest model per timm family", unit="family", file=sys.stderr)
    return [smallest(names) for _, names in bar]


@register_zoo("timm", models=_timm_names, package="timm", variants=_timm_larger_variants)
def _timm(name: str) -> tuple[nn.Module, Inputs]:
    import timm

    model = timm.create_model(name, pretrained=False).eval()
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    native = tuple(cfg.get("input_size", (3, 224, 224)))
    if cfg.get("fixed_input_size", False) or native[1] <= SMALL:
        return model, images(native)[0]
    return model, first_accepted(model, images((native[0], SMALL, SMALL), native))


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers: one tiny model per architecture family


def _transformers_mappings() -> list[Mapping[str, Any]]:
    from transformers.models.auto import modeling_auto as auto

    return [
        auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
        auto.MODEL_MAPPING_NAMES,
    ]


def transformers_class(family: str) -> str | None:
    """The class built for ``family``: its causal LM, else masked LM, else image classifier, else base model."""
    for mapping in _transformers_mappings():
        if family in mapping:
            names = mapping[family]
            return names if isinstance(names, str) else names[0]
    return None


def _alnum(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def _transformers_names() -> list[str]:
    """Every family with a model class, one per class: families that share one (``gpt-sw3`` and
    ``gpt2``) are the same architecture, named by the family the class is named after."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    by_class: dict[str, list[str]] = {}
    for family in CONFIG_MAPPING_NAMES:
        cls = transformers_class(family)
        if cls is not None:
            by_class.setdefault(cls, []).append(family)

    def canonical(cls: str, families: list[str]) -> str:
        return min(families, key=lambda f: (not _alnum(cls).startswith(_alnum(f)), len(f), f))

    return sorted(canonical(cls, families) for cls, families in by_class.items())


LAYERS = 2
HIDDEN, HEADS, HEAD_DIM = 64, 4, 16
INTERMEDIATE = 64
VOCAB = 128
POSITIONS = 128
IMAGE, PATCH = 64, 8
EXPERTS, EXPERTS_PER_TOKEN = 4, 2
SEQUENCE = 8

_LAYER_COUNTS = (
    "num_hidden_layers",
    "num_layers",
    "n_layer",
    "n_layers",
    "encoder_layers",
    "decoder_layers",
    "num_encoder_layers",
    "num_decoder_layers",
    "depth",
)
_WIDTHS = ("hidden_size", "d_model", "n_embd", "embed_dim", "dim")
_HEADS = (
    "num_attention_heads",
    "n_head",
    "n_heads",
    "num_heads",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "attention_heads",
)
_KV_HEADS = ("num_key_value_heads", "n_kv_heads", "num_kv_heads")
_EXPERT_COUNTS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
_EXPERTS_PER_TOKEN = ("num_experts_per_tok", "num_experts_per_token", "moe_topk", "moe_k")
_POSITIONS = ("max_position_embeddings", "n_positions")
_NOT_WIDTHS = ("vocab", "image", "patch", "position", "layer", "head", "expert", "window", "group")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_config(value: Any) -> bool:
    from transformers import PreTrainedConfig

    return isinstance(value, PreTrainedConfig)


def _attributes(config: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(config).items() if not k.startswith("_")}


def _layer_overrides(attrs: dict[str, Any]) -> dict[str, Any]:
    """Layer counts cut to ``LAYERS`` (more where per-layer lists hold more kinds of layer, so that every
    kind is kept: attention next to linear attention), the per-layer lists cut alike, per-stage
    depths (``depths``) to at most ``LAYERS`` each; a count equal to a per-stage list's length counts stages."""
    stages = {len(v) for k, v in attrs.items() if k.endswith("depths") and isinstance(v, (list, tuple))}
    counts = {k: v for k, v in attrs.items() if k in _LAYER_COUNTS and _int(v) and v > LAYERS and v not in stages}
    per_layer = {
        k: v
        for k, v in attrs.items()
        if isinstance(v, (list, tuple)) and len(v) in counts.values() and not k.endswith(("depths", "sizes"))
    }
    keep = set(range(LAYERS))
    for values in per_layer.values():  # the first layer of each kind
        firsts = {repr(v): i for i, v in reversed(list(enumerate(values)))}
        keep |= set(firsts.values())
    kept = sorted(keep)
    out: dict[str, Any] = {k: len([i for i in kept if i < n]) for k, n in counts.items()}
    out.update({k: [v[i] for i in kept if i < len(v)] for k, v in per_layer.items()})
    for key, value in attrs.items():
        if key.endswith("depths") and isinstance(value, (list, tuple)) and all(_int(d) for d in value):
            out[key] = [min(d, LAYERS) for d in value]
    return out


def _head_dim_overrides(attrs: dict[str, Any]) -> dict[str, Any]:
    """Per-head sizes (``head_dim``, ``qk_rope_head_dim``, ``v_head_dim``, ``rotary_dim``...) divided by one
    factor, which keeps their sums and ratios (``qk_head_dim = qk_nope_head_dim + qk_rope_head_dim``)."""
    dims = {
        k: v
        for k, v in attrs.items()
        if _int(v) and v > 0 and (k.endswith("head_dim") or k in ("d_kv", "attention_head_size", "rotary_dim"))
    }
    if not dims:
        return {}
    reference = dims.get("head_dim", max(dims.values()))
    factor = max(1, reference // HEAD_DIM)
    if all(v % factor == 0 for v in dims.values()):
        return {k: v // factor for k, v in dims.items() if factor > 1}
    return {k: min(v, HEAD_DIM) for k, v in dims.items()}


def _sections(sections: list[int], total: int) -> list[int]:
    """``sections`` scaled to sum to ``total`` (largest remainders rounded up), none below 1."""
    whole = sum(sections)
    exact = [s * total / whole for s in sections]
    out = [max(1, int(e)) for e in exact]
    for i in sorted(range(len(out)), key=lambda i: int(exact[i]) - exact[i]):
        if sum(out) >= total:
            break
        out[i] += 1
    return out


def _rope_overrides(attrs: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Multimodal rotary sections (``mrope_section``) scaled with the per-head size they split."""
    rope = attrs.get("rope_parameters")
    key = "qk_rope_head_dim" if "qk_rope_head_dim" in attrs else "head_dim"
    if not isinstance(rope, dict) or key not in overrides or not _int(attrs.get(key)):
        return {}
    ratio = overrides[key] / attrs[key]

    def walk(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {k: walk(v) for k, v in value.items()}
        section = value.get("mrope_section")
        if isinstance(section, list) and section and all(_int(s) for s in section):
            out["mrope_section"] = _sections(section, max(len(section), round(sum(section) * ratio)))
        return out

    new = walk(rope)
    return {"rope_parameters": new} if new != rope else {}


def _width_overrides(attrs: dict[str, Any]) -> dict[str, Any]:
    """Model widths to ``HIDDEN`` with ``HEADS`` heads, where the head counts are scalars (per-stage head
    lists tie the widths of hierarchical models: those keep both); sizes equal to the width follow it."""
    heads = [k for k in _HEADS if k in attrs and attrs[k] is not None]
    if not all(_int(attrs[k]) for k in heads):
        return {}
    widths = {k: attrs[k] for k in _WIDTHS if _int(attrs.get(k)) and attrs[k] > HIDDEN}
    out: dict[str, Any] = {k: HIDDEN for k in widths}
    for key, value in attrs.items():  # embedding_size == hidden_size, ...
        tied = _int(value) and value in widths.values() and ("size" in key or "dim" in key)
        if tied and not any(word in key for word in _NOT_WIDTHS):
            out[key] = HIDDEN
    out.update({k: HEADS for k in heads if attrs[k] > HEADS})
    for key in _KV_HEADS:
        if key in attrs and heads:
            value, first = attrs[key], attrs[heads[0]]
            out[key] = HEADS if value is None or value == first else min(value, HEADS // 2)
    if "head_dim" in attrs and attrs["head_dim"] is None:
        out["head_dim"] = HEAD_DIM
    return out


def _size_overrides(attrs: dict[str, Any]) -> dict[str, Any]:
    """Feed-forward sizes, low-rank projections, experts and positions made small."""
    out: dict[str, Any] = {}
    hidden = attrs.get("hidden_size")
    for key, value in attrs.items():
        if not _int(value):
            continue
        if key.endswith(("intermediate_size", "ffn_dim")) or key in ("d_ff", "n_inner", "d_inner"):
            out[key] = min(value, INTERMEDIATE)
        elif key.endswith("_hidden_size") and value > HIDDEN:
            # a multiple of this config's width (zamba's attention_hidden_size) stays one; another
            # config's width (a vision tower's out_hidden_size = the text hidden_size) becomes HIDDEN
            multiple = _int(hidden) and hidden > HIDDEN and value % hidden == 0
            out[key] = value // hidden * HIDDEN if multiple else HIDDEN
        elif key.endswith("_lora_rank"):
            out[key] = min(value, 2 * HEAD_DIM)
    experts = [k for k in _EXPERT_COUNTS if _int(attrs.get(k))]
    out.update({k: min(attrs[k], EXPERTS) for k in experts})
    for key in _EXPERTS_PER_TOKEN:
        if key in attrs and (_int(attrs[key]) or (attrs[key] is None and experts)):
            out[key] = min(attrs[key] or EXPERTS_PER_TOKEN, EXPERTS_PER_TOKEN)
    out.update({k: 1 for k in ("n_group", "topk_group", "n_shared_experts") if _int(attrs.get(k))})
    out.update({k: POSITIONS for k in _POSITIONS if _int(attrs.get(k)) and attrs[k] > POSITIONS})
    return out


def _vocab_overrides(attrs: dict[str, Any]) -> dict[str, Any]:
    """A ``VOCAB``-token vocabulary; special token ids at or above it moved to distinct ids at its top."""
    if "vocab_size" not in attrs or not (attrs["vocab_size"] is None or attrs["vocab_size"] > VOCAB):
        return {}
    free = iter(range(VOCAB - 1, VOCAB // 2, -1))
    moved: dict[int, int] = {}

    def remap(token: Any) -> Any:
        if _int(token) and token >= VOCAB:
            return moved.setdefault(token, next(free))
        if isinstance(token, (list, tuple)):
            return [remap(t) for t in token]
        return token

    ids = {k: remap(v) for k, v in _token_ids(attrs)}
    return {"vocab_size": VOCAB, **{k: v for k, v in ids.items() if v != attrs[k]}}


def _image_overrides(attrs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if _int(attrs.get("image_size")) and attrs["image_size"] > IMAGE:
        out["image_size"] = IMAGE
        if _int(attrs.get("patch_size")) and attrs["patch_size"] > PATCH:
            out["patch_size"] = PATCH
    return out


def _token_ids(attrs: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in attrs.items() if k.endswith(("_token_id", "_token_ids", "_token_index"))]


def shrunk(config: Any, *, small_images: bool = True, causal: bool = False) -> dict[str, Any]:
    """Keyword arguments that make ``config``'s class build a tiny model: a few layers, narrow
    widths, a small vocabulary and image; sub-configs (``text_config``, ``vision_config``) the same way.
    Only attributes ``config`` has are set, everything else keeps the class default; ``causal`` sets
    ``is_decoder`` where the config has it."""
    attrs = _attributes(config)
    heads_dims = _head_dim_overrides(attrs)
    out = {
        **_layer_overrides(attrs),
        **_size_overrides(attrs),
        **_width_overrides(attrs),
        **heads_dims,
        **_vocab_overrides(attrs),
        **(_image_overrides(attrs) if small_images else {}),
    }
    out.update(_rope_overrides(attrs, out))
    if causal and "is_decoder" in attrs:
        out["is_decoder"] = True
    for key, value in attrs.items():
        if _is_config(value):
            sub = shrunk(value, small_images=small_images, causal=causal)
            out[key] = {"model_type": getattr(value, "model_type", ""), **sub}
    return out


def _special_tokens(config: Any) -> set[int]:
    found: set[int] = set()

    def collect(value: Any) -> None:
        if _int(value):
            found.add(value)
        elif isinstance(value, (list, tuple)):
            for v in value:
                collect(v)

    for _, value in _token_ids(_attributes(config)):
        collect(value)
    for value in vars(config).values():
        if _is_config(value):
            found |= _special_tokens(value)
    return found


def _find(config: Any, key: str, default: Any) -> Any:
    """``key`` of ``config`` or, failing that, of its first sub-config that has it."""
    if getattr(config, key, None) is not None:
        return getattr(config, key)
    for value in vars(config).values():
        if _is_config(value) and getattr(value, key, None) is not None:
            return getattr(value, key)
    return default


def _token_ids_input(config: Any) -> torch.Tensor:
    vocab = _find(getattr(config, "text_config", None) or config, "vocab_size", VOCAB)
    allowed = torch.tensor([i for i in range(vocab) if i not in _special_tokens(config)] or [0])
    return allowed[torch.randint(len(allowed), (BATCH, SEQUENCE))]


def _pixels_input(config: Any) -> torch.Tensor:
    vision = getattr(config, "vision_config", None) or config
    size = _find(vision, "image_size", IMAGE)
    height, width = (
        tuple(size)[-2:] if isinstance(size, (list, tuple)) else (size, size) if _int(size) else (IMAGE, IMAGE)
    )
    return torch.randn(BATCH, _find(vision, "num_channels", 3), height, width)


def _transformers_candidates(model: nn.Module, causal: bool) -> list[dict[str, Any]]:
    """Text (``input_ids``) or image (``pixel_values``) inputs, whichever the model's main input is,
    then both where its forward takes both (CLIP-like models need both)."""
    parameters = inspect.signature(model.forward).parameters
    kinds = [k for k in ("input_ids", "pixel_values") if k in parameters]
    main = getattr(model, "main_input_name", None)
    if main in kinds:
        kinds.remove(main)
        kinds.insert(0, main)
    if not kinds:
        raise NotImplementedError(
            f"its forward takes neither text (input_ids) nor images (pixel_values); its main input is {main!r}"
        )
    make = {"input_ids": _token_ids_input, "pixel_values": _pixels_input}
    tensors = {k: make[k](model.config) for k in kinds}
    extras: dict[str, Any] = {}
    if "input_ids" in kinds and "decoder_input_ids" in parameters and getattr(model.config, "is_encoder_decoder", 0):
        extras["decoder_input_ids"] = tensors["input_ids"]
    if "use_cache" in parameters:  # a model returning its key/value cache returns an object export cannot flatten
        extras["use_cache"] = False
    candidates = [{kinds[0]: tensors[kinds[0]], **extras}]
    if len(kinds) > 1:
        candidates.append({**tensors, **extras})
    return candidates


@register_zoo("transformers", models=_transformers_names, package="transformers")
def _transformers(family: str) -> tuple[nn.Module, Inputs]:
    """The family's tiny model; where the model refuses a small image (Swin's windows), its default image size."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cls_name = transformers_class(family)
    if cls_name is None:
        raise ValueError(f"transformers family {family!r} has no model class in the auto mappings")
    model_class = getattr(transformers, cls_name)
    config_class = getattr(model_class, "config_class", None) or CONFIG_MAPPING[family]
    causal = family in _transformers_mappings()[0]
    default = config_class()
    tiny = shrunk(default, causal=causal)
    native_images = shrunk(default, causal=causal, small_images=False)
    model = model_class(config_class(**tiny)).eval()
    candidates = _transformers_candidates(model, causal)
    inputs = first_accepted(model, candidates)
    if tiny != native_images and not runs_on(model, inputs):
        model = model_class(config_class(**native_images)).eval()
        inputs = first_accepted(model, _transformers_candidates(model, causal))
    return model, inputs


# ---------------------------------------------------------------------------------------------
# segmentation_models_pytorch: every architecture, on a small encoder

_SMP_ENCODERS = ("resnet18", "tu-vit_tiny_patch16_224")  # DPT takes timm ViTs only


def _smp_names() -> list[str]:
    import segmentation_models_pytorch as smp

    return list(smp.MODEL_ARCHITECTURES_MAPPING)


@register_zoo("smp", models=_smp_names, package="segmentation-models-pytorch")
def _smp(arch: str) -> tuple[nn.Module, Inputs]:
    import segmentation_models_pytorch as smp

    refusals = []
    for encoder in _SMP_ENCODERS:
        try:
            model = smp.create_model(arch, encoder_name=encoder, encoder_weights=None).eval()
            break
        except ValueError as exc:
            refusals.append(f"{encoder}: {exc}")
    else:
        raise ValueError(f"no small encoder fits {arch}: {'; '.join(refusals)}")
    return model, first_accepted(model, images((3, SMALL, SMALL), (3, 128, 128), (3, 224, 224)))


# ---------------------------------------------------------------------------------------------
# MONAI: residual networks with small configurations

_2D, _3D = (1, SMALL, SMALL), (1, 32, 32, 32)


def _monai_specs() -> dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]]:
    """Name -> (constructor of a small configuration, per-sample input shape)."""
    from monai.networks import nets

    small_vit = dict(hidden_size=64, mlp_dim=128, num_layers=4, num_heads=4)
    return {
        "AttentionUnet": (
            lambda: nets.AttentionUnet(2, 1, 2, channels=(8, 16, 32, 64), strides=(2, 2, 2)),
            _2D,
        ),
        "AutoencoderKL": (
            lambda: nets.AutoencoderKL(
                spatial_dims=2,
                in_channels=1,
                out_channels=1,
                channels=(16, 32, 32),
                attention_levels=(False, False, True),
                num_res_blocks=1,
                latent_channels=4,
                norm_num_groups=8,
            ),
            _2D,
        ),
        "BasicUNet": (lambda: nets.BasicUNet(2, 1, 2, features=(8, 8, 16, 32, 64, 8)), _2D),
        "BasicUNetPlusPlus": (lambda: nets.BasicUNetPlusPlus(2, 1, 2, features=(8, 8, 16, 32, 64, 8)), _2D),
        "DAF3D": (lambda: nets.DAF3D(in_channels=1, out_channels=1), (1, 32, 64, 64)),
        "DenseNet": (
            lambda: nets.DenseNet(2, 1, 2, init_features=16, growth_rate=8, block_config=(2, 2, 2, 2)),
            _2D,
        ),
        "DynUNet": (
            lambda: nets.DynUNet(
                3,
                1,
                2,
                kernel_size=[3] * 4,
                strides=[1, 2, 2, 2],
                upsample_kernel_size=[2] * 3,
                filters=[8, 16, 32, 64],
                res_block=True,
            ),
            _3D,
        ),
        "EfficientNetBN": (
            lambda: nets.EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=1),
            _2D,
        ),
        "FlexibleUNet": (
            lambda: nets.FlexibleUNet(1, 2, backbone="resnet18", pretrained=False, spatial_dims=2),
            _2D,
        ),
        "HighResNet": (lambda: nets.HighResNet(spatial_dims=2, in_channels=1, out_channels=2), _2D),
        "HoVerNet": (lambda: nets.HoVerNet(mode="fast", in_channels=3, out_classes=2), (3, 256, 256)),
        "LocalNet": (
            lambda: nets.LocalNet(2, 1, num_channel_initial=8, extract_levels=(0, 1, 2, 3), out_channels=2),
            _2D,
        ),
        "MaskedAutoEncoderViT": (
            lambda: nets.MaskedAutoEncoderViT(
                1,
                (32, 32, 32),
                (8, 8, 8),
                hidden_size=96,
                mlp_dim=128,
                num_layers=4,
                num_heads=4,
                decoder_hidden_size=48,
                decoder_mlp_dim=64,
                decoder_num_layers=2,
                decoder_num_heads=4,
            ),
            _3D,
        ),
        "MedNeXt": (
            lambda: nets.MedNeXt(
                spatial_dims=3,
                in_channels=1,
                out_channels=2,
                init_filters=8,
                blocks_down=(1, 1, 1, 1),
                blocks_bottleneck=1,
                blocks_up=(1, 1, 1, 1),
            ),
            _3D,
        ),
        "RegUNet": (lambda: nets.RegUNet(2, 1, num_channel_initial=8, depth=3, out_channels=2), _2D),
        "ResNet": (lambda: nets.resnet10(spatial_dims=3, n_input_channels=1, num_classes=2), _3D),
        "ResNet-bottleneck": (lambda: nets.resnet50(spatial_dims=2, n_input_channels=1, num_classes=2), _2D),
        "SEResNet50": (lambda: nets.SEResNet50(spatial_dims=2, in_channels=1, num_classes=2), _2D),
        "SegResNet": (
            lambda: nets.SegResNet(3, init_filters=8, in_channels=1, out_channels=2, blocks_down=(1, 2, 2, 4)),
            _3D,
        ),
        "SegResNetDS": (
            lambda: nets.SegResNetDS(3, init_filters=8, in_channels=1, out_channels=2, blocks_down=(1, 2, 2, 4)),
            _3D,
        ),
        "SegResNetVAE": (
            lambda: nets.SegResNetVAE((32, 32, 32), 3, init_filters=8, in_channels=1, out_channels=2),
            _3D,
        ),
        "SwinUNETR": (
            lambda: nets.SwinUNETR(
                in_channels=1,
                out_channels=2,
                feature_size=12,
                depths=(2, 2, 2, 2),
                num_heads=(3, 3, 3, 3),
                spatial_dims=2,
            ),
            _2D,
        ),
        "UNETR": (
            lambda: nets.UNETR(1, 2, (32, 32, 32), feature_size=8, hidden_size=64, mlp_dim=128, num_heads=4),
            _3D,
        ),
        "UNet": (
            lambda: nets.UNet(2, 1, 2, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=2),
            _2D,
        ),
        "VNet": (lambda: nets.VNet(spatial_dims=3, in_channels=1, out_channels=2), _3D),
        "ViT": (
            lambda: nets.ViT(1, (32, 32, 32), (8, 8, 8), classification=True, num_classes=2, **small_vit),
            _3D,
        ),
        "ViTAutoEnc": (lambda: nets.ViTAutoEnc(1, (SMALL, SMALL), (16, 16), spatial_dims=2, **small_vit), _2D),
    }


def _monai_names() -> list[str]:
    return sorted(_monai_specs())


@register_zoo("monai", models=_monai_names, package="monai")
def _monai(name: str) -> tuple[nn.Module, Inputs]:
    specs = _monai_specs()
    if name not in specs:
        raise ValueError(f"no MONAI model {name!r} in the zoo; choose from {', '.join(sorted(specs))}")
    make, shape = specs[name]
    model = make().eval()
    return model, images(shape)[0]


# ---------------------------------------------------------------------------------------------
# build-only timing


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def time_build(spec: str, timeout: float = 120.0) -> dict[str, Any]:
    """Build ``spec`` and run one forward: seconds taken, or the stage and error that stopped it."""
    record: dict[str, Any] = {"model": spec, "ok": False}
    start = time.perf_counter()
    stage = "build"
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(max(1, math.ceil(timeout)))
    try:
        model, inputs = build(spec)
        record["inputs"] = describe(inputs)
        record["params"] = sum(p.numel() for p in model.parameters())
        stage = "forward"
        with torch.no_grad():
            next(output_tensors(call(model, inputs)))
        record["ok"] = True
    except _Timeout:
        record["error"] = f"{stage}: timeout: more than {timeout:.0f} s"
    except StopIteration:
        record["error"] = f"{stage}: the output holds no tensor"
    except Exception as exc:
        record["error"] = f"{stage}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List the benchmark model zoos, or time building their models.")
    parser.add_argument("zoos", nargs="*", help=f"zoos (default: all of {', '.join(list_zoos())})")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true", help="print the model specs")
    action.add_argument("--time", action="store_true", help="build every model and run one forward, timed")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per model (default: %(default)s)")
    args = parser.parse_args(argv)
    zoos = args.zoos or list_zoos()
    for zoo in zoos:
        get_zoo(zoo)
    if args.list:
        print("\n".join(list_models(zoos)))
        return 0
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    for zoo in zoos:
        start = time.perf_counter()
        records = []
        for spec in list_models([zoo]):
            records.append(time_build(spec, args.timeout))
            r = records[-1]
            print(f"{spec}\t{'ok' if r['ok'] else 'FAIL'}\t{r['seconds']}\t{r.get('inputs', '')}\t{r.get('error', '')}")
            sys.stdout.flush()
        built = sum(r["ok"] for r in records)
        causes = Counter(r["error"].split(":")[0] + ":" + r["error"].split(":")[1] for r in records if not r["ok"])
        print(
            f"== {zoo}: {built} of {len(records)} built and ran a forward in {time.perf_counter() - start:.1f} s"
            f" (models: {sum(r['seconds'] for r in records):.1f} s); failures by stage and type: {dict(causes)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
