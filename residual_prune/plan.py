"""The pruning plan: which blocks go, why, and for which architecture. Saved as JSON, never pickled."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from .errors import CorruptPlanError, PlanMismatchError

__all__ = ["PruningPlan", "architecture_fingerprint", "PLAN_FORMAT", "PLAN_VERSION"]

PLAN_FORMAT = "residual_prune.plan"
PLAN_VERSION = 1


def architecture_fingerprint(model: nn.Module) -> str:
    """A hash of the module tree: every qualified name, class and parameter/persistent-buffer shape.

    Non-persistent buffers are left out: they are caches a forward may resize (ConViT's
    ``rel_indices``), not part of the architecture or of the ``state_dict``.
    """
    digest = hashlib.sha256()
    for name, module in model.named_modules():
        tensors = [(k, tuple(v.shape)) for k, v in module._parameters.items() if v is not None]
        tensors += [
            (k, tuple(v.shape)) for k, v in module._buffers.items()
            if v is not None and k not in module._non_persistent_buffers_set
        ]
        digest.update(f"{name}|{type(module).__qualname__}|{tensors}\n".encode())
    return digest.hexdigest()[:16]


def _json_safe(value: Any) -> Any:
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return repr(value)


@dataclasses.dataclass
class PruningPlan:
    """Which residual blocks to remove from a model of one architecture.

    Attributes:
        removed: qualified names of the blocks to remove, in execution order.
        scores: importance of every removable block (higher = keep).
        criterion: the criterion that produced ``scores``; ``criterion_kwargs`` its options.
        policy: the removability policy (``"default"`` or ``"paper"``).
        fingerprint: :func:`architecture_fingerprint` of the model the plan is for.
        model: class name of that model; ``num_params`` its parameter count.
        granularity: ``"block"`` (``removed`` are module names) or ``"sublayer"`` (``removed``
            are residual branches ``"<unit>#<k>"``, replayed by tracing the model on inputs of
            ``input_shapes`` with the ``leaf_modules`` classes kept opaque).
    """

    removed: list[str]
    scores: dict[str, float]
    criterion: str
    policy: str
    fingerprint: str
    model: str = ""
    num_params: int = 0
    criterion_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    granularity: str = "block"
    input_shapes: list[list[int]] = dataclasses.field(default_factory=list)
    leaf_modules: list[str] = dataclasses.field(default_factory=list)
    version: int = PLAN_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = {"format": PLAN_FORMAT, **dataclasses.asdict(self)}
        data["criterion_kwargs"] = _json_safe(self.criterion_kwargs)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the plan as JSON (atomically: a crash never leaves half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(self.to_json() + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = "plan") -> PruningPlan:
        def bad(why: str) -> CorruptPlanError:
            return CorruptPlanError(
                f"{source} is not a valid residual_prune plan: {why}. Re-create it with "
                "plan_pruning(...).save(path) or `residual-prune prune ... --out DIR`."
            )

        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise bad(f"its 'format' field is not {PLAN_FORMAT!r}")
        if data.get("version") != PLAN_VERSION:
            raise bad(f"version {data.get('version')!r} is not supported (this library reads version {PLAN_VERSION})")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        missing = [k for k in ("removed", "scores", "criterion", "policy", "fingerprint") if k not in data]
        if missing:
            raise bad(f"it lacks the field(s) {', '.join(missing)}")
        removed, scores = data["removed"], data["scores"]
        if not (isinstance(removed, list) and all(isinstance(r, str) for r in removed)):
            raise bad("'removed' must be a list of block names")
        if not (isinstance(scores, dict) and all(isinstance(v, (int, float)) for v in scores.values())):
            raise bad("'scores' must map block names to numbers")
        for key in ("criterion", "policy", "fingerprint", "model"):
            if key in data and not isinstance(data[key], str):
                raise bad(f"'{key}' must be a string")
        if not isinstance(data.get("num_params", 0), int) or not isinstance(data.get("criterion_kwargs", {}), dict):
            raise bad("'num_params' must be an integer and 'criterion_kwargs' an object")
        if data.get("granularity", "block") not in ("block", "sublayer"):
            raise bad(f"'granularity' must be 'block' or 'sublayer', not {data.get('granularity')!r}")
        shapes = data.get("input_shapes", [])
        if not (isinstance(shapes, list) and all(
            isinstance(sh, list) and all(isinstance(d, int) and d >= 0 for d in sh) for sh in shapes
        )):
            raise bad("'input_shapes' must be a list of shapes (lists of non-negative integers)")
        leaves = data.get("leaf_modules", [])
        if not (isinstance(leaves, list) and all(isinstance(m, str) for m in leaves)):
            raise bad("'leaf_modules' must be a list of 'module:Class' names")
        return cls(**{k: v for k, v in data.items() if k in fields})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PruningPlan:
        """Read a plan written by :meth:`save` (plain JSON; nothing is unpickled)."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise CorruptPlanError(f"cannot read plan file {path}: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CorruptPlanError(
                f"{path} is not a valid residual_prune plan: it is not JSON ({exc}). Re-create it with "
                "plan_pruning(...).save(path)."
            ) from exc
        return cls.from_dict(data, source=str(path))

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`PlanMismatchError` unless ``model`` has the architecture the plan was made for."""
        fingerprint = architecture_fingerprint(model)
        if fingerprint != self.fingerprint:
            params = sum(p.numel() for p in model.parameters())
            raise PlanMismatchError(
                f"this plan was made for a {self.model or 'model'} with {self.num_params:,} parameters "
                f"(architecture fingerprint {self.fingerprint}), but the model is a {type(model).__name__} with "
                f"{params:,} parameters (fingerprint {fingerprint}). Apply the plan to a freshly built, unpruned "
                "model of the architecture it was made for, or make a new plan for this model with plan_pruning()."
            )
