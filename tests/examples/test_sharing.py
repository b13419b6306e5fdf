"""Whether a run had the CPU to itself (examples.cifar.sharing): the measured load of other processes, and the
judgement that keeps shared runs out of wall-clock comparisons."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from examples.cifar.sharing import SHARED, other_load, timed_alone, why_shared


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pinning to one core needs Linux")
def test_a_busy_process_on_the_same_core_is_measured() -> None:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})  # this thread, and the child it starts, on one core
    try:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)  # the child is up and spinning
            with other_load() as shared:
                time.sleep(1.0)
        finally:
            busy.kill()
            busy.wait()
        with other_load() as alone:
            sum(i * i for i in range(3_000_000))  # our own work does not count
    finally:
        os.sched_setaffinity(0, before)
    assert shared["other_load"] > 0.7
    assert alone["other_load"] < shared["other_load"] and 0 <= alone["other_load"] <= 1


def test_timed_alone_by_load_by_epochs_and_by_note() -> None:
    steady = {"history": [{"seconds": 60.0}, {"seconds": 63.0}, {"seconds": 61.0}]}
    assert timed_alone(steady) and timed_alone({**steady, "other_load": SHARED}) and timed_alone({})
    loaded = {**steady, "other_load": 0.4}
    uneven = {"history": [{"seconds": 65.0}, {"seconds": 144.0}, {"seconds": 70.0}]}  # a record made before the load
    noted = {**steady, "timing_note": "trained at the same time as 3 other runs"}
    assert not any(map(timed_alone, (loaded, uneven, noted)))
    assert timed_alone({**uneven, "other_load": 0.02})  # measured: the load decides, not the epochs
    assert timed_alone({**uneven, "machine": {"gpu": "1x H100"}})  # a GPU run's first epoch compiles
    assert why_shared(loaded) == "other processes took up to 40% of the CPU"
    # one loaded epoch is enough: the run's mean (8%) hides a burst that slowed it by more than its share
    burst = {
        "other_load": 0.08,
        "history": [{"seconds": 288.0, "other_load": 0.26}, {"seconds": 231.0, "other_load": 0.01}],
    }
    assert why_shared(burst) == "other processes took up to 26% of the CPU"
    assert why_shared(uneven) == "its epochs took 65 to 144 s" and why_shared(noted) == noted["timing_note"]
