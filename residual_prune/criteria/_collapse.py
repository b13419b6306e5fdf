"""Detect branches whose gradient scores collapse at initialization."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

from torch import nn

from ..analysis import ResidualBlock
from ..errors import ScoreCollapseWarning

__all__ = ["collapse_causes", "warn_if_collapsed"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
TINY = 1e-4


def collapse_causes(model: nn.Module, blocks: Sequence[ResidualBlock]) -> dict[str, str]:
    """Block name -> the parameter that zeroes its branch's gradients (zero norm or tiny layer scale)."""
    causes = {}
    for block in blocks:
        for module_name in block.modules or (block.name,):
            cause = _switched_off(model.get_submodule(module_name), module_name)
            if cause:
                causes[block.name] = cause
                break
        for name in block.direct_parameters:
            if block.name not in causes and float(model.get_parameter(name).detach().abs().max()) <= TINY:
                causes[block.name] = f"`{name}` is at most {TINY:g} in magnitude (a tiny layer scale)"
    return causes


def _switched_off(module: nn.Module, module_name: str) -> str | None:
    """Describe a zero-initialised norm or a tiny layer scale inside ``module``, if there is one."""
    for name, sub in module.named_modules():
        prefix = f"{module_name}.{name}" if name else module_name
        # only norms' weights are read: reading a parametrized conv's weight would run its parametrization
        weight = getattr(sub, "weight", None) if isinstance(sub, _NORMS) else None
        if weight is not None and weight.numel() and not weight.detach().any():
            return f"`{prefix}.weight` is all zeros (a zero-initialised norm layer)"
        if isinstance(sub, (_NORMS, nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention)):
            continue
        for pname, p in sub.named_parameters(recurse=False):
            if p.numel() and float(p.detach().abs().max()) <= TINY:
                return f"`{prefix}.{pname}` is at most {TINY:g} in magnitude (a tiny layer scale)"
    return None


def warn_if_collapsed(
    model: nn.Module, blocks: Sequence[ResidualBlock], scores: Mapping[str, float], criterion: str
) -> bool:
    """Warn with :class:`ScoreCollapseWarning` when gradient scores carry no ranking; return whether it did."""
    causes = collapse_causes(model, blocks)
    if causes:
        name, cause = next(iter(causes.items()))
        warnings.warn(
            f"{len(causes)} of {len(blocks)} blocks have a branch that is switched off at initialization, e.g. "
            f"{name}: {cause}. Their {criterion!r} scores collapse to (near) zero, so the ranking is noise. "
            "Fix: build the model with zero_init_last=False (timm) / zero_init_residual=False (torchvision) or "
            "a larger layer-scale init (e.g. ls_init_value=1.0), score after some training, or use a criterion "
            "that does not rely on gradients ('l1', 'random').",
            ScoreCollapseWarning,
            stacklevel=3,
        )
        return True
    if scores and all(v == 0 for v in scores.values()):
        warnings.warn(
            f"every {criterion!r} score is exactly zero, so the ranking is noise; check that the blocks' "
            "branches are not switched off (zero-initialised norms, zero layer scales) and that the data "
            "reaches them.",
            ScoreCollapseWarning,
            stacklevel=3,
        )
        return True
    return False
