"""Partial least squares: VIP scores of the blocks' pooled features (Jordao et al., Neurocomputing 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..analysis import ResidualBlock
from ..errors import DataError, InvalidArgumentError
from ._common import ForwardFn
from ._registry import register_criterion
from .activation import block_statistics, pooled

__all__ = ["pls_importance", "vip_scores"]


def vip_scores(
    x: torch.Tensor,
    y: torch.Tensor,
    n_components: int = 2,
    *,
    scale: bool = True,
    max_iter: int = 500,
    tol: float = 1e-10,
) -> torch.Tensor:
    """Variable Importance in Projection of each column of ``x`` (n x p) for predicting ``y`` (n x m).

    Fits PLS2 by NIPALS (Wold et al., "PLS-regression: a basic tool of chemometrics", 2001) on
    the centred ``y`` and the centred, and with ``scale`` standardised, ``x`` (constant columns
    stay zero): per component ``a``, unit weights ``w_a``, scores ``t_a = X w_a`` and
    ``y``-loadings ``q_a``; ``X`` and ``Y`` are deflated by ``t_a``. Then
    ``VIP_j = sqrt(p * sum_a SS_a w_aj^2 / sum_a SS_a)``, ``SS_a = |t_a|^2 |q_a|^2`` the variance
    of ``y`` explained by component ``a``; so the mean of ``VIP^2`` is 1. Stops early when no
    covariance with ``y`` is left. Computed in float64; returns a float64 tensor of length p.
    """
    if x.dim() != 2 or y.dim() not in (1, 2) or x.shape[0] != y.shape[0]:
        raise InvalidArgumentError(
            f"vip_scores needs x of shape (n, p) and y of shape (n,) or (n, m), got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    if n_components < 1:
        raise InvalidArgumentError(f"n_components must be at least 1, got {n_components}")
    x = x.detach().double().cpu()
    y = y.detach().double().cpu().reshape(y.shape[0], -1)
    x = x - x.mean(0)
    y = y - y.mean(0)
    if scale:
        std = x.std(0)
        x = x / torch.where(std > 0, std, torch.ones_like(std))
    eps = torch.finfo(torch.float64).eps
    x_floor, y_floor = eps * float(x.pow(2).sum()), eps * float(y.pow(2).sum())
    weights, explained = [], []
    for _ in range(n_components):
        if float(y.pow(2).sum()) <= y_floor or float(x.pow(2).sum()) <= x_floor:
            break
        u = y[:, y.pow(2).sum(0).argmax()]
        t_old = None
        for _ in range(max_iter):
            w = x.T @ u
            if float(w.norm()) == 0.0:
                break
            w = w / w.norm()
            t = x @ w
            q = y.T @ t / (t @ t)
            u = y @ q / (q @ q)
            if t_old is not None and float((t - t_old).norm()) <= tol * float(t.norm()):
                break
            t_old = t
        if float(w.norm()) == 0.0 or float(t @ t) <= x_floor:
            break  # x has no covariance with what is left of y
        tt = t @ t
        x = x - torch.outer(t, x.T @ t / tt)
        y = y - torch.outer(t, q)
        weights.append(w)
        explained.append(tt * (q @ q))
    if not weights:
        raise InvalidArgumentError("vip_scores: x has no covariance with y (constant features or targets)")
    w2 = torch.stack(weights, 1).pow(2)
    ss = torch.stack(explained)
    return torch.sqrt(x.shape[1] * (w2 @ ss) / ss.sum())


@register_criterion("pls", requires_data=True, gradient_based=False, source="builtin")
def pls_importance(
    model: nn.Module,
    blocks: Sequence[ResidualBlock],
    data: Any,
    *,
    num_batches: int | None = 4,
    n_components: int = 2,
    progress: bool = True,
    forward_fn: ForwardFn | None = None,
) -> dict[str, float]:
    """PLS (Jordao et al., "Deep Network Compression based on Partial Least Squares", Neurocomputing 2020).

    Each block's output is globally average pooled to one feature per channel (tokens: the
    mean token); the features of all scored blocks, over the images of ``num_batches``
    batches (``None``: all of ``data``), are standardised and regressed on the one-hot labels
    with ``n_components``-component PLS (:func:`vip_scores`). Importance of a block = the mean
    VIP score of its features; the paper scores single filters this way. Needs a trained
    model, labelled batches with at least two classes and more images than a handful: ``(x, y)``
    pairs or dicts of keyword arguments with the class ids under ``"labels"`` (run without them;
    ``forward_fn(model, batch)`` runs other forms); no gradients. Runs in eval mode; the model is
    left exactly as it was. Higher = keep.
    """
    if not blocks:
        return {}
    batches = block_statistics(
        model,
        blocks,
        data,
        lambda out, _: pooled(out).double().cpu(),
        num_batches=num_batches,
        criterion="pls",
        progress=progress,
        with_targets=True,
        forward_fn=forward_fn,
    )
    labels = torch.cat([y.detach().cpu().reshape(-1) for y, _ in batches if y is not None])
    if labels.is_floating_point() or labels.numel() != sum(stats[blocks[0].name].shape[0] for _, stats in batches):
        raise DataError("pls needs integer class targets of shape (batch,)")
    classes, index = torch.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise DataError(
            f"pls needs labels of at least two classes, but every image is of class {int(classes[0])}; "
            "pass more (or shuffled) batches"
        )
    features = [torch.cat([stats[b.name] for _, stats in batches]) for b in blocks]
    vip = vip_scores(torch.cat(features, 1), F.one_hot(index).double(), n_components)
    return {b.name: float(v.mean()) for b, v in zip(blocks, vip.split([f.shape[1] for f in features]), strict=True)}
