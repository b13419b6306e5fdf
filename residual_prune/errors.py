"""The library's exception hierarchy: every error says what to do next.

All exceptions derive from :class:`ResidualPruneError`. Argument errors also derive
from :class:`ValueError` and type errors from :class:`TypeError`, so code written
against the standard exceptions keeps working.
"""

from __future__ import annotations

__all__ = [
    "ResidualPruneError",
    "TraceError",
    "NoRemovableBlocksError",
    "InvalidArgumentError",
    "UnknownCriterionError",
    "CriterionError",
    "MissingDataError",
    "DataError",
    "PlanError",
    "PlanMismatchError",
    "CorruptPlanError",
    "VerificationError",
    "ScoreCollapseWarning",
    "PluginWarning",
    "FlopCountWarning",
    "PruningWarning",
]


class ResidualPruneError(Exception):
    """Base class of every error raised by ``residual_prune``."""


class TraceError(ResidualPruneError):
    """The model could not be traced with ``torch.fx``."""


class NoRemovableBlocksError(ResidualPruneError):
    """The model has no residual block that can be removed."""


class InvalidArgumentError(ResidualPruneError, ValueError):
    """An argument has a value the library cannot work with."""


class UnknownCriterionError(InvalidArgumentError, KeyError):
    """No criterion of that name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CriterionError(ResidualPruneError):
    """A criterion failed or returned unusable scores."""


class MissingDataError(CriterionError, ValueError):
    """A data-driven criterion was called without data."""


class DataError(ResidualPruneError, ValueError):
    """Data batches do not have the expected form or do not fit the model."""


class PlanError(ResidualPruneError):
    """Base class of the errors about pruning plans."""


class PlanMismatchError(PlanError, ValueError):
    """A plan was applied to a model of another architecture."""


class CorruptPlanError(PlanError, ValueError):
    """A plan file is not valid JSON or not a residual_prune plan."""


class VerificationError(ResidualPruneError, AssertionError):
    """The pruned model does not equal the original with its removed blocks as identities."""


class ScoreCollapseWarning(UserWarning):
    """Gradient-based scores are zero or near zero for every block, so a ranking is noise."""


class PluginWarning(UserWarning):
    """A third-party criterion plugin could not be loaded."""


class PruningWarning(UserWarning):
    """The pruned model is what the plan says, but not in the form asked for (layers bypassed, not deleted)."""


class FlopCountWarning(UserWarning):
    """The FLOPs of a model could not be counted (they are reported as None; pruning is not affected)."""
