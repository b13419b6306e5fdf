"""Structured (filter) pruning at initialization with torch-pruning, to a given number of filters.

The counterpart of layer pruning in Table 3: the dense network's filters (conv output channels) are
scored at initialization with the same criteria and calibration batch as the blocks of Algorithm 2,

* ``snip``: ``|w * dL/dw|`` (SNIP's connection sensitivity; first-order Taylor, as
  ``tp.importance.TaylorImportance``),
* ``grasp``: ``w * Hg`` with ``g = dL_T/dw`` and ``L_T`` the cross-entropy of ``logits / 200``
  (GraSP's score is ``S = -w * Hg`` and GraSP removes the highest ``S``, so the importance that
  torch-pruning keeps the highest of is ``-S``; ``residual_prune``'s GraSP block scores use the same sign),

summed over every weight a filter group removes (the filter's own kernels and the input slices of the
layers that read it, across the layers coupled by residual additions). torch-pruning prunes the same
fraction of the channels of every group; that fraction is bisected until the network keeps the
number of filters closest to the target (e.g. the filters of a layer-pruned ticket).
"""

from __future__ import annotations

import math

import torch
import torch_pruning as tp
from torch import nn

from benchmarks.speed import bisect_ratio, torch_prune
from residual_prune.criteria._common import classification_loss, scored_weights
from residual_prune.modes import eval_mode, preserved_state

__all__ = [
    "IMPORTANCES",
    "ScoreImportance",
    "conv_widths",
    "count_filters",
    "filter_prune",
    "filter_scores",
    "prune_to_filters",
]

IMPORTANCES = ("snip", "grasp")
GRASP_TEMPERATURE = 200.0  # as residual_prune's GraSP and the reference code

_OUT = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
_IN = (tp.prune_conv_in_channels, tp.prune_linear_in_channels)


def count_filters(model: nn.Module) -> int:
    """The filters of ``model``: the output channels of all its ``Conv2d`` layers."""
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))


def filter_scores(
    model: nn.Module, importance: str, batch: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Per-weight importance (higher = keep) of every Conv/Linear weight of ``model`` on one labelled
    ``batch``, by module name: ``snip`` ``|w * g|``, ``grasp`` ``w * Hg`` (= minus GraSP's score).
    BN uses batch statistics; the model is left exactly as it was."""
    if importance not in IMPORTANCES:
        raise ValueError(f"importance must be one of {IMPORTANCES}, got {importance!r}")
    names = {
        id(m.weight): name for name, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
    }
    flat = [w for w in scored_weights(model) if id(w) in names]
    x, y = batch
    with preserved_state(model, "train", needs_grad=flat):
        if importance == "snip":
            grads = torch.autograd.grad(classification_loss(model, x, y, 0), flat)
            scores = [(w.detach() * g).abs() for w, g in zip(flat, grads, strict=True)]
        else:
            grads = torch.autograd.grad(classification_loss(model, x, y, 0, GRASP_TEMPERATURE), flat, create_graph=True)
            z = sum((g.detach() * g).sum() for g in grads)
            hg = torch.autograd.grad(z, flat)
            scores = [w.detach() * h for w, h in zip(flat, hg, strict=True)]
    return {names[id(w)]: s.detach() for w, s in zip(flat, scores, strict=True)}


class ScoreImportance(tp.importance.Importance):
    """torch-pruning importance from precomputed per-weight scores: for each channel of a group, the sum of
    the scores of the Conv/Linear weights that pruning the channel removes (output filters and input
    slices). ``scores`` maps modules (of the network being pruned) to tensors shaped like their weights."""

    def __init__(self, scores: dict[nn.Module, torch.Tensor]):
        self.scores = scores

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor | None:
        total: torch.Tensor | None = None
        for item in group:
            layer, handler, idxs = item.dep.target.module, item.dep.handler, item.idxs
            score = self.scores.get(layer)
            if score is None or any(r is None for r in item.root_idxs):
                continue
            transposed = getattr(layer, "transposed", False)
            if handler in _OUT:
                per_channel = (score.transpose(0, 1) if transposed else score).flatten(1).sum(1)
            elif handler in _IN:
                per_channel = (score if transposed else score.transpose(0, 1)).flatten(1).sum(1)
                groups = getattr(layer, "groups", 1)
                if handler == tp.prune_conv_in_channels and groups not in (1, layer.in_channels):
                    per_channel = per_channel.repeat(groups)
            else:
                continue
            if total is None:
                total = torch.zeros(len(group[0].idxs), dtype=torch.float64)
            total.scatter_add_(0, torch.tensor(item.root_idxs), per_channel[idxs].double().cpu())
        return None if total is None else total.float()


def prune_to_filters(
    model: nn.Module,
    importance: str,
    target_filters: int,
    batch: tuple[torch.Tensor, torch.Tensor],
    *,
    steps: int | None = None,
    high: float = 0.95,
) -> tuple[nn.Module, float]:
    """``(filter-pruned copy of model, pruning ratio)`` keeping the reachable number of filters closest to
    ``target_filters``: ``steps`` bisection steps of torch-pruning's per-group ratio in ``[0, high]``.
    The count changes only where ``ratio * channels`` of some layer crosses an integer (every
    ``1 / widest`` where the widths divide the widest, as 16/32/64 in CIFAR ResNets), so by default the
    bisection runs until its step is below ``1 / (4 * widest)``: its last candidates on either side of
    the target are then the closest reachable counts. ``model`` is not changed (scored on ``batch``
    once; torch-pruning traces copies in eval mode)."""
    if steps is None:
        widest = max(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
        steps = math.ceil(math.log2(4 * high * widest))
    scores = filter_scores(model, importance, batch)
    example = batch[0][:1]

    def importance_of(copy_: nn.Module) -> ScoreImportance:
        return ScoreImportance({copy_.get_submodule(name): s for name, s in scores.items()})

    with eval_mode(model):  # the tracing forward pass must not move the copies' BN running statistics
        pruned, ratio = bisect_ratio(
            lambda r: torch_prune(model, example, r, importance_of),
            count_filters,
            target_filters,
            high=high,
            steps=steps,
        )
        x = batch[0][:2]
        with torch.no_grad():
            expected, got = model(x).shape, pruned(x).shape
    if got != expected:
        raise RuntimeError(f"torch-pruning broke the network: output {tuple(got)} instead of {tuple(expected)}")
    pruned.train(model.training)
    return pruned, ratio


def filter_prune(
    model: nn.Module, importance: str, target_filters: int, batch: tuple[torch.Tensor, torch.Tensor], **kwargs
) -> nn.Module:
    """A filter-pruned copy of ``model`` with about ``target_filters`` filters (see :func:`prune_to_filters`)."""
    return prune_to_filters(model, importance, target_filters, batch, **kwargs)[0]


def conv_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every Conv2d, by name (what a filter-pruned network kept where)."""
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
