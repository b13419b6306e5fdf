"""Context managers that change a model's modes and state and put them back exactly."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from .errors import InvalidArgumentError

__all__ = ["eval_mode", "model_state_kept", "preserved_state"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode; restore each module's own ``training`` flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


_CONTAINERS = (list, dict, set)


class _ModelSnapshot:
    """Everything a forward pass (or symbolic tracing) could change in a model, taken so it can be put back.

    Per module (TorchScript modules excepted: their state is not Python's): its class and its
    ``__dict__`` (modes, hook dicts, ``_parameters``/``_buffers``/``_modules``, plain attributes).
    Every list, dict and set reachable from there (nested ones too) is copied shallowly, so it
    can be restored in place; every tensor reachable (parameters, buffers, their ``.grad``,
    tensors in plain attributes) is cloned with its ``requires_grad`` and ``.grad``.
    """

    def __init__(self, model: nn.Module, unwritten: tuple[str, ...] = ()):
        self.skip = {id(t) for t in model.parameters()} if "parameters" in unwritten else set()
        self.skip |= {id(t) for t in model.buffers()} if "buffers" in unwritten else set()
        self.modules = [
            (m, type(m), dict(m.__dict__)) for m in model.modules() if not isinstance(m, torch.jit.ScriptModule)
        ]
        self.containers: dict[int, tuple[Any, Any]] = {}
        self.tensors: dict[int, tuple[torch.Tensor, torch.Tensor, bool, torch.Tensor | None]] = {}
        for _, _, attributes in self.modules:
            for value in attributes.values():
                self._take(value)

    def _take(self, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            self._take_tensor(value)
        elif isinstance(value, _CONTAINERS) and id(value) not in self.containers:
            self.containers[id(value)] = (value, list(value) if isinstance(value, list) else value.copy())
            for item in value.values() if isinstance(value, dict) else value:
                self._take(item)
        elif isinstance(value, tuple):
            for item in value:
                self._take(item)

    def _take_tensor(self, t: torch.Tensor) -> None:
        if id(t) in self.tensors:
            return
        grad = t.grad if t.is_leaf else None
        self.tensors[id(t)] = (t, t if id(t) in self.skip else t.detach().clone(), t.requires_grad, grad)
        if grad is not None:
            self._take_tensor(grad)

    def restore(self) -> None:
        for module, cls, attributes in self.modules:
            if type(module) is not cls:
                module.__class__ = cls
            for key in [k for k in module.__dict__ if k not in attributes]:
                del module.__dict__[key]
            for key, value in attributes.items():
                if module.__dict__.get(key) is not value:
                    module.__dict__[key] = value
        for container, contents in self.containers.values():
            if isinstance(container, list):
                container[:] = contents
            else:
                container.clear()
                container.update(contents)
        with torch.no_grad():
            for t, saved, requires_grad, grad in self.tensors.values():
                if saved is not t:
                    _restore_values(t, saved)
                if t.is_leaf:
                    if t.requires_grad != requires_grad:
                        t.requires_grad_(requires_grad)
                    if t.grad is not grad:
                        t.grad = grad


def _restore_values(t: torch.Tensor, saved: torch.Tensor) -> None:
    """Give ``t`` the values of ``saved``; write only when they differ, so untouched tensors keep their version."""
    if (t.shape, t.dtype, t.device) != (saved.shape, saved.dtype, saved.device):
        t.data = saved
        return
    try:
        same = torch.equal(t, saved)
    except RuntimeError:  # layouts torch.equal does not support
        same = False
    if not same:
        t.copy_(saved)


@contextlib.contextmanager
def model_state_kept(model: nn.Module, *, unwritten: tuple[str, ...] = ()) -> Iterator[nn.Module]:
    """Whatever runs inside, leave ``model`` bit-identical afterwards.

    Undoes what a forward pass or symbolic tracing writes into the modules: in-place updates
    of parameters, buffers and tensor attributes (a call counter, BN running statistics,
    spectral norm's power iteration), items appended to lists or dicts the modules hold
    (restored in place, so references to them stay valid), attributes set or deleted (an
    ``fx.Proxy`` cached by a traced forward), replaced parameters or buffers, hooks, modes,
    ``requires_grad`` flags and ``.grad``. Tensors are compared on exit and written back only
    where they changed. Costs one copy of the model's tensors while inside, less the kinds named in
    ``unwritten`` (``"parameters"``, ``"buffers"``), whose values the code inside cannot write:
    torch.fx tracing proxies parameters, torch.export and the fake-tensor shape pass run on fake
    copies of parameters and buffers.
    """
    snapshot = _ModelSnapshot(model, unwritten)
    try:
        yield model
    finally:
        snapshot.restore()


@contextlib.contextmanager
def preserved_state(
    model: nn.Module, bn_mode: str = "train", needs_grad: Iterable[torch.nn.Parameter] = ()
) -> Iterator[nn.Module]:
    """Score a model without leaving a trace on it.

    Inside the context every module is in eval mode except the batch-norm layers, which
    use batch statistics when ``bn_mode == "train"`` (the convention of the GraSP
    reference code), and the ``needs_grad`` parameters require gradients. Afterwards the
    model is bit-identical to what it was (:func:`model_state_kept`): modes, buffers (BN
    running statistics, spectral norm's ``_u``/``_v``), ``requires_grad`` flags, ``.grad``
    and whatever the forward wrote into the modules.
    """
    if bn_mode not in ("train", "eval"):
        raise InvalidArgumentError(f"bn_mode must be 'train' or 'eval', got {bn_mode!r}")
    with model_state_kept(model):
        model.eval()
        if bn_mode == "train":
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
        for p in needs_grad:
            p.requires_grad_(True)
        yield model


@contextlib.contextmanager
def rng_forked(models: Iterable[nn.Module], tensors: Iterable[torch.Tensor] = ()) -> Iterator[None]:
    """Run the body on a fork of torch's random number generators: the CPU's and those of the accelerators
    the models' parameters and buffers and ``tensors`` are on. On exit each is in the state it had on entry."""
    on = itertools.chain(*(itertools.chain(m.parameters(), m.buffers()) for m in models), tensors)
    devices = sorted({t.device for t in on if t.device.type not in ("cpu", "meta")}, key=str)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=[], device_type="cpu"))
        for device_type in sorted({d.type for d in devices}):
            same_type = [d for d in devices if d.type == device_type]
            stack.enter_context(torch.random.fork_rng(devices=same_type, device_type=device_type))
        yield


def on_meta(model: nn.Module) -> bool:
    """Whether any parameter or buffer of ``model`` is on the ``meta`` device (it has no values to run on)."""
    return any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers()))
