"""The shared fold and ``as_of``: the funnel-step times and the minutes left in the stream."""

from __future__ import annotations

import math

import numpy as np

from features.tables import ROOM_STATE, VIEWER_LIVE
from features.transforms import Event, LiveAggregator, as_of

T0 = 1_800_000_000.0


def _fold(events: list[Event]) -> LiveAggregator:
    agg = LiveAggregator(lambda v: "JP", lambda cur, t: 1.0)
    for e in events:
        agg.apply(e)
    return agg


def _cols(agg: LiveAggregator) -> dict[str, float]:
    cols = {
        f"{VIEWER_LIVE.name}__{k}": v for k, v in agg.rows(VIEWER_LIVE.name, ("v", "r")).items()
    }
    cols.update(
        {f"{ROOM_STATE.name}__{k}": v for k, v in agg.rows(ROOM_STATE.name, ("r",)).items()}
    )
    return cols


def test_funnel_times_and_minutes_left_are_derived_at_the_moment_of_scoring() -> None:
    agg = _fold(
        [
            Event("s", "stream_start", T0, "r", planned_end_time=T0 + 3600),
            Event("j", "join", T0 + 60, "r", "v"),
            Event("c1", "product_click", T0 + 120, "r", "v", "p1"),
            Event("a1", "add_to_cart", T0 + 300, "r", "v", "p1"),
            # Late (out of order): counted, but the latest click stays the latest.
            Event("c0", "product_click", T0 + 90, "r", "v", "p2"),
        ]
    )
    cols = _cols(agg)
    assert cols["viewer_live__last_click_ts"] == T0 + 120
    assert math.isnan(cols["viewer_live__last_checkout_ts"])
    d = as_of(cols, T0 + 600)
    assert d["since_click_min"] == 8.0 and d["since_cart_min"] == 5.0
    assert math.isnan(d["since_checkout_min"]) and math.isnan(d["since_purchase_min"])
    assert d["minutes_left"] == 50.0
    # Vectorised (training) and scalar (serving) agree; past the planned end it goes negative.
    now = np.array([T0 + 600, T0 + 3900])
    assert np.allclose(as_of(cols, now)["minutes_left"], [50.0, -5.0])


def test_a_stream_without_an_announced_end_has_no_minutes_left() -> None:
    agg = _fold([Event("s", "stream_start", T0, "r"), Event("j", "join", T0 + 1, "r", "v")])
    assert math.isnan(as_of(_cols(agg), T0 + 60)["minutes_left"])
