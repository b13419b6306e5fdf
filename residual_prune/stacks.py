"""Numbered layer stacks: delete whole layers and renumber what refers to them.

A transformer keeps its layers in an ``nn.ModuleList`` of ``config.num_hidden_layers`` layers;
each layer knows its index (``layer_idx``: the key/value cache is indexed by it) and the config
may list a setting per layer (``layer_types``). ShortGPT-style scripts remove layers by hand:
delete them from the list, renumber the kept layers and shorten the config. Here that is one
generic rule, so that ``save_pretrained`` writes a model that ``from_pretrained`` builds with no
custom code:

- a *numbered stack* is the only ``nn.ModuleList`` of the model whose length is the
  ``num_hidden_layers`` of the model's config (or of a config nested in it, ``text_config``);
- deleting layers from it renumbers the kept layers' index attributes (``layer_idx``,
  ``layer_id``, ``layer_index``: those equal to the layer's old position), sets
  ``num_hidden_layers``, shortens the config's per-layer lists (a list named ``*layer*`` with one
  entry per layer) and renumbers its lists of layer indices (a list named ``*layer*`` of
  positions, ``mlp_only_layers``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any

from torch import nn

__all__ = ["delete_layers", "numbered_stack"]

_INDEX_ATTRIBUTES = ("layer_idx", "layer_id", "layer_index")


def _is_config(value: Any) -> bool:
    return hasattr(value, "num_hidden_layers") and callable(getattr(value, "to_dict", None))


def _configs(model: nn.Module) -> Iterator[Any]:
    """The model's config and the configs held in it (``text_config``, ``vision_config``, ...), each once."""
    root = getattr(model, "config", None)
    seen: set[int] = set()
    frontier = [root] if _is_config(root) else []
    while frontier:
        config = frontier.pop()
        if id(config) in seen:
            continue
        seen.add(id(config))
        yield config
        frontier += [v for v in vars(config).values() if _is_config(v)]


def _settable(config: Any) -> bool:
    """Whether ``num_hidden_layers`` can be set on (a copy of) ``config``: ProphetNet's is a sum of two counts
    that refuses it."""
    try:
        copy.copy(config).num_hidden_layers = config.num_hidden_layers
    except (AttributeError, NotImplementedError, TypeError, ValueError):
        return False
    return True


def numbered_stack(model: nn.Module, name: str) -> str | None:
    """The qualified name of the numbered stack the layer ``name`` belongs to, or None (see the module)."""
    parent_name, _, key = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    if not isinstance(parent, nn.ModuleList) or not key.isdigit():
        return None
    counted = any(c.num_hidden_layers == len(parent) and _settable(c) for c in _configs(model))
    same_length = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == len(parent)]
    return parent_name if counted and same_length == [parent] else None


def _is_index_list(value: Any, length: int) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < length for i in value
    )


def _renumbered_config(config: Any, kept: list[int]) -> None:
    """Shorten ``config``'s per-layer lists to the ``kept`` layers (old positions, in order) and renumber its
    lists of layer positions."""
    length, new = config.num_hidden_layers, {old: i for i, old in enumerate(kept)}
    for attribute, value in list(vars(config).items()):
        if "layer" not in attribute or not isinstance(value, (list, tuple)):
            continue
        if len(value) == length:
            setattr(config, attribute, type(value)(value[i] for i in kept))
        elif _is_index_list(value, length):
            setattr(config, attribute, type(value)(new[i] for i in value if i in new))
    config.num_hidden_layers = len(kept)


def _renumbered_layer(layer: nn.Module, old: int, new: int) -> None:
    for module in layer.modules():
        for attribute in _INDEX_ATTRIBUTES:
            value = getattr(module, attribute, None)
            if isinstance(value, int) and not isinstance(value, bool) and value == old:
                setattr(module, attribute, new)


def delete_layers(model: nn.Module, stack: str, removed: Iterable[str]) -> None:
    """Delete the layers ``removed`` (their keys) from ``model``'s numbered stack ``stack``, renumber the kept
    layers and shorten the configs that count them (in place)."""
    parent = model.get_submodule(stack)
    gone = set(removed)
    length = len(parent._modules)
    kept = [(int(key), layer) for key, layer in parent._modules.items() if key not in gone]
    for new, (old, layer) in enumerate(kept):
        assert layer is not None, "a ModuleList holds modules"
        _renumbered_layer(layer, old, new)
    parent._modules.clear()
    for new, (_, layer) in enumerate(kept):
        parent._modules[str(new)] = layer
    for config in list(_configs(model)):
        if config.num_hidden_layers == length:
            _renumbered_config(config, [old for old, _ in kept])
