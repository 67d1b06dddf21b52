"""The server's policy for the cyclic garbage collector."""

from __future__ import annotations

import gc

from service.heap import collector_paused, settle_heap


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


def test_the_collector_is_paused_while_starting_and_left_as_it_was_found() -> None:
    assert gc.isenabled()
    try:
        with collector_paused(True):
            assert not gc.isenabled()
            raise RuntimeError("start-up failed")
    except RuntimeError:
        pass
    assert gc.isenabled()
    with collector_paused(False):
        assert gc.isenabled()
    gc.disable()  # an embedding application turned it off: not ours to turn on
    try:
        with collector_paused(True):
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
