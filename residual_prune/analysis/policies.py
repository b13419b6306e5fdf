"""Removability policies: named sets of optional rules, applied on top of the rules every unit meets.

The optional rules:

* ``"norm-free-main-path"``: a unit's main path may not run through normalization layers,
  so a post-norm unit (``LayerNorm(x + f(x))``, as in BERT) is kept,
* ``"protect-downsampling"``: the units right before and after a downsampling (a unit or layer
  that changes the shape) are kept, the conservative rule of Jordao et al., Appendix A.1.

``"default"`` applies neither, ``"paper"`` both.
"""

from __future__ import annotations

import dataclasses

from ..errors import InvalidArgumentError
from .graph import GraphIndex
from .joins import Unit

__all__ = [
    "NORM_FREE_MAIN_PATH",
    "PAPER_REASON",
    "POLICIES",
    "PROTECT_DOWNSAMPLING",
    "Policy",
    "get_policy",
    "protect_downsampling",
]

NORM_FREE_MAIN_PATH = "norm-free-main-path"
PROTECT_DOWNSAMPLING = "protect-downsampling"
PAPER_REASON = "policy='paper' protects the units right before and after a downsampling (Jordao et al., Appendix A.1)"


@dataclasses.dataclass(frozen=True)
class Policy:
    """A removability policy: the optional rules (see the module docstring) it applies on top of the
    rules every unit meets."""

    name: str
    rules: frozenset[str] = frozenset()

    def applies(self, rule: str) -> bool:
        return rule in self.rules


_POLICIES = {
    policy.name: policy
    for policy in (
        Policy("default"),
        Policy("paper", frozenset({NORM_FREE_MAIN_PATH, PROTECT_DOWNSAMPLING})),
    )
}
POLICIES = tuple(_POLICIES)
"""The removability policies: ``"default"`` removes every unit that meets the rules (post-norm units
included), ``"paper"`` keeps normalization off the main path and protects the units next to every
downsampling (see :mod:`residual_prune.analysis.policies`)."""


def get_policy(name: str) -> Policy:
    """The policy called ``name``; :class:`InvalidArgumentError` if there is none."""
    if name not in POLICIES:
        raise InvalidArgumentError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    return _POLICIES[name]


def _next_to_downsampling(units: list[Unit], graph: GraphIndex) -> list[Unit]:
    """Units right before or after a downsampling (Jordao et al., Appendix A.1)."""
    placed = sorted(((u, u.inp) for u in units if u.inp is not None), key=lambda pair: pair[0].out)
    protected: dict[str, Unit] = {}
    for u, u_inp in placed:
        before = [(p, p_inp) for p, p_inp in placed if p is not u and graph.is_ancestor(p.out, u_inp)]
        if not before:
            continue
        p, p_inp = max(before, key=lambda pair: pair[0].out)
        p_in, p_out = graph.shape(p_inp), graph.shape(p.out)
        u_in, u_out = graph.shape(u_inp), graph.shape(u.out)
        if p_in != p_out or p_out != u_in or u_in != u_out:  # a downsampling in, between or after
            protected.update({u.name: u, p.name: p})
    return list(protected.values())


def protect_downsampling(policy: Policy, units: list[Unit], graph: GraphIndex) -> None:
    """Keep the otherwise removable units next to a downsampling, if ``policy`` applies that rule."""
    if not policy.applies(PROTECT_DOWNSAMPLING):
        return
    for unit in _next_to_downsampling(units, graph):
        if unit.reason is None:
            unit.reason = PAPER_REASON
