"""Find the residual units of a captured network and decide which can be removed.

A *residual join* is an addition (``a + b``, ``+=``, ``torch.add``, ``Tensor.add``/``add_``)
of two tensors of the output's shape that share an ancestor, the *fork*. The side that
reaches the join through identities only, else through fewer operations, is the *shortcut*,
the other the *branch*.
The *unit* of a join is the innermost module whose forward holds the join, its branch
and its shortcut. A unit can be removed when its part of the network becomes the identity
without it: it is called once, as ``out = block(x, ...)``, keeps the shape of ``x``, and its
main path runs only through identity shortcuts and parameter-free steps that give ``x`` back
(the full list: :mod:`residual_prune.analysis.rules`). A policy adds optional rules
(:mod:`residual_prune.analysis.policies`).

Sums of parallel paths without an identity side (e.g. inside an attention module) are
not residual units and are not reported when they lie inside another unit; neither are
parameter-free modules written with an addition (e.g. a hand-written GELU).

Modules, one job each: ``graph`` (the graph index), ``joins`` (joins and their units),
``rules`` (removability rules), ``policies`` (named sets of optional rules), ``sublayers``
(single residual branches), ``results`` (what is reported).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from torch import nn

from ..capture import capture
from ..granularity import get_granularity
from .graph import GraphIndex
from .joins import Unit, find_joins, joins_by_unit
from .policies import POLICIES, Policy, get_policy, protect_downsampling
from .results import ResidualBlock
from .rules import UNIT_RULES, UnitContext, first_failure
from .sublayers import BranchEnds, Sublayer, sublayers

__all__ = [
    "POLICIES",
    "Analysis",
    "Policy",
    "BranchEnds",
    "ResidualBlock",
    "Sublayer",
    "analyse",
    "discover",
    "find_blocks",
    "report",
    "sublayers",
]


@dataclasses.dataclass
class Analysis:
    """Block discovery's view of a traced model: the graph and its residual units in execution order."""

    graph: GraphIndex
    units: list[Unit]


def analyse(
    model: nn.Module,
    inputs: Any,
    *,
    policy: str = "default",
    leaf_modules: Iterable[type[nn.Module]] = (),
    count_flops: bool = False,
    training: bool = False,
    frontend: str = "auto",
) -> Analysis:
    """Capture ``model`` and find its residual units (the work behind :func:`find_blocks`);
    ``training=True`` analyses its train-mode graph (see :func:`~residual_prune.tracing.trace`)."""
    chosen = get_policy(policy)
    traced = capture(
        model,
        inputs,
        frontend=frontend,
        leaf_modules=leaf_modules,
        count_flops=count_flops,
        training=training,
    )
    graph = GraphIndex(traced)
    joins = find_joins(graph)
    all_joins = {graph.index[j.node]: j for j in joins}
    units = []
    for name, unit_joins in joins_by_unit(model, graph, joins).items():
        context = UnitContext(graph, name, unit_joins, all_joins, chosen)
        reason = first_failure(UNIT_RULES, context)
        inp, out = context.endpoints()
        last = max(graph.index[j.node] for j in unit_joins)
        units.append(Unit(name, unit_joins, reason, inp, out if out is not None else last))
    protect_downsampling(chosen, units, graph)
    units.sort(key=lambda u: u.out)
    return Analysis(graph, units)


def report(model: nn.Module, analysis: Analysis, granularity: str) -> list[ResidualBlock]:
    """The :class:`ResidualBlock` of every unit (or residual branch) of an analysis, in execution order."""
    return get_granularity(granularity).report(model, analysis)


def discover(
    model: nn.Module,
    example_inputs: Any,
    *,
    policy: str = "default",
    leaf_modules: Iterable[type[nn.Module]] = (),
    granularity: str = "block",
    count_flops: bool = True,
    frontend: str = "auto",
) -> tuple[Analysis, list[ResidualBlock]]:
    """:func:`find_blocks`, also returning the analysis behind it (for callers that go on to prune)."""
    strategy = get_granularity(granularity)
    analysis = analyse(
        model,
        example_inputs,
        policy=policy,
        leaf_modules=leaf_modules,
        count_flops=count_flops,
        frontend=frontend,
    )
    return analysis, strategy.report(model, analysis)


def find_blocks(
    model: nn.Module,
    example_inputs: Any,
    *,
    policy: str = "default",
    leaf_modules: Iterable[type[nn.Module]] = (),
    granularity: str = "block",
    count_flops: bool = True,
    frontend: str = "auto",
) -> list[ResidualBlock]:
    """Capture ``model``'s graph and report one :class:`ResidualBlock` per residual unit.

    Args:
        model: any ``nn.Module`` that torch.fx or torch.export can capture (timm's and
            torchvision's not-trace registrations are used by torch.fx), also one built on the
            ``meta`` device (torch.export only: nothing is computed).
        example_inputs: what the model is called with: a tensor, a tuple of positional
            arguments (tensors or lists of tensors), or a dict of keyword arguments
            (``model(**example_inputs)``, as Hugging Face models take ``input_ids``); used for
            shapes and FLOPs (torch.fx runs the model once, under ``no_grad`` in eval mode;
            torch.export runs it on fake tensors).
        policy: ``"default"`` or ``"paper"`` (see :mod:`residual_prune.analysis.policies`).
        leaf_modules: extra module classes to keep opaque while tracing with torch.fx.
        granularity: ``"block"`` (module-level units) or ``"sublayer"``: each residual branch
            on its own, named ``"<unit>#<k>"`` for the k-th addition of the unit (e.g. the
            attention and the MLP branch of a transformer block, ``blocks.3#0`` and
            ``blocks.3#1``); removing one rewrites the traced graph.
        count_flops: count each unit's FLOPs (fvcore's convention: a multiply-add is one
            FLOP) in the same pass; ``False`` reports ``flops=None`` and saves that time.
        frontend: ``"auto"`` (torch.fx where it applies, then torch.export, then eager), ``"fx"``,
            ``"export"`` (non-strict), ``"export-strict"`` or ``"eager"`` (one real run recorded); each
            block records which one found it.
            ``granularity="sublayer"`` needs torch.fx.

    Returns:
        The units in execution order, removable or not; ``reason`` says why not.
            A model without residual joins (VGG, AlexNet) gives an empty list.
    """
    return discover(
        model,
        example_inputs,
        policy=policy,
        leaf_modules=leaf_modules,
        granularity=granularity,
        count_flops=count_flops,
        frontend=frontend,
    )[1]
