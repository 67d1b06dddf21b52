"""Room-level answers from the aggregator's memory (DESIGN §4).

``RecommendNextProduct`` needs every present viewer's rows: a room of 2,000
viewers must not mean 2,000 store reads per call. The process that owns live
state already has the room's present viewers and their live rows (the fold);
the slow-changing rows (demographics, profile) are read from the online store
once per viewer, in batches, when the viewer joins (or at the first call that
needs them) and kept while the viewer may still be present.

:meth:`RoomMemory.snapshot` runs on the event loop, the fold's only writer, so
it sees a consistent state; the rest runs in the scoring pool.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from features.tables import PRODUCT_LIVE, ROOM_STATE, VIEWER_DEMOGRAPHICS, VIEWER_PROFILE
from features.transforms import LiveAggregator
from service.domain import Deadline
from service.feast_reader import TS, Row
from service.features_online import OnlineFeatures

log = logging.getLogger(__name__)

_BATCH_VIEWS = (VIEWER_DEMOGRAPHICS.name, VIEWER_PROFILE.name)


@dataclass(slots=True)
class RoomSnapshot:
    """One room as the fold holds it at one moment; rows carry their time under ``_ts``."""

    room_id: str
    viewers: list[str]
    viewer_live: list[Row | None]
    room_state: Row | None
    product_live: list[Row | None]  # aligned with the call's candidates


@dataclass(slots=True)
class ViewerRows:
    """Some viewers' live rows in one room as the fold holds them at one moment."""

    #: Aligned with the viewers asked for; ``None`` where the fold holds no session.
    viewer_live: list[Row | None]
    room_state: Row | None


class RoomMemory:
    """Present viewers and their rows for room-level calls, without per-call store reads."""

    def __init__(
        self,
        fold: LiveAggregator,
        features: OnlineFeatures,
        max_viewers: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fold = fold
        self.features = features
        self.clock = clock
        self._max = max_viewers
        self._batch: OrderedDict[str, tuple[Row | None, Row | None]] = OrderedDict()
        self._lock = threading.Lock()
        #: One loader at a time, so a call and a join's prefetch never read the same viewer.
        self._load_lock = threading.Lock()
        self._prefetch = cf.ThreadPoolExecutor(1, thread_name_prefix="room-prefetch")
        self.store_reads = 0  # viewers read from the store (tests and metrics)
        #: (viewer, room) -> (session, its change count, its row): a row is rebuilt only
        #: after an event changed the session (2,000 rows per room call otherwise).
        self._live_rows: dict[tuple[str, str], tuple[object, int, Row]] = {}

    # -- on the event loop ------------------------------------------------------------
    def present(self, room_id: str) -> list[str]:
        room = self.fold.rooms.get(room_id)
        return sorted(room.present) if room is not None else []

    def snapshot(self, room_id: str, candidates: Sequence[str], limit: int) -> RoomSnapshot:
        now = self.clock()
        viewers = self.present(room_id)[:limit]
        rows = self.viewer_rows(room_id, viewers)
        products: list[Row | None] = []
        for p in candidates:
            key = (p, room_id)
            if key in self.fold.products:
                row = self.fold.rows(PRODUCT_LIVE.name, key)
                row[TS] = now
                products.append(row)
            else:
                products.append(None)
        return RoomSnapshot(room_id, viewers, rows.viewer_live, rows.room_state, products)

    def viewer_rows(self, room_id: str, viewers: Sequence[str], room: bool = True) -> ViewerRows:
        """The ``viewer_live`` rows of ``viewers`` in ``room_id`` and (with ``room``) the
        room's row, from the fold (the rows it writes to the online store, as of now).

        The room's row counts its present viewers by region: a call about one viewer
        leaves it to the store's short-lived cache (``room=False``)."""
        live: list[Row | None] = []
        cache = self._live_rows
        if len(cache) > 2 * self._max:
            cache.clear()
        for v in viewers:
            key = (v, room_id)
            s = self.fold.viewers.get(key)
            if s is None:
                live.append(None)
                continue
            hit = cache.get(key)
            if hit is not None and hit[0] is s and hit[1] == s.changes:
                live.append(hit[2])  # shared: answers never change a row
                continue
            row = s.row()
            row[TS] = s.last_event_ts
            cache[key] = (s, s.changes, row)
            live.append(row)
        state = self.fold.rooms.get(room_id) if room else None
        room_row: Row | None = None
        if state is not None:
            room_row = state.row()
            room_row[TS] = self.clock()  # the current state, not an aged copy
        return ViewerRows(live, room_row)

    def prefetch(self, viewer_ids: Iterable[str]) -> None:
        """Read joiners' batch rows in the background (one batched read)."""
        with self._lock:
            missing = [v for v in dict.fromkeys(viewer_ids) if v not in self._batch]
        if missing:
            self._prefetch.submit(self._load_logged, missing)

    # -- in the scoring pool ----------------------------------------------------------
    def batch_rows(
        self, viewers: Sequence[str], deadline: Deadline
    ) -> dict[str, list[Row | None]] | None:
        """Demographics and profile rows of ``viewers``; ``None`` if misses came too late."""
        with self._lock:
            missing = [v for v in viewers if v not in self._batch]
        if missing and not self._load(missing, deadline):
            return None
        out: dict[str, list[Row | None]] = {name: [] for name in _BATCH_VIEWS}
        with self._lock:
            for v in viewers:
                demo, prof = self._batch.get(v, (None, None))
                out[VIEWER_DEMOGRAPHICS.name].append(demo)
                out[VIEWER_PROFILE.name].append(prof)
        return out

    def _load_logged(self, viewers: list[str]) -> None:
        try:
            self._load(viewers, Deadline.after(5.0))
        except Exception:
            log.exception("prefetching viewers' batch rows failed; the next call reads them")

    def _load(self, viewers: list[str], deadline: Deadline) -> bool:
        if not self._load_lock.acquire(timeout=max(deadline.remaining(), 0.0)):
            return False
        try:
            with self._lock:
                viewers = [v for v in viewers if v not in self._batch]
            return not viewers or self._read(viewers, deadline)
        finally:
            self._load_lock.release()

    def _read(self, viewers: list[str], deadline: Deadline) -> bool:
        keys: list[tuple[str, ...]] = [(v,) for v in viewers]
        got = self.features.fetch({name: keys for name in _BATCH_VIEWS}, deadline)
        if got is None:
            return False
        with self._lock:
            for v, demo, prof in zip(
                viewers, got[VIEWER_DEMOGRAPHICS.name], got[VIEWER_PROFILE.name], strict=True
            ):
                self._batch[v] = (demo, prof)
                self._batch.move_to_end(v)
            while len(self._batch) > self._max:
                self._batch.popitem(last=False)
            self.store_reads += len(viewers)
        return True

    def close(self) -> None:
        self._prefetch.shutdown(wait=False, cancel_futures=True)


__all__ = ["ROOM_STATE", "RoomMemory", "RoomSnapshot"]
