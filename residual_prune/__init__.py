"""residual_prune: prune whole residual blocks from residual networks (torchvision, timm, Hugging Face, yours).

Implements "When Layers Play the Lottery, all Tickets Win at Initialization"
(Jordao, de Araujo, Maia, Pedrini): score residual blocks (at initialization with SNIP
or GraSP, or after training), remove the least important, and get a physically
shallower network.
"""

from .analysis import POLICIES, BranchEnds, ResidualBlock, find_blocks
from .api import plan_pruning, prune_layers
from .capture import FRONTENDS
from .criteria import (
    ENTRY_POINT_GROUP,
    get_criterion,
    get_criterion_info,
    list_criteria,
    register_criterion,
    reload_plugins,
)
from .errors import (
    CorruptPlanError,
    CriterionError,
    DataError,
    FlopCountWarning,
    InvalidArgumentError,
    MissingDataError,
    NoRemovableBlocksError,
    PlanError,
    PlanMismatchError,
    PluginWarning,
    PruningWarning,
    ResidualPruneError,
    ScoreCollapseWarning,
    TraceError,
    UnknownCriterionError,
    VerificationError,
)
from .inputs import ModelInputs
from .ops import register_identity_module, register_layout_module
from .plan import PruningPlan, architecture_fingerprint
from .surgery import apply_plan
from .tracing import register_notrace_function, register_notrace_module
from .verify import verify

__version__ = "0.1.0"

__all__ = [
    "ENTRY_POINT_GROUP",
    "FRONTENDS",
    "POLICIES",
    "BranchEnds",
    "CorruptPlanError",
    "CriterionError",
    "DataError",
    "FlopCountWarning",
    "PruningWarning",
    "InvalidArgumentError",
    "MissingDataError",
    "ModelInputs",
    "NoRemovableBlocksError",
    "PlanError",
    "PlanMismatchError",
    "PluginWarning",
    "PruningPlan",
    "ResidualBlock",
    "ResidualPruneError",
    "ScoreCollapseWarning",
    "TraceError",
    "UnknownCriterionError",
    "VerificationError",
    "apply_plan",
    "architecture_fingerprint",
    "find_blocks",
    "get_criterion",
    "get_criterion_info",
    "list_criteria",
    "plan_pruning",
    "prune_layers",
    "register_criterion",
    "register_identity_module",
    "register_layout_module",
    "register_notrace_function",
    "register_notrace_module",
    "reload_plugins",
    "verify",
]
