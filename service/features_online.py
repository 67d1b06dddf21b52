"""Online feature access for scoring: bounded in time, cached where it pays, TTL applied.

* Viewer and room rows are read per call, all views in one task on a small
  thread pool, and waited for no longer than the caller's remaining deadline
  (minus a margin). A read that fails or is late gives ``None``: the caller
  answers from a fallback and flags it, it never hangs.
* ``viewer_demographics`` and ``viewer_profile`` (batch, rebuilt daily) are kept in
  a bounded LRU cache for ``viewer_cache_s``: the store's own read decodes one
  SQL row per feature, ~20 ms for 200 profiles, over ScoreConversion's budget.
* ``product_live`` and ``room_state`` rows, shared by every call about a room,
  are reused for ``live_cache_s`` (a quarter second by default: well inside the
  one-second event-to-scoring budget).
* ``product_stats`` (slow-changing) is cached for every known product and
  refreshed in the background, so RankProducts never reads 50 rows per call;
  ``product_live`` for a room is one batched read.
* Feast does not apply a view's TTL on online reads (feast#6821): :func:`judge`
  does, from each row's event time, and the row is flagged stale but still used.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from features.tables import (
    BY_NAME,
    PRODUCT_LIVE,
    PRODUCT_STATS,
    ROOM_STATE,
    VIEWER_DEMOGRAPHICS,
    VIEWER_LIVE,
    VIEWER_PROFILE,
)
from service.domain import Deadline, Flags
from service.feast_reader import TS, OnlineReader, Row

log = logging.getLogger(__name__)

Clock = Callable[[], float]
#: view name -> keys to read
Request = dict[str, list[tuple[str, ...]]]
#: view name -> rows, aligned with the request's keys
Rows = dict[str, list[Row | None]]

VIEWER_VIEWS = (VIEWER_DEMOGRAPHICS.name, VIEWER_PROFILE.name, VIEWER_LIVE.name)
#: Batch views (rebuilt daily) whose rows are cached per viewer for viewer_cache_s.
BATCH_VIEWER_VIEWS = frozenset({VIEWER_DEMOGRAPHICS.name, VIEWER_PROFILE.name})
#: Room-level push views, shared by every call about a room, cached for live_cache_s.
ROOM_VIEWS = frozenset({PRODUCT_LIVE.name, ROOM_STATE.name})


#: Most room-level key lists remembered whole (see OnlineFeatures._read_cached).
_GROUPS_MAX = 1024


@dataclass(slots=True)
class _Group:
    rows: list[Row | None]
    #: monotonic time the oldest of its rows was read
    oldest: float


@dataclass(slots=True)
class Judged:
    """Flags and age of the rows used for one item."""

    flags: Flags
    age_ms: int


def judge(rows: Iterable[tuple[str, Row | None]], now: float) -> Judged:
    """Stale flag and oldest age (ms) over ``(view, row)`` pairs; absent rows are skipped."""
    flags = Flags()
    age = 0.0
    for view, row in rows:
        if row is None:
            continue
        row_age = max(0.0, now - float(row[TS]))
        age = max(age, row_age)
        if row_age > ttl_s(view):
            flags.stale_features = True
    return Judged(flags, int(age * 1000))


_TTL_S: dict[str, float] = {}


def ttl_s(view: str) -> float:
    """A view's TTL in seconds (looked up once per view)."""
    ttl = _TTL_S.get(view)
    if ttl is None:
        ttl = _TTL_S[view] = BY_NAME[view].ttl.total_seconds()
    return ttl


def columns(view: str, row: Row | None) -> dict[str, Any]:
    """A row as the ``<view>__<feature>`` columns :func:`features.vector.assemble` reads."""
    if row is None:
        return {}
    return {f"{view}__{k}": v for k, v in row.items() if k != TS}


class OnlineFeatures:
    """The service's view of the online store. ``clock`` gives epoch seconds."""

    def __init__(
        self,
        reader: OnlineReader,
        *,
        threads: int = 8,
        margin_s: float = 0.002,
        margin_fraction: float = 0.2,
        product_refresh_s: float = 30.0,
        roster_refresh_s: float = 2.0,
        viewer_cache_s: float = 60.0,
        viewer_cache_size: int = 100_000,
        live_cache_s: float = 0.25,
        inline_local_reads: bool = True,
        clock: Clock = time.time,
    ) -> None:
        self.reader = reader
        self.clock = clock
        #: fetch_async reads in place (no thread hop) when the store is a local file.
        self.inline = inline_local_reads and bool(getattr(reader, "local", False))
        self._margin = margin_s
        self._keep = 1.0 - margin_fraction
        self._pool = cf.ThreadPoolExecutor(threads, thread_name_prefix="store-read")
        self._products: dict[str, Row | None] = {}
        self._products_lock = threading.Lock()
        self._product_refresh_s = product_refresh_s
        self._roster: dict[str, list[str]] = {}
        self._roster_at = float("-inf")
        self._roster_s = roster_refresh_s
        self._roster_lock = threading.Lock()
        self._rows: OrderedDict[tuple[str, tuple[str, ...]], tuple[Row | None, float]] = (
            OrderedDict()
        )
        self._rows_lock = threading.Lock()
        #: The last read of each room-level key list (a room's candidates): one lookup
        #: instead of one per key while every row of it is fresh.
        self._groups: OrderedDict[tuple[str, tuple[tuple[str, ...], ...]], _Group] = OrderedDict()
        self._cache_s = dict.fromkeys(BATCH_VIEWER_VIEWS, viewer_cache_s)
        self._cache_s.update(dict.fromkeys(ROOM_VIEWS, live_cache_s))
        self._rows_max = viewer_cache_size
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    # -- bounded reads ---------------------------------------------------------------

    def _timeout(self, deadline: Deadline) -> float:
        """How long a store read may take: what is left, minus time to answer after it."""
        return deadline.remaining() * self._keep - self._margin

    def fetch(self, request: Request, deadline: Deadline) -> Rows | None:
        """Read every view of ``request`` in one pooled task; ``None`` if failed or late."""
        timeout = self._timeout(deadline)
        if timeout <= 0:
            return None
        future = self._pool.submit(self._read_all, request)
        try:
            return future.result(timeout=timeout)
        except Exception as exc:
            return self._failed(future, exc, timeout)

    async def fetch_async(self, request: Request, deadline: Deadline) -> Rows | None:
        """:meth:`fetch` for a caller on an event loop: the loop waits, it never blocks on a
        networked store. A local store (:attr:`inline`) is read in place: its read is
        shorter than the hop to the pool and back (measured in ``liverec bench``)."""
        timeout = self._timeout(deadline)
        if timeout <= 0:
            return None
        if self.inline:
            try:
                return self._read_all(request)
            except Exception:
                log.exception("online store read failed")
                return None
        future = self._pool.submit(self._read_all, request)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except Exception as exc:
            return self._failed(future, exc, timeout)

    @staticmethod
    def _failed(future: cf.Future[Rows], exc: Exception, timeout: float) -> None:
        """A late read is cancelled and logged; a failed one logged with its traceback."""
        if isinstance(exc, TimeoutError):  # cf.TimeoutError and asyncio's are this one
            future.cancel()
            log.warning("online store read timed out after %.1f ms", timeout * 1000)
        else:
            log.exception("online store read failed", exc_info=exc)

    def _read_all(self, request: Request) -> Rows:
        out: Rows = {}
        for view, keys in request.items():
            # Each distinct key read once (a request may repeat a viewer).
            distinct = list(dict.fromkeys(keys))
            if self._cache_s.get(view, 0.0) > 0:
                rows = self._read_cached(view, distinct, self._cache_s[view])
            else:
                rows = self.reader.read(view, distinct)
            if len(distinct) == len(keys):
                out[view] = rows
            else:
                by_key = dict(zip(distinct, rows, strict=True))
                out[view] = [by_key[k] for k in keys]
        return out

    def _read_cached(
        self, view: str, keys: list[tuple[str, ...]], ttl_s: float
    ) -> list[Row | None]:
        """Rows from a bounded LRU cache no older than ``ttl_s``, reading only the misses."""
        now = time.monotonic()
        group_key = (view, tuple(keys)) if view in ROOM_VIEWS and len(keys) > 1 else None
        if group_key is not None:
            group = self._groups.get(group_key)
            if group is not None and now - group.oldest <= ttl_s:
                return group.rows
        rows, oldest = self._read_cached_rows(view, keys, ttl_s, now)
        if group_key is not None:
            with self._rows_lock:
                self._groups[group_key] = _Group(rows, oldest)
                self._groups.move_to_end(group_key)
                while len(self._groups) > _GROUPS_MAX:
                    self._groups.popitem(last=False)
        return rows

    def _read_cached_rows(
        self, view: str, keys: list[tuple[str, ...]], ttl_s: float, now: float
    ) -> tuple[list[Row | None], float]:
        """The rows, and the monotonic time the oldest of them was read."""
        out: list[Row | None] = [None] * len(keys)
        missing: list[int] = []
        oldest = now
        with self._rows_lock:
            for i, key in enumerate(keys):
                hit = self._rows.get((view, key))
                if hit is not None and now - hit[1] <= ttl_s:
                    out[i] = hit[0]
                    oldest = min(oldest, hit[1])
                    self._rows.move_to_end((view, key))
                else:
                    missing.append(i)
        if missing:
            got = self.reader.read(view, [keys[i] for i in missing])
            with self._rows_lock:
                for i, row in zip(missing, got, strict=True):
                    out[i] = row
                    self._rows[(view, keys[i])] = (row, now)
                    self._rows.move_to_end((view, keys[i]))
                while len(self._rows) > self._rows_max:
                    self._rows.popitem(last=False)
        return out, oldest

    def viewer_request(self, viewer_ids: Sequence[str], room_id: str) -> Request:
        one: list[tuple[str, ...]] = [(v,) for v in viewer_ids]
        return {
            VIEWER_DEMOGRAPHICS.name: one,
            VIEWER_PROFILE.name: one,
            VIEWER_LIVE.name: [(v, room_id) for v in viewer_ids],
            ROOM_STATE.name: [(room_id,)],
        }

    # -- product cache ---------------------------------------------------------------

    def products(
        self, product_ids: Sequence[str], deadline: Deadline
    ) -> tuple[list[Row | None], bool]:
        """``product_stats`` rows from the cache, reading only the misses; ``ok`` is False
        when misses could not be read in time (they come back as ``None``)."""
        with self._products_lock:
            missing = [p for p in product_ids if p not in self._products]
        ok = True
        if missing:
            got = self.fetch({PRODUCT_STATS.name: [(p,) for p in missing]}, deadline)
            if got is None:
                ok = False
            else:
                with self._products_lock:
                    self._products.update(zip(missing, got[PRODUCT_STATS.name], strict=True))
        with self._products_lock:
            return [self._products.get(p) for p in product_ids], ok

    def cached_products(self, product_ids: Sequence[str]) -> list[Row | None] | None:
        """``product_stats`` rows if every one is in the cache (no read), else ``None``."""
        cache = self._products
        with self._products_lock:
            try:
                return [cache[p] for p in product_ids]
            except KeyError:
                return None

    def popularity(self, product_ids: Sequence[str]) -> list[float]:
        """Historical purchase rate of each cached product (0 when unknown): the fallback."""
        with self._products_lock:
            rows = [self._products.get(p) for p in product_ids]
        return [float((r or {}).get("purchase_rate") or 0.0) for r in rows]

    def warm_products(self, product_ids: Iterable[str]) -> int:
        """Load ``product_stats`` for ``product_ids`` (blocking, at start-up)."""
        ids = list(dict.fromkeys(product_ids))
        rows: list[Row | None] = []
        for start in range(0, len(ids), 500):
            rows.extend(
                self.reader.read(PRODUCT_STATS.name, [(p,) for p in ids[start : start + 500]])
            )
        with self._products_lock:
            cache = self._products
            for pid, row in zip(ids, rows, strict=True):
                old = cache.get(pid)
                # A row read again unchanged keeps its object: what scoring built from it
                # (product columns, cross features) is kept while its rows are the same
                # objects, and stays valid through the refresh.
                cache[pid] = old if old is not None and old == row else row
        return sum(r is not None for r in rows)

    def refresh_products(self) -> None:
        with self._products_lock:
            ids = list(self._products)
        self.warm_products(ids)

    def start_refresh(self) -> None:
        """Refresh the product cache every ``product_refresh_s`` in a daemon thread."""

        def loop() -> None:
            while not self._stop.wait(self._product_refresh_s):
                try:
                    self.refresh_products()
                except Exception:
                    log.exception("product cache refresh failed; keeping the cached rows")

        self._refresher = threading.Thread(target=loop, name="product-refresh", daemon=True)
        self._refresher.start()

    # -- room roster -----------------------------------------------------------------

    def present_viewers(self, room_id: str, deadline: Deadline) -> list[str] | None:
        """Viewers present in ``room_id``; ``None`` when the roster could not be read in time."""
        roster = self.present_viewers_all(deadline)
        return None if roster is None else list(roster.get(room_id, ()))

    def present_viewers_all(self, deadline: Deadline) -> dict[str, list[str]] | None:
        """Every room's present viewers, from a scan reused for ``roster_refresh_s``."""
        if time.monotonic() - self._roster_at > self._roster_s:
            timeout = self._timeout(deadline)
            if timeout <= 0:
                return None
            future = self._pool.submit(self._refresh_roster)
            try:
                future.result(timeout=timeout)
            except cf.TimeoutError:
                log.warning("room roster read timed out")
                return None
            except Exception:
                log.exception("room roster read failed")
                return None
        return self._roster

    def _refresh_roster(self) -> None:
        with self._roster_lock:
            if time.monotonic() - self._roster_at <= self._roster_s:
                return
            self._roster = self.reader.present_viewers()
            self._roster_at = time.monotonic()

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["PRODUCT_LIVE", "VIEWER_VIEWS", "Judged", "OnlineFeatures", "columns", "judge"]
