"""The write-ahead log's writer thread: group commit, and callers that go away."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from features import schema
from service.ingest.wal import WriteAheadLog


def _batch(event_id: str) -> pa.RecordBatch:
    cols: dict[str, list[object]] = {f.name: [None] for f in schema.EVENTS}
    cols.update(event_id=[event_id], event_type=["like"], room_id=["r1"], viewer_id=["v1"])
    arrays = [pa.array(cols[f.name]).cast(f.type) for f in schema.EVENTS]
    return pa.RecordBatch.from_arrays(arrays, schema=schema.EVENTS)


def _wait_until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    give_up = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < give_up, "timed out"
        time.sleep(0.001)


def test_a_batch_cancelled_before_pickup_is_withdrawn_and_the_writer_goes_on(
    tmp_path: Path,
) -> None:
    """Cancelling a queued batch's future once ended the writer thread (setting the result
    of a cancelled future raises), and every later append waited forever."""
    wal = WriteAheadLog(tmp_path / "wal")
    wal.open()
    try:
        with wal._lock:  # the writer picks a up, then waits for the lock
            a = wal.append(_batch("a"))
            _wait_until(a.running)
            b = wal.append(_batch("b"))  # queued behind a: not picked up yet
            assert b.cancel() and not a.cancel()  # a is being written: too late to withdraw
        assert a.result(timeout=10) is None
        c = wal.append(_batch("c"))
        assert c.result(timeout=10) is None  # the writer is still there
        assert wal._thread is not None and wal._thread.is_alive()
    finally:
        wal.close()
    written = [e for t in wal.replay() for e in t.column("event_id").to_pylist()]
    assert written == ["a", "c"]
