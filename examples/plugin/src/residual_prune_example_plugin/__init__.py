"""An example third-party criterion for residual_prune, registered through an entry point.

``pyproject.toml`` declares, in the entry-point group ``residual_prune.criteria``::

    param_count = "residual_prune_example_plugin:param_count_importance"

so after ``pip install ./examples/plugin`` the criterion is listed by
``residual_prune.list_criteria()`` and usable as ``criterion="param_count"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["param_count_importance"]
__version__ = "0.1"


def param_count_importance(model: Any, blocks: Sequence[Any], data: Any = None) -> Mapping[str, float]:
    """Example criterion: a block's importance is its number of parameters.

    This is a demonstration of the plugin interface, not a good pruning criterion: it
    removes the smallest blocks first (a size-greedy baseline that ignores the data).

    A criterion is called as ``fn(model, blocks, data, **options)`` with the removable
    :class:`residual_prune.ResidualBlock` objects and returns ``{block.name: importance}``
    for every one of them; higher means keep. Its options are the keyword arguments the
    user passes to ``plan_pruning``; this one takes none, so a misspelt option is rejected
    instead of silently ignored. The attributes ``requires_data`` and ``gradient_based``
    below tell the registry what the criterion needs.
    """
    return {block.name: float(block.params) for block in blocks}


param_count_importance.requires_data = False
param_count_importance.gradient_based = False
