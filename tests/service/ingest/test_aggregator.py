"""The aggregator core: validation, idempotency, durability, live/batch parity."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features import schema
from features.build import fx_lookup
from features.settings import FeatureSettings
from features.store import apply, open_store
from features.tables import VIEWER_LIVE
from features.vector import CONVERSION, assemble
from service.errors import Overloaded
from service.ingest.aggregator import Aggregator, IngestLimits
from service.ingest.online_writer import OnlineWriter

NOW = 1_800_000_000.0


def _ev(i: int, etype: str, t: float = NOW, **kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"event_id": f"e{i}", "event_type": etype, "event_time": t, "room_id": "r1"}
    if etype not in ("stream_start", "stream_end", "stage_change"):
        e["viewer_id"] = kw.pop("viewer_id", "v1")
    e.update(kw)
    return e


def _agg(tmp: Path, writer: OnlineWriter | None = None, **limits: Any) -> Aggregator:
    return Aggregator(
        tmp / "wal",
        tmp / "events",
        writer,
        region_of=lambda v: "SEA",
        fx=lambda cur, t: 1.0,
        limits=IngestLimits(**limits),
        clock=lambda: NOW,
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_mixed_batch_accepts_the_good_and_rejects_the_bad_with_reasons(tmp_path: Path) -> None:
    async def go() -> None:
        agg = _agg(tmp_path)
        await agg.start()
        batch = [
            _ev(1, "join"),
            _ev(2, "teleport"),
            _ev(
                3,
                "purchase",
                product_id="p1",
                amount_minor=-5,
                currency="USD",
                payment_method="card",
            ),
            _ev(4, "chat", chat_topic="shipping"),
            _ev(5, "like", t=NOW + 3600),
            _ev(6, "like", t=NOW - 3 * 86400),
            _ev(
                7,
                "purchase",
                product_id="p1",
                amount_minor=500,
                currency="XXX",
                payment_method="card",
            ),
            {"event_id": "e8", "event_type": "like", "event_time": NOW, "room_id": "r1"},
            _ev(9, "add_to_cart", product_id="p1"),
        ]
        res = await agg.ingest(batch)
        assert res.accepted == 3 and res.duplicates == 0
        reasons = {r.index: (r.field, r.reason) for r in res.rejected}
        assert sorted(reasons) == [1, 2, 4, 5, 6, 7]
        assert reasons[1][0] == "event_type"
        assert reasons[2][0] == "amount_minor"
        assert reasons[4][0] == "event_time" and "future" in reasons[4][1]
        assert reasons[5][0] == "event_time" and "past" in reasons[5][1]
        assert reasons[6][0] == "currency"
        assert reasons[7][0] == "viewer_id"
        s = agg.fold.viewers[("v1", "r1")]
        assert (s.chat["shipping"], s.carts, s.funnel_step) == (1, 1, 2)
        await agg.stop()

    run(go())


def test_duplicates_are_counted_once_and_applied_once(tmp_path: Path) -> None:
    async def go() -> None:
        agg = _agg(tmp_path)
        await agg.start()
        first = await agg.ingest([_ev(1, "join"), _ev(2, "like"), _ev(2, "like")])
        again = await agg.ingest([_ev(1, "join"), _ev(2, "like"), _ev(3, "like")])
        assert (first.accepted, first.duplicates) == (2, 1)
        assert (again.accepted, again.duplicates) == (1, 2)
        assert agg.fold.viewers[("v1", "r1")].likes == 2
        await agg.stop()

    run(go())


def test_late_events_are_applied_and_counted(tmp_path: Path) -> None:
    async def go() -> None:
        agg = _agg(tmp_path)
        await agg.start()
        await agg.ingest([_ev(1, "join", t=NOW)])
        res = await agg.ingest([_ev(2, "like", t=NOW - 10), _ev(3, "like", t=NOW - 120)])
        assert (res.accepted, res.late) == (2, 1)
        assert agg.fold.viewers[("v1", "r1")].likes == 2
        assert agg.fold.viewers[("v1", "r1")].last_event_ts == NOW
        await agg.stop()

    run(go())


def test_leave_removes_the_viewer_from_the_room(tmp_path: Path) -> None:
    async def go() -> None:
        agg = _agg(tmp_path)
        await agg.start()
        await agg.ingest([_ev(1, "join"), _ev(2, "join", viewer_id="v2")])
        assert sorted(agg.present_viewers("r1")) == ["v1", "v2"]
        await agg.ingest([_ev(3, "leave", t=NOW + 1)])
        assert agg.present_viewers("r1") == ["v2"]
        await agg.stop()

    run(go())


def test_acknowledged_events_survive_a_crash_and_the_window_is_rebuilt(tmp_path: Path) -> None:
    async def crash() -> None:
        agg = _agg(tmp_path)
        await agg.start()
        res = await agg.ingest([_ev(1, "join"), _ev(2, "like"), _ev(3, "like")])
        assert res.accepted == 3
        # No stop(): the process dies here with the segment still open, and the kernel
        # releases its lock on the log.
        agg.wal.unlock()

    async def restart() -> None:
        agg = _agg(tmp_path)
        await agg.start()
        assert agg.fold.viewers[("v1", "r1")].likes == 2
        res = await agg.ingest([_ev(2, "like"), _ev(4, "like")])
        assert (res.accepted, res.duplicates) == (1, 1)
        await agg.stop()
        # Compacted into the parquet event log; a third start finds each event once.
        log_events = schema.read_events(tmp_path).to_pandas()
        assert sorted(log_events["event_id"]) == ["e1", "e2", "e3", "e4"]
        agg3 = _agg(tmp_path)
        await agg3.start()
        assert agg3.fold.viewers[("v1", "r1")].likes == 3
        await agg3.stop()
        assert len(schema.read_events(tmp_path)) == 4

    run(crash())
    run(restart())


def test_full_buffers_refuse_quickly(tmp_path: Path) -> None:
    async def go() -> None:
        agg = _agg(tmp_path, max_pending_rows=2, flush_interval_s=3600)
        await agg.start()
        await agg.ingest([_ev(1, "join"), _ev(2, "join", viewer_id="v2")])
        with pytest.raises(Overloaded):
            await agg.ingest([_ev(3, "like")])
        await agg.stop()

    run(go())


def test_replaying_a_stream_gives_the_batch_features_online(
    tiny_world: Path, tmp_path: Path
) -> None:
    """Live/batch parity: the same stream through ingestion and through the batch
    build yields the same viewer_live rows, and the same derived features at
    moments between events."""
    settings = FeatureSettings(data_dir=tmp_path / "live")
    apply(settings)
    events = schema.read_events(tiny_world).to_pandas()
    counts = events.groupby("room_id").size()
    room = counts.idxmax()
    ev = events[events["room_id"] == room].copy()
    delta = NOW - ev["event_time"].max().timestamp()
    ev["event_time"] = ev["event_time"].map(lambda t: t.timestamp() + delta)
    ev["planned_end_time"] = ev["planned_end_time"].map(
        lambda t: None if pd.isna(t) else t.timestamp() + delta
    )
    viewers = schema.read_table("viewers", tiny_world).to_pandas()
    region = dict(zip(viewers["viewer_id"], viewers["region"], strict=True))
    fx = fx_lookup(schema.read_table("fx", tiny_world).to_pandas())
    rows = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in ev.drop(columns=["event_date"], errors="ignore").to_dict("records")
    ]
    for r in rows:
        amount = r.get("amount_minor")
        if amount is not None:
            r["amount_minor"] = int(amount)

    async def go() -> None:
        agg = Aggregator(
            tmp_path / "wal",
            tmp_path / "live" / "events",
            OnlineWriter(open_store(settings)),
            region_of=lambda v: region.get(v, ""),
            fx=lambda cur, t: fx(cur, t - delta),
            clock=lambda: NOW,
        )
        await agg.start()
        for i in range(0, len(rows), 97):
            res = await agg.ingest(rows[i : i + 97])
            assert not res.rejected, res.rejected[:3]
        await agg.stop()

    run(go())
    batch = pd.read_parquet(tiny_world / "features" / VIEWER_LIVE.file)
    batch = (
        batch[batch["room_id"] == room].sort_values("event_timestamp").groupby("viewer_id").tail(1)
    )
    feats = [f"viewer_live:{c}" for c in VIEWER_LIVE.columns]
    online = (
        open_store(settings)
        .get_online_features(
            features=feats,
            entity_rows=[{"viewer_id": v, "room_id": room} for v in batch["viewer_id"]],
            full_feature_names=True,
        )
        .to_dict()
    )
    assert len(batch) > 10
    for c, kind in VIEWER_LIVE.columns.items():
        got = online[f"viewer_live__{c}"]
        want = batch[c].tolist()
        if c.endswith("_ts"):
            want = [w + delta for w in want]
        if kind == "string":
            assert got == want, c
        else:
            np.testing.assert_allclose(
                np.array(got, dtype=float), np.array(want, dtype=float), rtol=1e-9, err_msg=c
            )
    # Derived (time-dependent) features agree at a moment between events too.
    t = NOW - 17.5
    cols_live = {
        f"viewer_live__{c}": np.array(online[f"viewer_live__{c}"], dtype=object)
        for c in VIEWER_LIVE.columns
    }
    cols_batch = {
        f"viewer_live__{c}": batch[c].to_numpy(dtype=object) + (delta if c.endswith("_ts") else 0)
        if VIEWER_LIVE.columns[c] != "string"
        else batch[c].to_numpy(dtype=object)
        for c in VIEWER_LIVE.columns
    }
    a = assemble(CONVERSION, cols_live, t)
    b = assemble(CONVERSION, cols_batch, t)
    np.testing.assert_allclose(a, b, rtol=1e-6, equal_nan=True)


def test_a_second_aggregator_on_the_same_log_is_refused_until_the_first_stops(
    tmp_path: Path,
) -> None:
    from service.ingest.wal import WalLocked

    async def go() -> None:
        first = _agg(tmp_path)
        await first.start()
        second = _agg(tmp_path)
        with pytest.raises(WalLocked):
            await second.start()
        await first.stop()
        await second.start()
        await second.stop()

    run(go())


def test_the_planned_end_is_checked_applied_and_survives_a_restart(tmp_path: Path) -> None:
    end = NOW + 3600

    async def first() -> None:
        agg = _agg(tmp_path)
        await agg.start()
        res = await agg.ingest(
            [
                _ev(1, "stream_start", planned_end_time=end),
                _ev(2, "stream_start", room_id="r2", planned_end_time=NOW - 60),
                _ev(3, "like", planned_end_time=end),
                _ev(4, "stream_start", room_id="r3"),  # optional: no plan announced
            ]
        )
        assert res.accepted == 2
        reasons = {r.index: (r.field, r.reason) for r in res.rejected}
        assert reasons[1][0] == "planned_end_time" and "after event_time" in reasons[1][1]
        assert reasons[2][0] == "planned_end_time" and "like" in reasons[2][1]
        assert agg.fold.rooms["r1"].planned_end_ts == end
        assert np.isnan(agg.fold.rooms["r3"].planned_end_ts)
        agg.wal.unlock()  # a crash: the WAL alone must bring the plan back

    async def restart() -> None:
        agg = _agg(tmp_path)
        await agg.start()
        assert agg.fold.rooms["r1"].planned_end_ts == end
        await agg.stop()
        log_events = schema.read_events(tmp_path).to_pandas().set_index("event_id")
        assert log_events.loc["e1", "planned_end_time"] == pd.Timestamp(end, unit="s", tz="UTC")
        assert pd.isna(log_events.loc["e4", "planned_end_time"])

    run(first())
    run(restart())


def test_a_caller_that_goes_away_mid_write_still_has_its_batch_applied_once(
    tmp_path: Path,
) -> None:
    """A PublishEvents whose deadline expires while its batch is in the log's fsync: the
    batch is durable, so it is applied too, and the client's resend counts as duplicates.
    Before, the cancel left the events in the duplicate window but never in live state
    (and ended the log's writer thread, so every later batch waited forever)."""

    async def go() -> None:
        agg = _agg(tmp_path)
        await agg.start()
        with agg.wal._lock:  # hold the writer inside its group commit
            call = asyncio.ensure_future(agg.ingest([_ev(1, "join"), _ev(2, "like")]))
            for _ in range(1000):
                await asyncio.sleep(0.001)
                if agg.wal._queue.empty():
                    break
            call.cancel()  # the client's deadline
            with pytest.raises(asyncio.CancelledError):
                await call
        for _ in range(2000):  # the shielded commit finishes on the loop
            if ("v1", "r1") in agg.fold.viewers and agg.fold.viewers[("v1", "r1")].likes:
                break
            await asyncio.sleep(0.001)
        assert agg.fold.viewers[("v1", "r1")].likes == 1
        again = await agg.ingest([_ev(1, "join"), _ev(2, "like"), _ev(3, "like")])
        assert (again.accepted, again.duplicates) == (1, 2)
        assert agg.fold.viewers[("v1", "r1")].likes == 2
        await agg.stop()
        assert sorted(schema.read_events(tmp_path)["event_id"].to_pylist()) == ["e1", "e2", "e3"]

    run(go())
