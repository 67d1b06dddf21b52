"""Start-up details of the server process."""

from __future__ import annotations

import gc

from service.server import settle_heap


def test_settle_heap_freezes_the_start_up_heap_and_collects_young_objects_less_often() -> None:
    before = gc.get_threshold()
    start_up = [{"row": i} for i in range(1000)]
    try:
        settle_heap(5_000)
        assert gc.get_freeze_count() >= len(start_up)
        assert gc.get_threshold() == (5_000, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
