"""The server's policy for Python's cyclic garbage collector.

Start-up builds what lives as long as the process (libraries, models, caches, live state
rebuilt from the event log); serving then makes short-lived objects, and a few cycles
per call in gRPC. Each full collection walks every tracked object not frozen, so:
no automatic collections while starting (:func:`collector_paused`), one collection and a
freeze when ready (:func:`settle_heap`), and frequent, short young collections after.
Imported before anything heavy, so the pause can cover the imports too.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def collector_paused(pause: bool) -> Iterator[None]:
    """No automatic cyclic collections inside (with ``pause``): start-up builds state that
    lives as long as the process (libraries, models, caches, live state rebuilt from the
    event log), and each full collection walked all of it again: 21 of them, growing to
    250 ms, were 2.3 s of a 22 s start. :func:`settle_heap` collects once when serving."""
    paused = pause and gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def settle_heap(young_threshold: int) -> None:
    """Collect once, then freeze what survives (start-up state) out of the cyclic
    collector's scans, and collect the young generation every ``young_threshold``
    allocations. Frozen objects are still freed by reference counting when dropped.

    A young collection's pause grows with the garbage it frees: gRPC's server leaves a
    small reference cycle per call, and the scoring calls leave none (a test checks it),
    so frequent young collections keep each pause short."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)
    log.info(
        "heap settled: %d objects frozen, young threshold %d",
        gc.get_freeze_count(),
        young_threshold,
    )
