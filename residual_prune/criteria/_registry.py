"""Registry of block-importance criteria, in the style of timm's model registry.

A criterion is a callable ``(model, blocks, data, **kwargs) -> Mapping[str, float]``
that gives every block it is handed (the removable ones) an importance: higher means
keep. Third-party criteria are found through the entry-point group
``residual_prune.criteria``; a plugin that fails to load is reported with a
:class:`~residual_prune.errors.PluginWarning` and does not affect the built-ins.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import warnings
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from ..errors import InvalidArgumentError, PluginWarning, UnknownCriterionError

__all__ = [
    "Criterion",
    "CriterionInfo",
    "ENTRY_POINT_GROUP",
    "register_criterion",
    "list_criteria",
    "get_criterion",
    "get_criterion_info",
    "reload_plugins",
    "accepted_options",
]

ENTRY_POINT_GROUP = "residual_prune.criteria"
"""The entry-point group through which installed packages add criteria (``name = package.module:callable``)."""

Criterion = Callable[..., Mapping[str, float]]


@dataclasses.dataclass(frozen=True)
class CriterionInfo:
    """A registered criterion and what it needs.

    ``requires_data``: needs labelled batches ``(x, y)``. ``gradient_based``: its scores
    come from gradients, so they collapse when branches end in zero-initialised norms
    or tiny layer scales. ``reads_weights``: reads weight values, so it cannot score a model
    built on the ``meta`` device. ``source``: ``"builtin"``, ``"user"`` or the plugin's entry point.
    """

    name: str
    fn: Criterion
    requires_data: bool = False
    gradient_based: bool = False
    source: str = "user"
    reads_weights: bool = True


_registry: dict[str, CriterionInfo] = {}
_plugins_loaded = False


def register_criterion(
    name: str,
    *,
    requires_data: bool | None = None,
    gradient_based: bool | None = None,
    overwrite: bool = False,
    source: str = "user",
    reads_weights: bool | None = None,
) -> Callable[[Criterion], Criterion]:
    """Decorator that registers a criterion under ``name``.

    ``requires_data``, ``gradient_based`` and ``reads_weights`` default to the callable's
    attributes of the same name (so plugins can declare them on the function), else ``False``,
    ``False`` and ``True``.

    Examples:
        >>> @register_criterion("param_count")
        ... def param_count(model, blocks, data, **kwargs):
        ...     return {b.name: float(b.params) for b in blocks}
    """
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"a criterion name must be a non-empty string, got {name!r}")

    def decorator(fn: Criterion) -> Criterion:
        if not callable(fn):
            raise InvalidArgumentError(f"criterion {name!r} must be callable, got {type(fn).__name__}")
        if name in _registry and not overwrite:
            raise InvalidArgumentError(
                f"a criterion named {name!r} is already registered (from {_registry[name].source}); "
                "choose another name or pass overwrite=True"
            )
        _registry[name] = CriterionInfo(
            name=name,
            fn=fn,
            requires_data=bool(getattr(fn, "requires_data", False) if requires_data is None else requires_data),
            gradient_based=bool(getattr(fn, "gradient_based", False) if gradient_based is None else gradient_based),
            source=source,
            reads_weights=bool(getattr(fn, "reads_weights", True) if reads_weights is None else reads_weights),
        )
        return fn

    return decorator


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _registry and _registry[ep.name].source == "builtin":
            warnings.warn(
                f"criterion plugin {ep.name!r} ({ep.value}) has the name of a built-in criterion and is "
                "ignored; rename its entry point",
                PluginWarning,
                stacklevel=3,
            )
            continue
        try:
            fn = ep.load()
            register_criterion(ep.name, overwrite=True, source=f"plugin {ep.value}")(fn)
        except Exception as exc:  # a broken plugin must not break the library
            warnings.warn(
                f"could not load criterion plugin {ep.name!r} ({ep.value}) from entry-point group "
                f"{ENTRY_POINT_GROUP!r}: {type(exc).__name__}: {exc}. The other criteria still work; "
                "fix or uninstall that plugin.",
                PluginWarning,
                stacklevel=3,
            )


def reload_plugins() -> None:
    """Look for entry-point plugins again (e.g. after installing one in a running session)."""
    global _plugins_loaded
    for name in [n for n, info in _registry.items() if info.source.startswith("plugin ")]:
        del _registry[name]
    _plugins_loaded = False
    _load_plugins()


def list_criteria(filter: str = "*") -> list[str]:
    """Sorted names of the registered criteria (built-in and plugins) matching a wildcard."""
    _load_plugins()
    return sorted(n for n in _registry if fnmatch.fnmatch(n, filter))


def get_criterion_info(name: str) -> CriterionInfo:
    """The :class:`CriterionInfo` registered under ``name``."""
    _load_plugins()
    try:
        return _registry[name]
    except (KeyError, TypeError):
        raise UnknownCriterionError(
            f"unknown criterion {name!r}; known criteria: {', '.join(list_criteria())}. Register your own "
            "with @residual_prune.register_criterion or the entry-point group "
            f"{ENTRY_POINT_GROUP!r}."
        ) from None


def get_criterion(name: str) -> Criterion:
    """The criterion callable registered under ``name``."""
    return get_criterion_info(name).fn


def accepted_options(info: CriterionInfo, candidates: Mapping[str, Any]) -> dict[str, Any]:
    """The ``candidates`` that the criterion's signature accepts (all of them if it takes ``**kwargs``)."""
    try:
        params = inspect.signature(info.fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(candidates)
    return {k: v for k, v in candidates.items() if k in params}
