"""What training a network costs: energy and CO2 (codecarbon, offline mode) and training memory.

Energy is measured per epoch, so a run that is killed and resumed still adds up to its whole
training. The carbon intensity comes from codecarbon's offline table for the country given
by ``RESIDUAL_PRUNE_COUNTRY`` (ISO 3166 alpha-3, default ``USA``); every record says which.
Where the machine exposes no power counters (RAPL, NVML), codecarbon estimates the CPU power
from its model and load, and the record keeps the power it used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EnergyMeter", "training_memory"]

COUNTRY = os.environ.get("RESIDUAL_PRUNE_COUNTRY", "USA")


class EnergyMeter:
    """codecarbon's offline tracker, read per measured span (``with meter.span() as m: ...; m["energy_kwh"]``)."""

    def __init__(self, country_iso_code: str = COUNTRY):
        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self.country = country_iso_code
        with warnings.catch_warnings():  # codecarbon 3 deprecates save_to_file; older versions lack its successor
            warnings.simplefilter("ignore", DeprecationWarning)
            self._tracker = OfflineEmissionsTracker(
                country_iso_code=country_iso_code,
                log_level="error",
                save_to_file=False,
                tracking_mode="process",
                measure_power_secs=5,
            )
        self._tracker.start()

    @contextlib.contextmanager
    def span(self) -> Iterator[dict[str, float | str]]:
        out: dict[str, float | str] = {}
        self._tracker.start_task("span")
        try:
            yield out
        finally:
            data = self._tracker.stop_task()
            out.update(
                energy_kwh=float(data.energy_consumed),
                emissions_kg=float(data.emissions),
                cpu_power_w=float(data.cpu_power),
                gpu_power_w=float(data.gpu_power or 0.0),
                region=f"{data.country_name} ({data.country_iso_code})",
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._tracker.stop()


def training_memory(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, int]:
    """Bytes held by one SGD-with-momentum training step on batch ``(x, y)``.

    ``weights`` (parameters, gradients and momentum buffers: 3x the parameters) plus
    ``activations`` (every tensor autograd saves for the backward pass, each storage counted
    once). Counted, not sampled, so it is the same on every machine; on CUDA the allocator's
    peak is added as ``cuda_peak``. The model's training mode and weights are left as they were.
    """
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    params = [p for p in model.parameters() if p.requires_grad]
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    was_training = model.training
    model.train()
    buffers = {k: v.clone() for k, v in model.named_buffers()}  # BN running stats move in a training forward
    cuda = x.is_cuda
    if cuda:
        torch.cuda.reset_peak_memory_stats(x.device)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(model(x), y)
        torch.autograd.grad(loss, params)
    finally:
        model.train(was_training)
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
    weights = {p.untyped_storage().data_ptr() for p in params}  # parameters saved for backward are not activations
    activations = sum(n for ptr, n in storages.items() if ptr not in weights)
    out = {"weights": 3 * weight_bytes, "activations": activations, "total": 3 * weight_bytes + activations}
    if cuda:
        out["cuda_peak"] = torch.cuda.max_memory_allocated(x.device)
    return out
