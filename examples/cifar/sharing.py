"""Whether a run had the CPU to itself: wall-clock, energy and speed-ups compare only between runs that did.

A test suite or a second training beside a run slows it down by up to 2x on a 2-core machine, and
nothing in its own totals shows it. :func:`other_load` measures, over a span, the share of the
CPU time of the cores this process may run on that other processes (and the hypervisor's steal)
took: about 0 for a run alone, about 0.5 when another busy process shared both cores. CPU
records made before that measure existed are judged by their epochs: alone, every epoch of a
run takes about as long as the others (the GraSP tickets on the Intel Xeon: within 5%), while
the runs with tests beside them spread by 1.65x to 2.7x. The measure decides where there is one:
on a 2-core AMD EPYC VM the epochs of a run alone drifted from 190 to 248 s at 1% load. A GPU
run's first epoch compiles, and the GPU is what several runs share: ``gpu_run`` notes it
(``timing_note``) when it trains several at once.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["SHARED", "SPREAD", "other_load", "timed_alone", "why_shared"]

SHARED = 0.1  # above this share of the CPU taken by others, a run's wall-clock is not its own
SPREAD = 1.3  # a run whose slowest epoch took longer than this times its fastest shared the CPU for a while

# /proc/stat columns after the cpu name: user nice system idle iowait irq softirq steal (guest is within user)
_BUSY = (0, 1, 2, 5, 6, 7)


def _busy_seconds(cpus: set[int]) -> float | None:
    """CPU seconds that everything on ``cpus`` has spent busy since boot (Linux), None where unknown."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    busy, seen = 0, set()
    for line in lines:
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            busy += sum(int(values[i]) for i in _BUSY)
            seen.add(int(name[3:]))
    return busy / ticks if seen == cpus else None


def _cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


@contextlib.contextmanager
def other_load() -> Iterator[dict[str, float]]:
    """``with other_load() as m: ...``; then ``m["other_load"]``: the share (0 to 1) of the CPU time of this
    process's cores that other processes took during the span. Absent where the system does not say (not Linux)."""
    out: dict[str, float] = {}
    cpus = _cpus()
    busy, own, began = _busy_seconds(cpus), time.process_time(), time.perf_counter()
    try:
        yield out
    finally:
        after, wall = _busy_seconds(cpus), time.perf_counter() - began
        if busy is not None and after is not None and wall > 0:
            others = (after - busy) - (time.process_time() - own)
            out["other_load"] = min(1.0, max(0.0, others / (wall * len(cpus))))


def why_shared(record: dict[str, Any]) -> str:
    """Why a training record's wall-clock is not its own, in words; empty where it is. A ``timing_note`` says so;
    else, where measured, other processes took more than :data:`SHARED` of the CPU during the run or any one of its
    epochs (a 2-thread training waits for the thread whose core is taken, so a burst of load slows it by more than
    its share: a run with 26% taken in one epoch and 8% over the run took about 12% longer); for CPU records made before
    that measure, the slowest epoch took more than :data:`SPREAD` times the fastest."""
    if record.get("timing_note"):
        return str(record["timing_note"])
    loads = [h["other_load"] for h in record.get("history") or [] if h.get("other_load") is not None]
    if record.get("other_load") is not None:
        worst = max([record["other_load"], *loads])
        return f"other processes took up to {worst:.0%} of the CPU" if worst > SHARED else ""
    if (record.get("machine") or {}).get("gpu"):
        return ""
    seconds = [h["seconds"] for h in record.get("history") or [] if h.get("seconds")]
    if seconds and max(seconds) > SPREAD * min(seconds):
        return f"its epochs took {min(seconds):.0f} to {max(seconds):.0f} s"
    return ""


def timed_alone(record: dict[str, Any]) -> bool:
    """Whether a training record's wall-clock is its own (see :func:`why_shared`)."""
    return not why_shared(record)
