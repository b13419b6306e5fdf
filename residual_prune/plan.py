"""The pruning plan: which blocks go, why, and for which architecture. Saved as JSON, never pickled."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CorruptPlanError, PlanError, PlanMismatchError
from .files import atomic_path

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
            (k, tuple(v.shape))
            for k, v in module._buffers.items()
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


def _corrupt(source: str, why: str) -> CorruptPlanError:
    return CorruptPlanError(
        f"{source} is not a valid residual_prune plan: {why}. Re-create it with "
        "plan_pruning(...).save(path) or `residual-prune prune ... --out DIR`."
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond float range
        return False


def _field_problem(plan: PruningPlan) -> str | None:
    """What is wrong with a plan's fields, in words, or None."""
    from .analysis import POLICIES
    from .capture import FRONTENDS
    from .granularity import GRANULARITIES
    from .inputs import ModelInputs

    removed = plan.removed
    if not (isinstance(removed, list) and all(isinstance(r, str) and r for r in removed)):
        return "'removed' must be a list of block names (non-empty strings)"
    duplicates = sorted({r for r in removed if removed.count(r) > 1})
    if duplicates:
        return f"'removed' names {', '.join(map(repr, duplicates))} more than once"
    if not (isinstance(plan.scores, dict) and all(isinstance(k, str) for k in plan.scores)):
        return "'scores' must map block names to numbers"
    bad_scores = [k for k, v in plan.scores.items() if not _is_finite_number(v)]
    if bad_scores:
        name = bad_scores[0]
        return f"'scores' must map block names to numbers, and finite ones: {name!r} has {plan.scores[name]!r}"
    for key in ("criterion", "policy", "fingerprint", "model"):
        if not isinstance(getattr(plan, key), str):
            return f"'{key}' must be a string"
    if plan.policy not in POLICIES:
        return f"'policy' must be one of {', '.join(map(repr, POLICIES))}, not {plan.policy!r}"
    if plan.granularity not in GRANULARITIES:
        return f"'granularity' must be one of {', '.join(map(repr, GRANULARITIES))}, not {plan.granularity!r}"
    if not _is_int(plan.num_params) or plan.num_params < 0:
        return "'num_params' must be a non-negative integer"
    if not isinstance(plan.criterion_kwargs, dict):
        return "'criterion_kwargs' must be an object"
    shapes = plan.input_shapes
    if not (
        isinstance(shapes, list)
        and all(isinstance(sh, list) and all(_is_int(d) and d >= 0 for d in sh) for sh in shapes)
    ):
        return "'input_shapes' must be a list of shapes (lists of non-negative integers)"
    leaves = plan.leaf_modules
    if not (isinstance(leaves, list) and all(isinstance(m, str) for m in leaves)):
        return "'leaf_modules' must be a list of 'module:Class' names"
    dtypes = plan.input_dtypes
    if not (
        isinstance(dtypes, list)
        and all(isinstance(d, str) and isinstance(vars(torch).get(d), torch.dtype) for d in dtypes)
    ) or (dtypes and shapes and len(dtypes) != len(shapes)):
        return "'input_dtypes' must name one torch dtype (e.g. 'float32', 'int64') per input shape, or be empty"
    frontends = [f for f in FRONTENDS if f != "auto"]
    if plan.frontend not in frontends:
        return f"'frontend' must be one of {', '.join(map(repr, frontends))}, not {plan.frontend!r}"
    if plan.inputs is not None:
        try:
            ModelInputs.zeros_from_json(plan.inputs, "meta")  # checks the structure; meta tensors cost nothing
        except (ValueError, RecursionError) as exc:
            return f"'inputs' must describe the model's arguments: {exc}"
    if not _is_int(plan.version) or plan.version != PLAN_VERSION:
        return f"version {plan.version!r} is not supported (this library reads version {PLAN_VERSION})"
    return None


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
        input_dtypes: dtype names of those inputs (``"int64"`` for token ids); empty in older
            plans, whose inputs are replayed as floats.
        frontend: the capture front-end the blocks were found with (``"fx"``, ``"export"``,
            ``"export-strict"`` or ``"eager"``); the plan is checked again with the same one.
        inputs: how the model was called: positional and keyword arguments with each tensor's
            shape and dtype (see :class:`~residual_prune.inputs.ModelInputs`); None in older
            plans, which replay ``input_shapes`` as positional tensors.
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
    input_dtypes: list[str] = dataclasses.field(default_factory=list)
    frontend: str = "fx"
    inputs: dict[str, Any] | None = None
    version: int = PLAN_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = {"format": PLAN_FORMAT, **dataclasses.asdict(self)}
        data["criterion_kwargs"] = _json_safe(self.criterion_kwargs)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the plan as JSON (atomically: a crash never leaves half a file).

        Raises:
            PlanError: ``path`` is a directory, a device or not writable (nothing is written).
        """
        path = Path(path)
        try:
            with atomic_path(path) as tmp:
                tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        except OSError as exc:
            raise PlanError(
                f"cannot save the plan to {str(path)!r}: {exc.strerror or exc}. Pass the path of a file (e.g. "
                "'runs/plan.json') in a folder you can write to."
            ) from exc
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = "plan") -> PruningPlan:
        """Build a plan from its JSON object, checking every field (:class:`CorruptPlanError` if one is wrong)."""
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise _corrupt(source, f"its 'format' field is not {PLAN_FORMAT!r}")
        version = data.get("version")
        if type(version) is not int or version != PLAN_VERSION:
            raise _corrupt(source, f"version {version!r} is not supported (this library reads version {PLAN_VERSION})")
        missing = [k for k in ("removed", "scores", "criterion", "policy", "fingerprint") if k not in data]
        if missing:
            raise _corrupt(source, f"it lacks the field(s) {', '.join(missing)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        plan = cls(**{k: v for k, v in data.items() if k in fields})
        plan.check_fields(source)
        return plan

    def check_fields(self, source: str = "plan") -> None:
        """Raise :class:`CorruptPlanError` unless every field has a valid type and value."""
        problem = _field_problem(self)
        if problem:
            raise _corrupt(source, problem)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PruningPlan:
        """Read a plan written by :meth:`save` (plain JSON; nothing is unpickled or imported)."""
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except OSError as exc:
            raise CorruptPlanError(
                f"cannot read plan file {str(path)!r}: {exc.strerror or exc}; pass the path of a plan.json written "
                "by plan.save(path) or `residual-prune prune ... --out DIR`"
            ) from exc
        except UnicodeDecodeError as exc:
            raise _corrupt(str(path), f"it is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _corrupt(str(path), f"it is not JSON ({exc})") from exc
        except RecursionError:
            raise _corrupt(str(path), "its JSON is nested too deeply") from None
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
