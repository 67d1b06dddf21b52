"""The bench world between runs."""

from __future__ import annotations

from pathlib import Path

from service.bench.world import BenchWorld, forget_played
from service.ingest.aggregator import _batch
from service.ingest.wal import WriteAheadLog, compacted_files


def _played(n: int, first: int) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"bench-{first + i}",
            "event_type": "like",
            "event_time": 1.8e9 + i,
            "room_id": "bench-room-0",
            "viewer_id": f"v{i}",
        }
        for i in range(n)
    ]


def test_a_run_forgets_the_events_earlier_runs_played_in(tmp_path: Path) -> None:
    world = BenchWorld("tiny", tmp_path)
    events = world.data_dir / "events"
    simulated = events / "event_date=2027-01-15" / "part-0.parquet"
    simulated.parent.mkdir(parents=True)
    simulated.write_bytes(b"the simulated log")
    wal = WriteAheadLog(world.settings().wal_path)
    wal.open()
    try:
        wal.append(_batch(_played(3, 0))).result()
        wal.seal()
        assert wal.compact(events) == 3  # an earlier run's events, in the event log
        wal.append(_batch(_played(2, 3))).result()  # and a run that did not stop
    finally:
        wal.close()
    played = len(compacted_files(events)) + len(wal.segments())
    assert compacted_files(events) and wal.segments()
    assert forget_played(world) == played
    assert compacted_files(events) == [] and wal.segments() == []
    assert simulated.read_bytes() == b"the simulated log"  # the world as simulated stays
    assert forget_played(world) == 0
