"""A GraphModule with a second graph for train mode, as torchvision's feature extractor builds one.

Sub-layer pruning rewrites a traced graph; where a model's train-mode forward differs from its
eval-mode forward (Python ``if self.training:`` code, functional dropout), both graphs are
kept and ``forward`` runs the one that matches ``self.training``.
"""

from __future__ import annotations

import copy
import functools
import types
from collections.abc import Callable
from typing import Any, NoReturn

import torch.fx as fx
from torch import nn
from torch.fx.graph_module import _copy_attr, _forward_from_src

from .errors import TraceError

__all__ = ["DualGraphModule"]


class DualGraphModule(fx.GraphModule):
    """A ``torch.fx.GraphModule`` with a second graph for train mode (as torchvision's feature
    extractor builds): ``forward`` runs :attr:`train_graph` while ``self.training`` is set and
    :attr:`graph` otherwise, whichever way the flag was set.

    ``graph`` and ``code`` are the eval-mode ones, ``train_graph`` and ``train_code`` the
    train-mode ones; ``train_graph`` is None when train mode is refused (``train_refusal``
    says why). ``copy``, ``deepcopy`` and pickling (``torch.save``) keep both graphs.
    """

    def __init__(
        self,
        root: nn.Module,
        graph: fx.Graph,
        train_graph: fx.Graph | None,
        class_name: str = "GraphModule",
        train_refusal: str | None = None,
    ) -> None:
        super().__init__(root, graph, class_name)
        self.train_graph = train_graph
        self.train_refusal = train_refusal
        for node in train_graph.nodes if train_graph is not None else ():
            if node.op in ("get_attr", "call_module"):
                _copy_attr(root, self, node.target)
        self.recompile()

    @property
    def train_code(self) -> str | None:
        """The Python code of the train-mode forward (None when train mode is refused)."""
        return self.__dict__.get("_train_code")

    def recompile(self) -> Any:
        python_code = super().recompile()
        train_graph = self.__dict__.get("train_graph")
        train_forward = None
        if train_graph is not None:
            train_code = train_graph.python_code(root_module="self")
            self.__dict__["_train_code"] = train_code.src
            train_forward = _forward_from_src(train_code.src, train_code.globals)
        cls = type(self)
        cls.forward = _mode_switch(cls.forward, train_forward, self.__dict__.get("train_refusal"), cls.__name__)
        return python_code

    def _deepcopy_init(self) -> Callable[..., None]:
        name, refusal = type(self).__name__, self.train_refusal

        def init(copied: DualGraphModule, root: nn.Module, graph: fx.Graph) -> None:
            DualGraphModule.__init__(copied, root, graph, root.__dict__["train_graph"], name, refusal)

        return init

    def __copy__(self) -> DualGraphModule:
        copied = DualGraphModule(self, self.graph, self.train_graph, type(self).__name__, self.train_refusal)
        copied.meta = getattr(self, "meta", {})
        return copied

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as two plain GraphModules over the same modules (each saved as code, as fx does)."""
        name = type(self).__name__
        parts = [
            None if g is None else fx.GraphModule(self, copy.deepcopy(g), name) for g in (self.graph, self.train_graph)
        ]
        return (_unpickle_dual_graph_module, (*parts, name, self.train_refusal))


def _unpickle_dual_graph_module(
    eval_part: fx.GraphModule, train_part: fx.GraphModule | None, class_name: str, train_refusal: str | None
) -> DualGraphModule:
    if train_part is not None:
        for node in train_part.graph.nodes:
            if node.op in ("get_attr", "call_module"):
                _copy_attr(train_part, eval_part, node.target)
    train_graph = None if train_part is None else train_part.graph
    return DualGraphModule(eval_part, eval_part.graph, train_graph, class_name, train_refusal)


def _mode_switch(
    eval_forward: Callable[..., Any], train_forward: Callable[..., Any] | None, refusal: str | None, name: str
) -> Callable[..., Any]:
    """A ``forward`` that runs ``train_forward`` in train mode and ``eval_forward`` otherwise."""

    def refuse() -> NoReturn:
        raise TraceError(
            f"this pruned {name} cannot run in train mode: {refusal or 'it has no train-mode graph'}. Use it in "
            "eval mode (.eval()), or prune with granularity='block', which keeps the modules' Python code"
        )

    def forward(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - any forward's signature
        if not self.training:
            return eval_forward(self, *args, **kwargs)
        if train_forward is None:
            refuse()
        return train_forward(self, *args, **kwargs)

    # with the eval code's globals, as fx.GraphModule's own forward has: torch.fx then re-traces it
    # with the same wrapped functions, and its signature is the eval forward's
    forward = types.FunctionType(forward.__code__, eval_forward.__globals__, "forward", None, forward.__closure__)
    return functools.update_wrapper(forward, eval_forward)
