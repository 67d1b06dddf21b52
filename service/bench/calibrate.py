"""How fast this machine is right now: fixed workloads, timed, best of several.

Shared machines change speed from hour to hour (other tenants). The benchmark times
these at its start and at its end so that figures from two runs can be compared with
the machine's own speed beside them: a run whose calibration took twice as long ran on
a machine twice as slow, and its absolute latencies say so, not the code.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def _best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _python_loop() -> int:
    return sum(range(1_000_000))


def _numpy_small() -> float:
    # What one RankProducts is mostly made of: numpy calls on arrays of tens of elements.
    a = np.linspace(0.0, 1.0, 50)
    acc = 0.0
    for _ in range(2_000):
        b = np.where(a > 0.5, a * 2.0, a + 1.0)
        acc += float(b.sum())
    return acc


def machine_speed(repeat: int = 5) -> dict[str, float]:
    """``python_loop_ms``: ``sum(range(10**6))``; ``numpy_small_us``: one small-array numpy
    step (``where`` + two arithmetic ops + ``sum`` on 50 floats). Best of ``repeat``."""
    return {
        "python_loop_ms": _best_of(_python_loop, repeat) * 1000.0,
        "numpy_small_us": _best_of(_numpy_small, repeat) / 2_000 * 1e6,
    }
