"""Representation similarity: linear CKA and the features it compares.

Linear CKA (Kornblith et al., "Similarity of Neural Network Representations Revisited",
ICML 2019) compares what two layers, of one network or of two (e.g. before and after
pruning), compute on the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .criteria.activation import pooled
from .errors import DataError, InvalidArgumentError
from .modes import preserved_state

__all__ = ["linear_cka", "representations"]


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between features ``x`` (n x d1) and ``y`` (n x d2) of the same ``n`` examples.

    ``CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc, Yc``:
    HSIC with linear kernels, normalised (Kornblith et al., ICML 2019, Eq. 5). In [0, 1], 1 for
    identical features; invariant to orthogonal transforms and isotropic scaling, not to
    arbitrary invertible ones. Inputs of shape ``(n, ...)`` are flattened to ``(n, -1)``;
    computed in float64, in feature space or on ``n x n`` Gram matrices, whichever is smaller.

    Examples:
        >>> linear_cka(torch.randn(100, 8), torch.randn(100, 8) @ torch.randn(8, 4))
    """
    if x.dim() < 2 or y.dim() < 2 or x.shape[0] != y.shape[0]:
        raise InvalidArgumentError(
            f"linear_cka needs features of the same n examples, shaped (n, d1) and (n, d2); got {tuple(x.shape)} "
            f"and {tuple(y.shape)}. Compute both on the same inputs, in the same order"
        )
    if x.shape[0] < 2:
        raise InvalidArgumentError("linear_cka needs at least two examples")
    x = x.detach().reshape(x.shape[0], -1).double()
    y = y.detach().reshape(y.shape[0], -1).to(x.device, torch.float64)
    x = x - x.mean(0)
    y = y - y.mean(0)
    if x.shape[0] < x.shape[1] + y.shape[1]:
        gx, gy = x @ x.T, y @ y.T  # <Xc Xc^T, Yc Yc^T> = ||Yc^T Xc||^2
        cross, norm_x, norm_y = (gx * gy).sum(), gx.norm(), gy.norm()
    else:
        cross, norm_x, norm_y = (y.T @ x).pow(2).sum(), (x.T @ x).norm(), (y.T @ y).norm()
    if float(norm_x) == 0.0 or float(norm_y) == 0.0:
        raise InvalidArgumentError("linear_cka is undefined for constant features (one of the inputs has no variance)")
    return float(cross / (norm_x * norm_y))


def representations(
    model: nn.Module,
    data_batches: Iterable[Any],
    layers: Sequence[str],
    *,
    pool: bool = False,
    num_batches: int | None = None,
) -> dict[str, torch.Tensor]:
    """The outputs of the named modules of ``model`` on ``data_batches``, one ``(n, d)`` tensor each.

    ``data_batches``: tensors of inputs or ``(inputs, targets)`` pairs (a DataLoader), of which
    the first ``num_batches`` (``None``: all) are used. Each output is flattened per example
    (``(n, C*H*W)``), or with ``pool=True`` globally average pooled (``(n, C)``; tokens: the mean
    token). The model runs in eval mode under ``no_grad`` and is left exactly as it was;
    the features are returned on the CPU in the model's dtype, rows in the order of the data.

    Examples:
        >>> feats = representations(model, loader, ["layer1.0", "layer3.2"], pool=True, num_batches=4)
        >>> linear_cka(feats["layer1.0"], feats["layer3.2"])
    """
    if isinstance(layers, str):
        layers = [layers]
    names = dict(model.named_modules())
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise InvalidArgumentError(
            f"{type(model).__name__} has no module named {unknown}; use qualified names from "
            f"model.named_modules(), e.g. {[n for n in names if n][:5]}"
        )
    if num_batches is not None and num_batches < 1:
        raise InvalidArgumentError(f"num_batches must be at least 1, got {num_batches}")
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    seen: set[str] = set()

    def hook(name: str):
        def keep(module: nn.Module, args: Any, output: Any) -> None:
            if name in seen:
                raise InvalidArgumentError(f"module {name!r} runs more than once per forward pass; pick another layer")
            seen.add(name)
            if isinstance(output, (tuple, list)) and output:
                output = output[0]
            if not isinstance(output, torch.Tensor):
                raise InvalidArgumentError(f"module {name!r} returns a {type(output).__name__}, not a tensor")
            features = pooled(output) if pool else output.reshape(output.shape[0], -1)
            collected[name].append(features.detach().cpu())

        return keep

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    handles = [names[name].register_forward_hook(hook(name)) for name in dict.fromkeys(layers)]
    try:
        with preserved_state(model, "eval"), torch.no_grad():
            for i, batch in enumerate(data_batches):
                if num_batches is not None and i >= num_batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
                if not isinstance(x, torch.Tensor):
                    raise DataError(f"batch {i} is a {type(batch).__name__}; pass tensors or (inputs, targets) pairs")
                seen.clear()
                model(x.to(device))
    finally:
        for handle in handles:
            handle.remove()
    if not any(collected.values()):
        raise DataError("data_batches gave no batches; pass tensors of inputs or (inputs, targets) pairs")
    silent = [name for name in collected if not collected[name]]
    if silent:
        raise InvalidArgumentError(f"module(s) {silent} did not run in the model's forward pass")
    return {name: torch.cat(collected[name]) for name in layers}
