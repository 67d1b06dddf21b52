"""Room memory: the fold's rows for room-level calls."""

from __future__ import annotations

from typing import Any

from features.transforms import Event, LiveAggregator
from service.feast_reader import TS
from service.ingest.rooms import RoomMemory

T0 = 1_800_000_000.0


def test_a_viewers_row_is_rebuilt_only_after_an_event_changed_the_session() -> None:
    fold = LiveAggregator(lambda v: "JP", lambda cur, t: 1.0)
    for e in (
        Event("s", "stream_start", T0, "r"),
        Event("j1", "join", T0 + 1, "r", "a"),
        Event("j2", "join", T0 + 2, "r", "b"),
    ):
        fold.apply(e)
    features: Any = None  # batch rows are not asked for here
    rooms = RoomMemory(fold, features, clock=lambda: T0 + 10)
    try:
        first = rooms.viewer_rows("r", ["a", "b", "nobody"])
        assert first.viewer_live[2] is None
        again = rooms.viewer_rows("r", ["a", "b"])
        assert again.viewer_live[0] is first.viewer_live[0]  # unchanged: the same row
        fold.apply(Event("c", "product_click", T0 + 5, "r", "a", "p1"))
        after = rooms.viewer_rows("r", ["a", "b"])
        a = after.viewer_live[0]
        assert a is not first.viewer_live[0] and a is not None
        assert a["clicks"] == 1 and a[TS] == T0 + 5
        assert after.viewer_live[1] is first.viewer_live[1]
        assert first.room_state is not None and first.room_state["viewers_present"] == 2.0
        assert rooms.viewer_rows("r", ["a"], room=False).room_state is None
        # Every row is the fold's own definition of it.
        for v, row in zip(["a", "b"], after.viewer_live, strict=True):
            want = fold.rows("viewer_live", (v, "r"))
            assert row is not None and {k: row[k] for k in want} == want
    finally:
        rooms.close()
