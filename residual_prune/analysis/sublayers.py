"""Sub-layers: the residual branches of the units, each on its own (``granularity="sublayer"``).

The k-th addition of unit ``u``, in graph order, is the sub-layer ``"u#k"`` (the name plans use).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .joins import Join, Unit
from .rules import SUBLAYER_RULES, SublayerContext, first_failure

if TYPE_CHECKING:
    from . import Analysis

__all__ = ["Sublayer", "sublayers"]


@dataclasses.dataclass
class Sublayer:
    """One residual branch: the ``index``-th addition of ``unit``, with why it cannot go (None if it can)."""

    unit: Unit
    index: int
    join: Join
    reason: str | None

    @property
    def name(self) -> str:
        return f"{self.unit.name}#{self.index}"


def sublayers(analysis: Analysis) -> list[Sublayer]:
    """Every residual addition of the reported units, in execution order, with why it cannot go."""
    graph, found = analysis.graph, []
    for unit in analysis.units:
        for k, join in enumerate(sorted(unit.joins, key=lambda j: graph.index[j.node])):
            reason = first_failure(SUBLAYER_RULES, SublayerContext(graph, join, unit=unit))
            found.append(Sublayer(unit, k, join, reason))
    found.sort(key=lambda sub: graph.index[sub.join.node])
    return found
