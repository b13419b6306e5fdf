"""In-place writes in a captured graph: make later readers read the written value.

torch.fx and torch.export (whose default IR keeps in-place operators) record ``out.narrow(1, 0, 1).mul_(2)``
as a view of ``out`` and an in-place operator on it, but the nodes that read ``out`` afterwards still
read the node that made ``out`` before the write: the graph says the value flows unchanged, and a
unit that scales its output through a view would look like a plain residual unit. After
:func:`follow_in_place_writes`, a reader after an in-place operator reads that operator's node, and a
reader of a tensor written through one of its views reads a :func:`written_through_view` node that
depends on both the tensor before the write and the write. (Views taken before the write and read
after it are not followed.)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch.fx as fx

from .ops import OpTable

if TYPE_CHECKING:
    from .tracing import ModuleCall

__all__ = ["follow_in_place_writes", "module_stack", "reread_first_arguments", "written_through_view"]


def module_stack(node: fx.Node) -> list[str]:
    """Qualified names of the modules whose forward made ``node``, outermost first."""
    stack = node.meta.get("nn_module_stack") or {}
    return [path for path, _ in stack.values() if path]  # torch.export lists the root as ""


def written_through_view(base: Any, write: Any) -> Any:
    """``base`` after ``write`` changed it in place through one of its views: ``base`` itself when run."""
    return base


def _read_after(old: fx.Node, new: fx.Node, order: dict[fx.Node, float]) -> None:
    """Make the readers of ``old`` that come after ``new`` read ``new``."""
    for user in list(old.users):
        if user is not new and order.get(user, -1.0) > order[new]:
            user.replace_input_with(old, new)


def follow_in_place_writes(graph: fx.Graph, ops: OpTable) -> dict[fx.Node, list[fx.Node]]:
    """Rewire ``graph`` so that what is read after an in-place write is the written value (see the module).
    Returns, for each node some readers no longer read, the nodes that stand for its later values, in order."""
    order: dict[fx.Node, float] = {n: float(i) for i, n in enumerate(graph.nodes)}
    versions: dict[fx.Node, list[fx.Node]] = {}
    for node in list(graph.nodes):
        target = ops.written(node)
        if target is None:
            continue
        _read_after(target, node, order)
        versions.setdefault(target, []).append(node)
        base, through_view = target, False
        while (source := ops.viewed(base)) is not None:
            base, through_view = source, True
        if not through_view:
            continue
        with graph.inserting_after(node):
            marker = graph.call_function(written_through_view, (base, node))
        marker.meta.update({k: v for k, v in base.meta.items() if k in ("val", "tensor_meta")})
        if "nn_module_stack" in node.meta:
            marker.meta["nn_module_stack"] = node.meta["nn_module_stack"]
        order[marker] = order[node] + 0.5
        _read_after(base, marker, order)
        versions.setdefault(base, []).append(marker)
    return versions


def _version_read_by(node: fx.Node, versions: dict[fx.Node, list[fx.Node]], path: str) -> fx.Node:
    """The value of ``node`` (itself or a later one, see :func:`follow_in_place_writes`) that module
    ``path`` reads; ``node`` if it reads none."""
    later, frontier = [], [node]
    while frontier:  # a later value may itself be written later
        found = versions.get(frontier.pop(), [])
        later += found
        frontier += found
    if len(later) > 1:
        order = {n: i for i, n in enumerate(node.graph.nodes)}
        later.sort(key=order.__getitem__)
    for version in reversed(later):
        if any(path in module_stack(user) for user in version.users):
            return version
    return node


def reread_first_arguments(
    calls: dict[str, ModuleCall], versions: dict[fx.Node, list[fx.Node]]
) -> dict[str, ModuleCall]:
    """Module calls whose first argument was recorded as a tensor written in place before the call, given
    the value the module reads."""
    return {
        path: call
        if call.first_argument not in versions
        else dataclasses.replace(call, first_argument=_version_read_by(call.first_argument, versions, path))
        for path, call in calls.items()
    }
