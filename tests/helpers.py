"""Assertions and tiny residual blocks shared by the tests."""

from __future__ import annotations

import torch
from torch import nn


class Res(nn.Module):
    """``x + conv(x)``: the smallest removable residual unit."""

    def __init__(self, c: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


class NormedRes(nn.Module):
    """``x + bn(conv(x))`` on 4 channels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return x + self.bn(self.conv(x))


def state_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert list(state) == list(snapshot)
    for k, v in snapshot.items():
        assert torch.equal(state[k], v), k


def observable_state(model: torch.nn.Module) -> list[tuple]:
    """Everything a caller can observe of a model, object by object: per module its class and every
    attribute (modes, hooks, parameter/buffer dicts, plain attributes), walking into lists, tuples,
    dicts and sets; each tensor with a copy of its values, ``requires_grad`` and ``.grad``."""
    entries: list[tuple] = []

    def walk(path: str, value: object) -> None:
        if isinstance(value, torch.Tensor):
            grad = value.grad if value.is_leaf else None
            entries.append(
                (path, value, value.detach().clone(), value.requires_grad, grad, None if grad is None else grad.clone())
            )
            return
        entries.append((path, value))
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(f"{path}[{i}]", item)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{path}[{key!r}]", item)
        elif isinstance(value, (set, frozenset)):
            for item in sorted(value, key=repr):
                walk(f"{path}{{{item!r}}}", item)

    for name, module in model.named_modules():
        entries.append((f"{name}:class", type(module)))
        for key, value in vars(module).items():
            if not isinstance(value, torch.nn.Module):
                walk(f"{name}.{key}", value)
    return entries


def assert_unchanged(model: torch.nn.Module, before: list[tuple]) -> None:
    """Assert that ``model`` is bit-identical to :func:`observable_state` taken ``before``: the same
    objects everywhere (containers restored in place), the same tensor values, flags and grads."""
    after = observable_state(model)
    assert [e[0] for e in after] == [e[0] for e in before]
    for old, new in zip(before, after):
        path = old[0]
        assert new[1] is old[1], path
        if len(old) == 6:
            _, _, values, requires_grad, grad, grad_values = old
            assert torch.equal(new[2], values) and new[3] == requires_grad, path
            assert new[4] is grad and (grad is None or torch.equal(new[5], grad_values)), path
