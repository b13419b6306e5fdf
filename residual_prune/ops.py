"""What each node of a captured graph does, in the terms block discovery needs.

Two front-ends capture a model: torch.fx (torch-level functions, methods and leaf-module calls)
and torch.export (ATen operators). An :class:`OpTable` answers the same questions about either
graph, so the removability rules never look at a front-end's node types:

- ``add_operands``: the two tensors of an addition (a residual join candidate),
- ``is_identity``: returns its input unchanged (``clone``, eval-mode dropout, ``nn.Identity``),
- ``is_layout``: only rearranges its input (reshape, permute, ...); ``run`` replays it on a probe,
- ``resampling``: changes the spatial resolution (strided convolution or pooling, upsampling),
- ``weights`` / ``reads_state``: the parameters a node reads, and whether it reads any tensor of
  the model (parameter, buffer or constant),
- ``is_norm``: a normalization layer (batch, layer, group, instance or RMS norm) as one operation,
- ``written`` / ``viewed``: the tensor an in-place operation writes, and the tensor a view shares
  memory with (see :mod:`residual_prune.aliasing`).

Extend the tables with :func:`register_identity_module` and :func:`register_layout_module`.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any, Protocol

import torch
import torch.fx as fx
from torch import nn

__all__ = [
    "OpTable",
    "FxOps",
    "ExportOps",
    "register_identity_module",
    "register_layout_module",
    "get_identity_modules",
    "get_layout_modules",
]

_identity_modules: set[type[nn.Module]] = {nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d}
_layout_modules: set[type[nn.Module]] = {nn.Flatten, nn.Unflatten}
try:  # torchvision's Permute module is kept opaque when tracing (a torchvision.ops leaf)
    from torchvision.ops.misc import Permute as _TorchvisionPermute

    _layout_modules.add(_TorchvisionPermute)
except ImportError:  # pragma: no cover - torchvision is a dependency
    pass


def register_identity_module(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: calls of ``cls`` (kept opaque by torch.fx) return their input unchanged in eval
    mode, so they may lie on a residual shortcut (as ``nn.Identity`` and ``nn.Dropout`` do)."""
    _identity_modules.add(cls)
    return cls


def register_layout_module(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: calls of ``cls`` (kept opaque by torch.fx) only rearrange their input's elements
    (as ``nn.Flatten`` does), so a unit's main path may pass through them when they are undone."""
    _layout_modules.add(cls)
    return cls


def get_identity_modules() -> tuple[type[nn.Module], ...]:
    return tuple(_identity_modules)


def get_layout_modules() -> tuple[type[nn.Module], ...]:
    return tuple(_layout_modules)


class OpTable(Protocol):
    """The questions block discovery asks about a node, answered by each front-end."""

    def add_operands(self, node: fx.Node) -> tuple[fx.Node, fx.Node] | None: ...

    def is_identity(self, node: fx.Node) -> bool: ...

    def is_layout(self, node: fx.Node) -> bool: ...

    def run(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...

    def resampling(self, node: fx.Node) -> tuple[str, str] | None: ...

    def weights(self, node: fx.Node) -> frozenset[str]: ...

    def reads_state(self, node: fx.Node) -> bool: ...

    def is_norm(self, node: fx.Node) -> bool: ...

    def written(self, node: fx.Node) -> fx.Node | None: ...

    def viewed(self, node: fx.Node) -> fx.Node | None: ...

    def label(self, node: fx.Node) -> str: ...


def _submodules(module: nn.Module | None) -> Iterable[tuple[str, nn.Module]]:
    """The submodules below ``module`` (none for None), with their names relative to it."""
    return () if module is None else ((name, m) for name, m in module.named_modules() if name)


def _downsamples(stride: Any) -> bool:
    return any(s > 1 for s in (stride if isinstance(stride, (tuple, list)) else (stride,)))


# ---------------------------------------------------------------- torch.fx graphs

_FX_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add, torch.Tensor.add, torch.Tensor.add_}
_FX_ADD_METHODS = {"add", "add_"}
_FX_IDENTITY_METHODS = {"contiguous", "clone"}
_FX_IDENTITY_FUNCTIONS = {torch.clone}
_FX_POOLING = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.LPPool1d,
    nn.LPPool2d,
)
_FX_UPSAMPLING_MODULES = (nn.Upsample, nn.PixelShuffle, nn.modules.conv._ConvTransposeNd)
_FX_LAYOUT_METHODS = {
    "reshape",
    "view",
    "permute",
    "transpose",
    "flatten",
    "unflatten",
    "squeeze",
    "unsqueeze",
    "contiguous",
    "movedim",
    "swapaxes",
    "swapdims",
}
_FX_LAYOUT_FUNCTIONS = {
    torch.reshape,
    torch.permute,
    torch.transpose,
    torch.flatten,
    torch.unflatten,
    torch.squeeze,
    torch.unsqueeze,
    torch.movedim,
    torch.swapaxes,
    torch.swapdims,
}
# may share memory with their input (reshape and contiguous sometimes do: counted, to be safe)
_FX_VIEW_METHODS = _FX_LAYOUT_METHODS | {
    "narrow",
    "select",
    "expand",
    "expand_as",
    "view_as",
    "t",
    "diagonal",
    "unfold",
    "as_strided",
    "chunk",
    "split",
    "unbind",
    "tensor_split",
    "__getitem__",
}
_FX_VIEW_FUNCTIONS = _FX_LAYOUT_FUNCTIONS | {
    operator.getitem,
    torch.narrow,
    torch.select,
    torch.chunk,
    torch.split,
    torch.unbind,
    torch.tensor_split,
}
_FX_IN_PLACE_OPERATORS = {
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.ifloordiv,
    operator.imod,
    operator.ipow,
    operator.iand,
    operator.ior,
    operator.ixor,
}
_FX_UPSAMPLING_FUNCTIONS = {torch.nn.functional.interpolate, torch.nn.functional.pixel_shuffle, torch.pixel_shuffle}
_FX_DOWNSAMPLING_FUNCTIONS = {torch.nn.functional.pixel_unshuffle, torch.pixel_unshuffle}


_NORM_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
_FX_NORM_FUNCTIONS = {
    torch.nn.functional.layer_norm,
    torch.nn.functional.group_norm,
    torch.nn.functional.batch_norm,
    torch.nn.functional.instance_norm,
    *((torch.nn.functional.rms_norm,) if hasattr(torch.nn.functional, "rms_norm") else ()),
}


def unread(node: fx.Node) -> bool:
    """Whether nothing reads what ``node`` makes, and making it writes nothing: an output of a call nobody picks
    (``getitem``: the statistics an attention kernel returns beside its output), or ATen operators whose results
    only feed each other (the slice of its keys a sliding-window cache keeps for a later call)."""
    seen: set[fx.Node] = set()
    frontier = [node]
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        name = aten_name(current)
        pure = current.op == "call_function" and (
            current.target is operator.getitem or (name is not None and not name.endswith("_"))
        )
        if not pure:
            return False
        frontier.extend(current.users)
    return True


def fx_add_operands(node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    """The two tensor operands if a torch.fx ``node`` is an addition in any spelling, else None."""
    if not (
        (node.op == "call_function" and node.target in _FX_ADD_FUNCTIONS)
        or (node.op == "call_method" and node.target in _FX_ADD_METHODS)
    ):
        return None
    operands = [a for a in [*node.args[:2], node.kwargs.get("other")] if isinstance(a, fx.Node)]
    return (operands[0], operands[1]) if len(operands) >= 2 else None


class FxOps:
    """:class:`OpTable` of a torch.fx graph traced from ``root`` (``constants``: the tensors fx lifted
    out of the forward, which are not parameters of the model)."""

    def __init__(self, root: nn.Module, constants: Iterable[str] = ()):
        self.modules = dict(root.named_modules())
        self.constants = set(constants)

    def module(self, node: fx.Node) -> nn.Module | None:
        return self.modules.get(node.target) if node.op == "call_module" else None

    def add_operands(self, node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
        return fx_add_operands(node)

    def is_identity(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            return isinstance(self.module(node), tuple(_identity_modules))
        if node.op == "call_method":
            return node.target in _FX_IDENTITY_METHODS
        return node.op == "call_function" and node.target in _FX_IDENTITY_FUNCTIONS

    def is_layout(self, node: fx.Node) -> bool:
        if node.op == "call_method":
            return node.target in _FX_LAYOUT_METHODS
        if node.op == "call_function":
            return node.target in _FX_LAYOUT_FUNCTIONS
        return isinstance(self.module(node), tuple(_layout_modules))

    def run(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        target = node.target
        if node.op == "call_method":
            assert isinstance(target, str), "fx: a call_method's target is the method's name"
            return getattr(args[0], target)(*args[1:], **kwargs)
        if node.op == "call_function":
            assert callable(target), "fx: a call_function's target is the function"
            return target(*args, **kwargs)
        module = self.module(node)
        assert module is not None, "is_layout chose it as a layout module"
        return module(*args, **kwargs)

    def resampling(self, node: fx.Node) -> tuple[str, str] | None:
        module = self.module(node)
        if isinstance(module, _FX_UPSAMPLING_MODULES):
            return "up", f"`{node.target}` ({type(module).__name__})"
        if isinstance(module, (nn.modules.conv._ConvNd, *_FX_POOLING)):
            stride = getattr(module, "stride", 1)
            stride = getattr(module, "kernel_size", 1) if stride is None else stride
            if _downsamples(stride):
                return "down", f"`{node.target}` ({type(module).__name__}, stride {stride})"
        if isinstance(module, nn.PixelUnshuffle) or (
            node.op == "call_function" and node.target in _FX_DOWNSAMPLING_FUNCTIONS
        ):
            return "down", f"`{getattr(node.target, '__name__', node.target)}`"
        if node.op == "call_function" and node.target in _FX_UPSAMPLING_FUNCTIONS:
            return "up", f"`{getattr(node.target, '__name__', node.target)}`"
        upsampling = (f"{node.target}.{n}" for n, m in _submodules(module) if isinstance(m, _FX_UPSAMPLING_MODULES))
        inner = next(upsampling, None)
        if inner is not None:  # an opaque module (timm's ConvAttention) that upsamples inside
            return "up", f"`{inner}` ({type(self.modules[inner]).__name__}, inside the opaque `{node.target}`)"
        return None

    def weights(self, node: fx.Node) -> frozenset[str]:
        module = self.module(node)
        if module is not None:
            return frozenset(f"{node.target}.{name}" for name, _ in module.named_parameters())
        if node.op == "get_attr" and node.target not in self.constants:
            return frozenset({str(node.target)})
        return frozenset()

    def reads_state(self, node: fx.Node) -> bool:
        module = self.module(node)
        if module is not None:
            return any(True for _ in module.parameters()) or any(True for _ in module.buffers())
        return any(a.op == "get_attr" for a in node.all_input_nodes)

    def is_norm(self, node: fx.Node) -> bool:
        return isinstance(self.module(node), _NORM_MODULES) or (
            node.op == "call_function" and node.target in _FX_NORM_FUNCTIONS
        )

    def written(self, node: fx.Node) -> fx.Node | None:
        """The tensor an in-place method (``mul_``), operator (``*=``), function (``inplace=True``) or module
        (``nn.ReLU(inplace=True)``) writes."""
        if node.op == "call_method":
            in_place = isinstance(node.target, str) and node.target.endswith("_") and not node.target.startswith("_")
        elif node.op == "call_function":
            in_place = node.target in _FX_IN_PLACE_OPERATORS or node.kwargs.get("inplace") is True
        else:
            in_place = getattr(self.module(node), "inplace", False) is True
        first = node.args[0] if node.args else None
        return first if in_place and isinstance(first, fx.Node) else None

    def viewed(self, node: fx.Node) -> fx.Node | None:
        if node.op == "call_method":
            view = node.target in _FX_VIEW_METHODS
        else:
            view = node.op == "call_function" and node.target in _FX_VIEW_FUNCTIONS
        first = node.args[0] if node.args else None
        return first if view and isinstance(first, fx.Node) else None

    def label(self, node: fx.Node) -> str:
        return str(node.target) if node.op == "call_module" else node.name


# ---------------------------------------------------------------- torch.export (ATen) graphs

_ATEN_ADD = {"add", "add_"}
_ATEN_IDENTITY = {"clone", "contiguous", "alias", "detach", "lift_fresh_copy"}
_ATEN_DROPOUT = {"dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "dropout_"}
_ATEN_CASTS = {"to", "_to_copy", "type_as"}
_ATEN_LAYOUT = _FX_LAYOUT_METHODS | {"_unsafe_view", "t"}  # the same names, as ATen operators
_ATEN_CONVOLUTIONS = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution"}
_ATEN_TRANSPOSED_CONVOLUTIONS = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_ATEN_POOLING = {
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
}
_ATEN_UPSAMPLING = {"pixel_shuffle", "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d"}
_ATEN_DOWNSAMPLING = {"pixel_unshuffle"}
_ATEN_NORMS = {
    "layer_norm",
    "native_layer_norm",
    "group_norm",
    "native_group_norm",
    "batch_norm",
    "native_batch_norm",
    "_native_batch_norm_legit_no_training",
    "instance_norm",
    "rms_norm",
    "_fused_rms_norm",
}


def aten_name(node: fx.Node) -> str | None:
    """The ATen operator's name without overload (``"add"`` for ``aten.add.Tensor``), or None."""
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return None
    return node.target.overloadpacket.__name__


def _argument(node: fx.Node, name: str) -> Any:
    """An ATen call's argument by its schema name (its default when not passed)."""
    target = node.target
    assert isinstance(target, torch._ops.OpOverload), "only ATen calls have a schema"
    for position, argument in enumerate(target._schema.arguments):
        if argument.name == name:
            if position < len(node.args):
                return node.args[position]
            if name in node.kwargs:
                return node.kwargs[name]
            return argument.default_value if argument.has_default_value() else None
    return None


def _val(node: Any) -> Any:
    return node.meta.get("val") if isinstance(node, fx.Node) else None


class ExportOps:
    """:class:`OpTable` of a graph from ``torch.export`` (``weights``: placeholder name -> qualified name
    of the parameter or buffer it stands for; ``constants``: placeholders of lifted constant tensors)."""

    def __init__(self, parameters: dict[str, str], buffers: dict[str, str], constants: Iterable[str] = ()):
        self.parameters = parameters
        self.state = set(parameters) | set(buffers) | set(constants)

    def add_operands(self, node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
        if aten_name(node) not in _ATEN_ADD or _argument(node, "alpha") not in (None, 1):
            return None
        a, b = _argument(node, "self"), _argument(node, "other")
        return (a, b) if isinstance(a, fx.Node) and isinstance(b, fx.Node) else None

    def is_identity(self, node: fx.Node) -> bool:
        name = aten_name(node)
        if name in _ATEN_IDENTITY:
            return True
        if name in _ATEN_DROPOUT:
            return _argument(node, "train") is False or _argument(node, "p") == 0
        if name in _ATEN_CASTS:  # a cast to the dtype and device the tensor has
            source, result = _val(node.args[0]) if node.args else None, _val(node)
            return (
                isinstance(source, torch.Tensor)
                and isinstance(result, torch.Tensor)
                and source.dtype == result.dtype
                and source.device == result.device
            )
        return False

    def is_layout(self, node: fx.Node) -> bool:
        return aten_name(node) in _ATEN_LAYOUT

    def run(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        target = node.target
        assert callable(target), "an ATen call's target is the operator"
        return target(*args, **kwargs)

    def resampling(self, node: fx.Node) -> tuple[str, str] | None:
        name = aten_name(node)
        if name is None:
            return None
        if name in _ATEN_TRANSPOSED_CONVOLUTIONS or (name in _ATEN_CONVOLUTIONS and _argument(node, "transposed")):
            return "up", f"`{node.name}` (transposed convolution)"
        if name in _ATEN_CONVOLUTIONS and _downsamples(_argument(node, "stride")):
            return "down", f"`{node.name}` (convolution, stride {_argument(node, 'stride')})"
        if name in _ATEN_POOLING:
            stride = _argument(node, "stride") or _argument(node, "kernel_size")
            if _downsamples(stride):
                return "down", f"`{node.name}` ({name}, stride {stride})"
        if name in _ATEN_DOWNSAMPLING:
            return "down", f"`{node.name}` ({name})"
        if name in _ATEN_UPSAMPLING or name.startswith(("upsample_", "_upsample_")):
            return "up", f"`{node.name}` ({name})"
        return None

    def weights(self, node: fx.Node) -> frozenset[str]:
        return frozenset(self.parameters[a.name] for a in node.all_input_nodes if a.name in self.parameters)

    def reads_state(self, node: fx.Node) -> bool:
        return any(a.name in self.state for a in node.all_input_nodes)

    def is_norm(self, node: fx.Node) -> bool:
        return aten_name(node) in _ATEN_NORMS

    def written(self, node: fx.Node) -> fx.Node | None:
        """The first argument the operator's schema marks as written (``Tensor(a!)``)."""
        if aten_name(node) is None:
            return None
        assert isinstance(node.target, torch._ops.OpOverload), "aten_name checked it"
        for position, argument in enumerate(node.target._schema.arguments):
            if argument.alias_info is not None and argument.alias_info.is_write:
                value = node.args[position] if position < len(node.args) else node.kwargs.get(argument.name)
                return value if isinstance(value, fx.Node) else None
        return None

    def viewed(self, node: fx.Node) -> fx.Node | None:
        """The input of an operator whose result aliases it (``Tensor(a)``), or the tuple an item is taken from."""
        first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if node.op == "call_function" and node.target is operator.getitem:
            return first
        if aten_name(node) is None:
            return None
        assert isinstance(node.target, torch._ops.OpOverload), "aten_name checked it"
        returns = node.target._schema.returns
        aliased = bool(returns) and returns[0].alias_info is not None and not returns[0].alias_info.is_write
        return first if aliased else None

    def label(self, node: fx.Node) -> str:
        """The module that made the node and the operator, e.g. ``encoder.layer.0.output.LayerNorm (layer_norm)``."""
        stack = [path for path, _ in (node.meta.get("nn_module_stack") or {}).values() if path]
        return f"{stack[-1]} ({aten_name(node) or node.name})" if stack else node.name
