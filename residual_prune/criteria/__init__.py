"""Block-importance criteria: a registry plus the built-ins.

At initialization: random, l1, snip, grasp, synflow. For trained networks: hrank,
expectabs, pls, kl, block_influence, loss_drop, angular_distance.
"""

from . import activation, baseline, grasp, kl, pls, redundancy, snip, synflow  # noqa: F401  (registers the built-ins)
from ._collapse import collapse_causes, warn_if_collapsed
from ._common import scored_weights
from ._registry import (
    ENTRY_POINT_GROUP,
    Criterion,
    CriterionInfo,
    accepted_options,
    get_criterion,
    get_criterion_info,
    list_criteria,
    register_criterion,
    reload_plugins,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Criterion",
    "CriterionInfo",
    "accepted_options",
    "collapse_causes",
    "get_criterion",
    "get_criterion_info",
    "list_criteria",
    "register_criterion",
    "reload_plugins",
    "scored_weights",
    "warn_if_collapsed",
]
