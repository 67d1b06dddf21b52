"""The aggregator: the one owner of live state (DESIGN §4, §11).

It owns the duplicate check, the out-of-order window, the live aggregates
(:class:`features.transforms.LiveAggregator`, the same fold the batch build
runs), the write-ahead log and every online-store write. Plain asyncio, no
gRPC: the servicer (or a worker forwarding to it) calls :meth:`ingest`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from features import schema
from features.tables import PRODUCT_LIVE, ROOM_STATE, VIEWER_LIVE
from features.transforms import Event, FxLookup, LiveAggregator
from service.errors import Overloaded, Unavailable
from service.ingest.dedupe import DedupeWindow
from service.ingest.online_writer import OnlineWriter
from service.ingest.wal import WriteAheadLog

log = logging.getLogger(__name__)
_FIELDS = [f.name for f in schema.EVENTS]
_PUSH = (VIEWER_LIVE.name, PRODUCT_LIVE.name, ROOM_STATE.name)


@dataclass(frozen=True)
class IngestLimits:
    """Validation and buffering limits (from the service settings)."""

    max_future_s: float = 300.0
    max_past_s: float = 86400.0
    out_of_order_s: float = 30.0
    dedupe_window_s: float = 86400.0
    dedupe_max_ids: int = 5_000_000
    max_id_len: int = 128
    flush_interval_s: float = 0.2
    flush_max_rows: int = 5000
    max_pending_rows: int = 200_000


@dataclass(frozen=True)
class Rejected:
    index: int
    event_id: str
    field: str
    reason: str


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    rejected: list[Rejected] = field(default_factory=list)


class Aggregator:
    """Validate -> de-duplicate -> write-ahead log (fsync) -> fold -> coalesced writes."""

    def __init__(
        self,
        wal_dir: Path,
        events_root: Path,
        writer: OnlineWriter | None,
        region_of: Callable[[str], str],
        fx: FxLookup,
        limits: IngestLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits or IngestLimits()
        self.clock = clock
        self.wal = WriteAheadLog(wal_dir)
        self.events_root = events_root
        self.writer = writer
        self.fold = LiveAggregator(region_of, fx)
        self.dedupe = DedupeWindow(self.limits.dedupe_window_s, self.limits.dedupe_max_ids)
        self.watermark = float("-inf")
        self._dirty: dict[str, dict[tuple[str, ...], float]] = {t: {} for t in _PUSH}
        #: What the online store holds, per table and key (to write only changes).
        self._written: dict[str, dict[tuple[str, ...], dict[str, Any]]] = {t: {} for t in _PUSH}
        #: (viewer, room) -> time of the last event of that session visible online.
        self.last_applied: dict[tuple[str, str], float] = {}
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_now = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self.events_applied = 0
        self.flushes = 0

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        self.wal.open()
        recovered = self._recover()
        if recovered:
            log.info("rebuilt live state from %d logged events", recovered)
            await self.flush()
        self._flush_task = asyncio.create_task(self._flush_loop(), name="aggregator-flush")

    async def stop(self) -> None:
        if self._flush_task is not None:
            self._flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush_task
            self._flush_task = None
        await self.flush()
        self.wal.seal()
        self.wal.close()
        try:
            moved = self.wal.compact(self.events_root)
        finally:
            self.wal.unlock()
        log.info("aggregator stopped; compacted %d events into the event log", moved)

    def _recover(self) -> int:
        """Duplicate window and live aggregates from the event log and the WAL."""
        now = self.clock()
        horizon = now - self.limits.dedupe_window_s
        tables = []
        if self.events_root.exists() and any(self.events_root.rglob("*.parquet")):
            log_table = schema.read_events(self.events_root.parent)
            t = log_table.column("event_time")
            cut = pa.scalar(int(horizon * 1e6), type=pa.int64()).cast(schema.TS)
            # Events further in the future than ingestion accepts have not happened yet
            # (a simulated world may end after now): they are not live state.
            end = pa.scalar(int((now + self.limits.max_future_s) * 1e6), type=pa.int64())
            keep = pc.and_(pc.greater_equal(t, cut), pc.less_equal(t, end.cast(schema.TS)))
            tables.append(log_table.filter(keep))
        tables.extend(self.wal.replay())
        n = 0
        for table in tables:
            for row in _rows(table):
                if row["event_id"] in self.dedupe:
                    continue
                self.dedupe.add(row["event_id"], row["event_time"], self.clock())
                self._apply(row)
                n += 1
        return n

    # -- ingestion --------------------------------------------------------------------
    async def ingest(self, events: Sequence[dict[str, Any]]) -> IngestResult:
        """Accept what is valid and new; durable before this returns."""
        if self.pending_rows() >= self.limits.max_pending_rows:
            raise Overloaded("live-ingestion buffers are full; retry shortly")
        result = IngestResult()
        now = self.clock()
        accepted: list[dict[str, Any]] = []
        batch_ids: set[str] = set()
        for i, e in enumerate(events):
            problem = self._problem(e, now)
            if problem is not None:
                fld, _, _reason = problem.partition(": ")
                result.rejected.append(Rejected(i, str(e.get("event_id") or ""), fld, problem))
                continue
            eid = e["event_id"]
            if eid in self.dedupe or eid in batch_ids:
                result.duplicates += 1
                continue
            batch_ids.add(eid)
            accepted.append(e)
        if accepted:
            for e in accepted:
                self.dedupe.add(e["event_id"], e["event_time"], now)
            # Once handed to the log, the batch is seen through even if the caller goes
            # away meanwhile (its deadline, a cancel): made durable and applied, so that
            # a resend counts as duplicates. Unshielded, a cancel left the events in the
            # duplicate window, and possibly in the log, but never in live state.
            commit = asyncio.ensure_future(self._commit(accepted, result))
            try:
                await asyncio.shield(commit)
            except asyncio.CancelledError:
                commit.add_done_callback(_log_if_abandoned)
                raise
        return result

    async def _commit(self, accepted: list[dict[str, Any]], result: IngestResult) -> None:
        """Make ``accepted`` durable, then apply it; on a log failure, accept none of it."""
        try:
            await asyncio.wrap_future(self.wal.append(_batch(accepted)))
        except Exception as exc:
            for e in accepted:  # not durable, so not accepted: let the client resend
                self.dedupe.discard(e["event_id"])
            raise Unavailable("write-ahead log unavailable; nothing was accepted") from exc
        for e in accepted:
            if e["event_time"] < self.watermark - self.limits.out_of_order_s:
                result.late += 1
            self._apply(e)
        result.accepted = len(accepted)
        if self.pending_rows() >= self.limits.flush_max_rows:
            self._flush_now.set()

    def _problem(self, e: dict[str, Any], now: float) -> str | None:
        problem = schema.event_problem(e)
        if problem is not None:
            return problem
        for col in ("event_id", "room_id", "viewer_id", "product_id"):
            v = e.get(col)
            if v and len(v) > self.limits.max_id_len:
                return f"{col}: longer than {self.limits.max_id_len} characters"
        t = e.get("event_time")
        if not isinstance(t, float | int):
            return "event_time: missing"
        if t > now + self.limits.max_future_s:
            return (
                f"event_time: {t - now:.0f}s in the future (limit {self.limits.max_future_s:.0f}s)"
            )
        if t < now - self.limits.max_past_s:
            return f"event_time: {now - t:.0f}s in the past (limit {self.limits.max_past_s:.0f}s)"
        return None

    def _apply(self, e: dict[str, Any]) -> None:
        changes = self.fold.apply(
            Event(
                e["event_id"],
                e["event_type"],
                float(e["event_time"]),
                e["room_id"],
                e.get("viewer_id") or None,
                e.get("product_id") or None,
                e.get("chat_topic") or None,
                e.get("amount_minor"),
                e.get("currency") or None,
                e.get("payment_method") or None,
                e.get("planned_end_time"),
            )
        )
        t = float(e["event_time"])
        self.watermark = max(self.watermark, t)
        for name, keys in (
            (VIEWER_LIVE.name, changes.viewer_live),
            (PRODUCT_LIVE.name, changes.product_live),
            (ROOM_STATE.name, changes.room_state),
        ):
            dirty = self._dirty[name]
            for key in keys:
                dirty[key] = max(t, dirty.get(key, t))
        self.events_applied += 1

    # -- writing to the online store ---------------------------------------------------
    def pending_rows(self) -> int:
        return sum(len(d) for d in self._dirty.values())

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), self.limits.flush_interval_s)
            self._flush_now.clear()
            try:
                await self.flush()
            except Exception:  # keep the rows dirty and try again next interval
                log.exception("online-store flush failed; will retry")

    async def flush(self) -> int:
        """Write every changed row (coalesced per key) to the online store."""
        async with self._flush_lock:
            taken = {name: d for name, d in self._dirty.items() if d}
            if not taken:
                return 0
            self._dirty = {t: ({} if t in taken else self._dirty[t]) for t in _PUSH}
            rows = {name: self._changed_rows(name, d) for name, d in taken.items()}
            written = 0
            if self.writer is not None:
                try:
                    written = await asyncio.to_thread(self._write, rows)
                except Exception:
                    for name, d in taken.items():  # put them back, newer changes win
                        for key, ts in d.items():
                            self._dirty[name].setdefault(key, ts)
                            self._written[name].pop(key, None)  # rewrite them whole
                    raise
            for key, _, ts in rows.get(VIEWER_LIVE.name, []):
                viewer, room = key
                self.last_applied[(viewer, room)] = max(
                    ts, self.last_applied.get((viewer, room), ts)
                )
            self.flushes += 1
            return written

    def _changed_rows(
        self, name: str, dirty: dict[tuple[str, ...], float]
    ) -> list[tuple[tuple[str, ...], dict[str, Any], float]]:
        """Each dirty key's columns that differ from what was last written."""
        out = []
        written = self._written[name]
        for key, ts in dirty.items():
            row = self.fold.rows(name, key)
            prev = written.get(key)
            if prev is None:
                changed = row
            else:
                changed = {c: v for c, v in row.items() if not _same(prev.get(c), v)}
                if not changed:
                    continue
            written[key] = row
            out.append((key, changed, ts))
        return out

    def _write(self, rows: dict[str, list[tuple[tuple[str, ...], dict[str, Any], float]]]) -> int:
        assert self.writer is not None
        return sum(self.writer.write(name, r) for name, r in rows.items())

    # -- room-level questions, from memory -----------------------------------------------
    def present_viewers(self, room_id: str) -> list[str]:
        room = self.fold.rooms.get(room_id)
        return list(room.present) if room is not None else []


def _same(a: Any, b: Any) -> bool:
    return a == b or (a != a and b != b)  # NaN equals NaN here


#: Timestamp columns: epoch seconds in the dicts, microseconds in the log.
_TIMES = frozenset(f.name for f in schema.EVENTS if f.type == schema.TS)


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    rows = table.to_pylist()
    for r in rows:
        for name in _TIMES:
            if r.get(name) is not None:
                r[name] = r[name].timestamp()
    return rows


def _batch(events: Sequence[dict[str, Any]]) -> pa.RecordBatch:
    cols: dict[str, list[Any]] = {name: [] for name in _FIELDS}
    for e in events:
        for name in _FIELDS:
            v = e.get(name)
            if name in _TIMES:
                v = None if v is None else round(float(v) * 1e6)
            elif v == "":
                v = None
            cols[name].append(v)
    arrays = [
        pa.array(cols[f.name], type=pa.int64()).cast(f.type)
        if f.name in _TIMES
        else pa.array(cols[f.name], type=f.type)
        for f in schema.EVENTS
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema.EVENTS)


def _log_if_abandoned(task: asyncio.Future[None]) -> None:
    """How a commit whose caller was cancelled ended, if it failed: nobody else will read it."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("a batch whose caller went away was not accepted: %s", task.exception())
