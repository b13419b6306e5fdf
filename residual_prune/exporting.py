"""The torch.export front-end: capture a model's ATen graph on fake tensors.

``torch.export.export(..., strict=False)`` runs the model's Python as Python (decorators,
``**kwargs``, input checks and shape arithmetic all work) on fake tensors, so nothing is
computed and a model built on the ``meta`` device can be analysed. Every node records the
modules whose forward made it (``nn_module_stack``) and its fake value (shape and dtype);
preserving every submodule's call signature records how each module was called (which graph
value it got as first argument, whether it returned one tensor) and how many times.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import sysconfig
import traceback
from collections.abc import Iterator
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.export.graph_signature import ConstantArgument, InputKind, TensorArgument
from torch.fx.passes.shape_prop import TensorMetadata
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from .aliasing import follow_in_place_writes, reread_first_arguments
from .errors import TraceError
from .flops import count_graph_flops
from .inputs import ModelInputs
from .modes import eval_mode, model_state_kept
from .ops import ExportOps
from .tracing import OPAQUE, ModuleCall, TracedModel, largest_children, returned_call

__all__ = ["capture_export", "record_values"]


def _tensor_meta(t: torch.Tensor) -> TensorMetadata:
    return TensorMetadata(t.shape, t.dtype, t.requires_grad, (), None, False, {})


def _concrete(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and all(isinstance(d, int) for d in value.shape)


def record_values(graph: fx.Graph) -> None:
    """``tensor_meta`` (shape, dtype) of every tensor value and ``value`` of every constant, as the fx
    front-end's shape pass records them."""
    for node in graph.nodes:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            if _concrete(val):
                node.meta["tensor_meta"] = _tensor_meta(val)
        elif isinstance(val, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in val):
            node.meta["tensor_meta"] = tuple(_tensor_meta(v) if _concrete(v) else None for v in val)
        elif isinstance(val, (int, float, bool)):
            node.meta["value"] = val


def _leaf(spec: Any) -> bool:
    return spec.is_leaf() if callable(getattr(spec, "is_leaf", None)) else spec.num_children == 0


def _children(spec: Any) -> list[Any]:
    """A pytree spec's children (``children()`` since torch 2.10, ``children_specs`` before)."""
    return list(spec.children()) if callable(getattr(spec, "children", None)) else list(spec.children_specs)


def _first_argument(signature: Any) -> tuple[bool, str | None]:
    """Whether the call's first flattened input is its first argument, and the keyword it was passed by
    (None: by position)."""
    positional, keywords = _children(signature.in_spec) if signature.in_spec.num_children == 2 else (None, None)
    if positional is not None and positional.num_children:
        return _leaf(_children(positional)[0]), None
    if keywords is not None and keywords.num_children and _leaf(_children(keywords)[0]):
        return True, str(keywords.context[0])
    return False, None


def _module_call(signature: Any, nodes: dict[str, fx.Node], path: str) -> ModuleCall:
    """A module call from its preserved signature."""
    is_first, keyword = _first_argument(signature)
    argument = signature.inputs[0] if signature.inputs and is_first else None
    first = nodes.get(argument.name) if isinstance(argument, TensorArgument) else None

    def value(o: Any) -> Any:
        if isinstance(o, TensorArgument):
            return nodes.get(o.name, OPAQUE)
        return o.value if isinstance(o, ConstantArgument) else OPAQUE

    outputs, out_spec = signature.outputs, signature.out_spec
    if _leaf(out_spec):
        output = value(outputs[0]) if len(outputs) == 1 else OPAQUE
    elif out_spec.type is tuple and all(_leaf(child) for child in _children(out_spec)):
        output = tuple(value(o) for o in outputs)
    else:
        output = OPAQUE
    return returned_call(first, keyword, output, path)


def _module_calls(program: torch.export.ExportedProgram, nodes: dict[str, fx.Node], canonical: dict) -> dict:
    """How each preserved submodule was called (its last call), by its canonical name."""
    calls: dict[str, ModuleCall] = {}
    for entry in program.module_call_graph:
        path = canonical.get(entry.fqn.partition("@")[0], entry.fqn.partition("@")[0])
        if path and entry.signature is not None:
            calls[path] = _module_call(entry.signature, nodes, path)
    return calls


def _canonical_module_stacks(graph: fx.Graph, model: nn.Module) -> dict[str, str]:
    """Name every module in the nodes' ``nn_module_stack`` by its first name in ``model`` (torch.export names
    a call by the attribute it went through: ``self.b`` where ``self.b = self.a``), as torch.fx and the
    eager recording do. Returns each name -> its canonical name."""
    first: dict[int, str] = {}
    canonical: dict[str, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        canonical[name] = first.setdefault(id(module), name)
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if stack:
            node.meta["nn_module_stack"] = {key: (canonical.get(p, p), cls) for key, (p, cls) in stack.items()}
    return canonical


def _call_counts(nodes: list[fx.Node]) -> dict[str, int]:
    """How many times each module was called: the distinct calls its nodes were made in (``nn_module_stack``
    keys: one per call, ``L__self__c@1`` for the second of ``c``; modules that make no node are left out)."""
    keys: dict[str, set[str]] = {}
    for node in nodes:
        for key, (path, _) in (node.meta.get("nn_module_stack") or {}).items():
            if path:
                keys.setdefault(path, set()).add(key)
    return {path: len(calls) for path, calls in keys.items()}


def _user_line(exc: BaseException) -> str:
    """The innermost frame of the traceback in the model's code (not torch's, Python's or this library's),
    as `` at file:line (code)``."""
    skipped = (sysconfig.get_paths()["stdlib"], os.path.dirname(__file__))
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if "/torch/" not in f.filename and not f.filename.startswith(skipped)
    ]
    if not frames:
        return ""
    frame = frames[-1]
    code = (frame.line or "").strip()
    return f" at {frame.filename}:{frame.lineno}" + (f" ({code})" if code else "")


@contextlib.contextmanager
def _calls_in_progress(model: nn.Module) -> Iterator[list[nn.Module]]:
    """The submodules of ``model`` whose forward is running, outermost first (global module hooks)."""
    known = {id(m) for m in model.modules()}
    stack: list[nn.Module] = []

    def enter(module: nn.Module, args: Any) -> None:
        if id(module) in known:
            stack.append(module)

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        if id(module) in known and stack and stack[-1] is module:
            stack.pop()

    handles = [register_module_forward_pre_hook(enter), register_module_forward_hook(leave)]
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _partial_graph_unprinted() -> Iterator[None]:
    """Keep what torch.export writes to stderr, less the partial graph it prints when it fails (thousands of
    lines for a large model; the failure is reported as a :class:`TraceError` instead)."""
    written = io.StringIO()
    try:
        with contextlib.redirect_stderr(written):
            yield
    except Exception as exc:
        partial = getattr(exc, "partial_fx_graph", None)
        sys.stderr.write(written.getvalue().replace(f"{partial}\n", "") if partial else written.getvalue())
        raise
    sys.stderr.write(written.getvalue())


def _stacked_layers(model: nn.Module) -> tuple[str, ...]:
    """The children of ``nn.ModuleList``, ``nn.Sequential`` and ``nn.ModuleDict`` containers: where the units
    of most networks (a transformer's layers, a ResNet's blocks) are."""
    containers = (nn.ModuleList, nn.Sequential, nn.ModuleDict)
    return tuple(
        f"{name}.{key}" if name else key
        for name, module in model.named_modules()
        if isinstance(module, containers)
        for key in module._modules
    )


def _export(model: nn.Module, inputs: ModelInputs, strict: bool) -> tuple[torch.export.ExportedProgram, bool]:
    """Export ``model``, preserving the call signatures of every submodule, or where torch.export cannot (a
    module that takes a string), of the stacked layers only, or of none (False then). A model that does
    not export at all is found out by the second try, which preserves nothing and says where it failed."""

    def export(preserved: tuple[str, ...] = ()) -> torch.export.ExportedProgram:
        with _partial_graph_unprinted():
            return torch.export.export(
                model, inputs.args, inputs.kwargs, strict=strict, preserve_module_call_signature=preserved
            )

    try:
        return export(tuple(name for name, _ in model.named_modules() if name)), True
    except Exception:
        pass
    in_progress: contextlib.AbstractContextManager[list[nn.Module]] = (
        contextlib.nullcontext([]) if strict else _calls_in_progress(model)
    )
    with in_progress as running:
        try:
            plain = export()
        except Exception as exc:
            raise _export_failure(model, exc, list(running), "strict" if strict else "non-strict") from exc
    try:
        return export(_stacked_layers(model)), True
    except Exception:
        return plain, False


def _export_failure(model: nn.Module, exc: Exception, running: list[nn.Module], mode: str) -> TraceError:
    """The :class:`TraceError` for a failed export: the module and line where it failed, and what to do."""
    text = str(exc).strip()
    cause = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
    if "Cache" in text and "in output" in text:  # a Hugging Face model returning its key/value cache
        cause += " (pass use_cache=False in example_inputs: the model then returns no cache object)"
    inner = running[-1] if running and running[-1] is not model else None
    if inner is not None:
        path = next(name for name, m in model.named_modules() if m is inner)
        cls = type(inner).__name__
        return TraceError(
            f"torch.export ({mode}) could not capture {type(model).__name__} inside `{path}` ({cls})"
            f"{_user_line(exc)}: {cause}. Try frontend='fx', where leaf_modules=({cls},) keeps that module "
            f"opaque, or analyse and prune a submodule without it and put the pruned copy back."
        )
    children = largest_children(model)
    where = (
        f"analyse and prune its submodule model.{children[0][0]} instead (plan_pruning(model.{children[0][0]}, "
        f"...), then model.{children[0][0]} = apply_plan(model.{children[0][0]}, plan))"
        if children
        else "rewrite that code without control flow on tensor values"
    )
    return TraceError(
        f"torch.export ({mode}) could not capture the top-level forward of {type(model).__name__}"
        f"{_user_line(exc)}: {cause}. Try frontend='fx', or {where}."
    )


def capture_export(
    model: nn.Module, inputs: ModelInputs, *, strict: bool = False, count_flops: bool = True
) -> TracedModel:
    """Capture ``model`` (in eval mode) called with ``inputs`` with torch.export; nothing runs for real.

    A model on the ``meta`` device gets its inputs moved there. Raises :class:`TraceError` naming
    the module path and the line of the model's code where torch.export failed.
    """
    device = next((p.device for p in model.parameters()), None)
    if device is not None and device.type == "meta":
        inputs = inputs.map_tensors(lambda t: t.to(device))
    with model_state_kept(model, unwritten=("parameters", "buffers")), eval_mode(model):
        program, preserved = _export(model, inputs, strict)
    graph = program.graph
    canonical = _canonical_module_stacks(graph, model)
    signature = program.graph_signature
    parameters: dict[str, str] = {}
    buffers: dict[str, str] = {}
    constants: list[str] = []
    user: list[str] = []
    for spec in signature.input_specs:
        name = str(getattr(spec.arg, "name", ""))
        if spec.kind == InputKind.PARAMETER:
            parameters[name] = str(spec.target)
        elif spec.kind == InputKind.BUFFER:
            buffers[name] = str(spec.target)
        elif spec.kind in (InputKind.CONSTANT_TENSOR, InputKind.CUSTOM_OBJ):
            constants.append(name)
        elif spec.kind == InputKind.USER_INPUT and isinstance(spec.arg, TensorArgument):
            user.append(name)
    ops = ExportOps(parameters, buffers, constants)
    versions = follow_in_place_writes(graph, ops)
    record_values(graph)
    nodes = list(graph.nodes)
    by_name = {n.name: n for n in nodes}
    calls = _module_calls(program, by_name, canonical) if preserved else {}
    shapes = {
        n: tuple(n.meta["tensor_meta"].shape) if hasattr(n.meta.get("tensor_meta"), "shape") else None for n in nodes
    }
    return TracedModel(
        root=model,
        graph=graph,
        nodes=nodes,
        shapes=shapes,
        call_counts=_call_counts(nodes),
        calls=reread_first_arguments(calls, versions),
        flops=count_graph_flops(graph) if count_flops else None,
        ops=ops,
        inputs=[by_name[name] for name in user],
        frontend="export-strict" if strict else "export",
    )
