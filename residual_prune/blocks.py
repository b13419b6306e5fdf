"""Block discovery's public names, kept where they have always been importable from.

The code lives in the subpackage :mod:`residual_prune.analysis`: ``graph`` (the graph index),
``joins`` (residual joins and their units), ``rules`` (the removability rules), ``policies``
(named sets of optional rules), ``sublayers`` (single residual branches) and ``results``
(:class:`ResidualBlock`); granularities are in :mod:`residual_prune.granularity`.
"""

from __future__ import annotations

from .analysis import Analysis, analyse, discover, find_blocks, report
from .analysis.joins import branch_modules
from .analysis.policies import PAPER_REASON, POLICIES, Policy
from .analysis.results import ResidualBlock
from .analysis.sublayers import Sublayer, sublayers
from .granularity import GRANULARITIES

__all__ = [
    "GRANULARITIES",
    "PAPER_REASON",
    "POLICIES",
    "Analysis",
    "Policy",
    "ResidualBlock",
    "Sublayer",
    "analyse",
    "branch_modules",
    "discover",
    "find_blocks",
    "report",
    "sublayers",
]
