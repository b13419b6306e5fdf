"""The index block discovery reads a captured graph through: node positions, ancestor sets as integer
bitsets, and the nodes each module makes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch.fx as fx

from ..tracing import TracedModel

__all__ = ["GraphIndex", "bits"]


def bits(x: int) -> Iterator[int]:
    """The positions of the set bits of ``x``, lowest first."""
    while x:
        low = x & -x
        yield low.bit_length() - 1
        x ^= low


class GraphIndex:
    """Index of a captured graph: node positions and ancestor sets as integer bitsets."""

    def __init__(self, traced: TracedModel):
        self.traced = traced
        self.nodes = traced.nodes
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.ops = traced.ops
        self.ancestors: list[int] = []  # through value edges: a shape read (x.shape) does not count
        self.data = 0  # nodes whose values depend on the example inputs (not on defaulted arguments)
        inputs = set(traced.inputs)
        for i, node in enumerate(self.nodes):
            values = [self.index[a] for a in node.all_input_nodes if "tensor_meta" in a.meta]
            ancestors = 1 << i
            for j in values:
                ancestors |= self.ancestors[j]
            self.ancestors.append(ancestors)
            if node in inputs or ("tensor_meta" in node.meta and any(self.data >> j & 1 for j in values)):
                self.data |= 1 << i
        self.stacks = [TracedModel.module_stack(n) for n in self.nodes]
        self._made_by: dict[str, int] = {}
        for i, stack in enumerate(self.stacks):
            for path in stack:
                self._made_by[path] = self._made_by.get(path, 0) | 1 << i

    def made_by(self, path: str) -> int:
        """The nodes the module ``path`` makes, as a bitset."""
        return self._made_by.get(path, 0)

    def inside(self, path: str) -> set[int]:
        """Positions of the nodes the module ``path`` makes."""
        return set(bits(self.made_by(path)))

    def is_ancestor(self, a: int, b: int) -> bool:
        return bool(self.ancestors[b] >> a & 1)

    def between(self, fork: int, end: int) -> list[int]:
        """Nodes after ``fork`` on the paths from ``fork`` to ``end`` (``end`` included)."""
        return [i for i in bits(self.ancestors[end]) if i != fork and self.ancestors[i] >> fork & 1]

    def carries_tensor(self, i: int) -> bool:
        return "tensor_meta" in self.nodes[i].meta

    def data_inputs(self, node: fx.Node) -> list[int]:
        """Positions of the inputs of ``node`` whose values depend on the example inputs."""
        return [self.index[a] for a in node.all_input_nodes if self.data >> self.index[a] & 1]

    def shape(self, i: int) -> tuple[int, ...] | None:
        return self.traced.shapes[self.nodes[i]]

    def describe(self, nodes: Iterable[int]) -> str:
        """The first three distinct labels of ``nodes``, as code, for reasons: ``"`conv1`, `bn1`, ..."``."""
        names: list[str] = []
        for i in nodes:
            label = self.ops.label(self.nodes[i])
            if label not in names:
                names.append(label)
        return ", ".join(f"`{n}`" for n in names[:3]) + (", ..." if len(names) > 3 else "")
