"""The scoring core: questions in, answers out. Knows nothing of gRPC.

Every answer is built from online rows assembled by :func:`features.vector.assemble`
(the function training uses, so train and serve cannot drift) and scored by the
model the registry serves at that moment (one reference taken per call, so a
hot swap never mixes two versions in one answer). When the store is slow or
down, or no model is loaded, the answer comes from a fallback (base rate,
popularity) and says so in its flags; it is never late on purpose.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
import itertools
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from features.tables import (
    BY_NAME,
    PRODUCT_LIVE,
    ROOM_STATE,
    VIEWER_DEMOGRAPHICS,
    VIEWER_LIVE,
    VIEWER_PROFILE,
)
from features.vector import (
    CONVERSION,
    EXPOSURE_OVERLAY,
    EXPOSURE_STAGE,
    NEXT_PRODUCT,
    GridBlocks,
    assemble_grid,
    assemble_viewers,
    cross_block,
    grid_blocks,
    grid_sources,
    pack_static,
    product_at,
    product_static,
    stack_static,
    viewer_at,
    viewer_live,
    viewer_now,
    viewer_static,
)
from service.domain import (
    ConversionAnswer,
    Deadline,
    Flags,
    Meta,
    NextProductAnswer,
    NextProductQuery,
    ProfileAnswer,
    ProfileQuery,
    RankAnswer,
    RankProductsQuery,
    Reason,
    ScoreConversionQuery,
    ScoredProduct,
    Segment,
    ViewerScore,
)
from service.errors import DeadlineExceeded
from service.feast_reader import TS, Row
from service.features_online import VIEWER_VIEWS, OnlineFeatures, Request, Rows, judge, ttl_s
from service.ingest.rooms import RoomMemory, RoomSnapshot, ViewerRows
from service.models import LoadedModel, ModelRegistry
from service.reasons import explain_room, explain_rows
from service.room_scores import RoomGrid, RoomScores, cross_of
from service.settings import CONVERSION_MODEL, NEXT_PRODUCT_MODEL, ServiceSettings

if TYPE_CHECKING:
    from features.served_model import TreeGroups

#: Most viewers whose contributions explain a candidate of RecommendNextProduct.
REASON_SAMPLE = 200
#: How many of the viewer columns the trees split on most order a room's grid.
GRID_ORDER_BY = 10
#: Rows to walk through the trees below which a room's call walks them in one part (on one
#: bulk thread): fewer are not worth waking the second.
WALK_ALONE = 2_000
#: Rows of a room's grid built and submitted to the model at a time: small enough that
#: the trees start early, large enough that a part's fixed cost (one job on a bulk thread,
#: one session run per group of trees it walks) does not count.
GRID_PART_ROWS = 7_500

Cols = dict[str, Any]
K = TypeVar("K")
T = TypeVar("T")
V = TypeVar("V")


def view_columns(view: str, rows: Sequence[Row | None]) -> Cols:
    """Rows of one view as ``<view>__<feature>`` columns: float64 with NaN for numbers,
    objects with ``None`` for strings, where a row or a value is absent."""
    numbers, pick, layout = _numbers(view)
    n = len(rows)
    out: Cols = {}
    if numbers:
        # One conversion for the whole view (numpy reads None as NaN), not one per column.
        blank = (None,) * len(numbers)
        matrix = (
            np.array([pick(r) if r else blank for r in rows], np.float64).T
            if n
            else np.empty((len(numbers), 0))
        )
        matrix = np.ascontiguousarray(matrix)
    for full, c, j in layout:
        if j < 0:
            out[full] = np.array([r.get(c) if r else None for r in rows], dtype=object)
        else:
            out[full] = matrix[j]
    return out


def _picker(names: tuple[str, ...]) -> Callable[[Row], tuple[Any, ...]]:
    """``row -> (row.get(name) for name in names)``, with one C call when every name is there."""
    if not names:
        return lambda r: ()
    many = operator.itemgetter(*names)
    get = many if len(names) > 1 else lambda r: (many(r),)

    def pick(row: Row) -> tuple[Any, ...]:
        try:
            return get(row)
        except KeyError:
            return tuple(map(row.get, names))

    return pick


#: view -> (numeric columns, their picker, [(full name, column, index among numbers or -1)])
_NUMBERS: dict[
    str,
    tuple[tuple[str, ...], Callable[[Row], tuple[Any, ...]], tuple[tuple[str, str, int], ...]],
] = {}


def _numbers(
    view: str,
) -> tuple[tuple[str, ...], Callable[[Row], tuple[Any, ...]], tuple[tuple[str, str, int], ...]]:
    """A view's numeric columns in declared order, their picker and the layout of all its
    columns (built once per view)."""
    found = _NUMBERS.get(view)
    if found is None:
        numbers = tuple(c for c, k in BY_NAME[view].columns.items() if k != "string")
        layout = tuple(
            (f"{view}__{c}", c, -1 if k == "string" else numbers.index(c))
            for c, k in BY_NAME[view].columns.items()
        )
        found = _NUMBERS[view] = (numbers, _picker(numbers), layout)
    return found


class _KeptWhileSame(Generic[K, V]):
    """Values built from online rows, kept while those rows stay the same objects (the
    store's caches hand out the same row objects until they refresh): a bounded LRU,
    safe from several threads."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[K, tuple[list[Row | None], V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, rows: list[Row | None], build: Callable[[], V]) -> V:
        """The value kept for ``key`` if it was built from these very ``rows``, else
        ``build()``, kept in its place."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and _same(hit[0], rows):
                self._entries.move_to_end(key)
                return hit[1]
        value = build()
        self._keep([(key, rows, value)])
        return value

    def get_many(
        self,
        keys: Sequence[K],
        rows: Sequence[list[Row | None]],
        build: Callable[[list[int]], list[V]],
    ) -> list[V]:
        """:meth:`get` of each key under one lock: ``build(missed)`` makes the values of
        the positions not kept (or whose rows changed) in one go."""
        out: list[Any] = [None] * len(keys)
        missed: list[int] = []
        with self._lock:
            entries = self._entries
            for i, (key, r) in enumerate(zip(keys, rows, strict=True)):
                hit = entries.get(key)
                if hit is not None and _same(hit[0], r):
                    entries.move_to_end(key)
                    out[i] = hit[1]
                else:
                    missed.append(i)
        if missed:
            values = build(missed)
            for i, value in zip(missed, values, strict=True):
                out[i] = value
            self._keep([(keys[i], rows[i], out[i]) for i in missed])
        return out

    def _keep(self, items: list[tuple[K, list[Row | None], V]]) -> None:
        with self._lock:
            for key, rows, value in items:
                self._entries[key] = (rows, value)
                self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def kept(self, key: K) -> V | None:
        hit = self._entries.get(key)
        return None if hit is None else hit[1]


def _read_only(*blocks: Cols) -> None:
    for block in blocks:
        for a in block.values():
            a.flags.writeable = False


class ProductColumns:
    """The product columns of a candidate list, and the part of their product block that
    does not depend on the time (:func:`features.vector.product_static`), reused while
    its rows stay the same objects.

    The product cache hands out the same ``product_stats`` rows until its refresh and the
    live cache the same ``product_live`` rows for ``live_cache_s``, so calls about one
    room's candidates mostly find their columns built. Cached arrays are read-only.
    """

    def __init__(self, size: int = 256) -> None:
        self._kept: _KeptWhileSame[tuple[str, ...], tuple[Cols, Cols]] = _KeptWhileSame(size)

    def get(
        self, cands: tuple[str, ...], stats: list[Row | None], live: list[Row | None]
    ) -> tuple[Cols, Cols]:
        """``(columns, static product block)`` of these rows."""

        def build() -> tuple[Cols, Cols]:
            cols = view_columns("product_stats", stats)
            cols.update(view_columns(PRODUCT_LIVE.name, live))
            cols["product_id"] = np.array(cands, dtype=object)
            static = product_static(cols)
            _read_only(cols, static)
            return cols, static

        return self._kept.get(cands, [*stats, *live], build)


@dataclass(frozen=True, slots=True)
class _ManyLive:
    """Many viewers' live part as last built: each viewer's place, its three rows
    (demographics, profile, live) and the columns (read-only)."""

    at: dict[str, int]
    rows: list[tuple[Row | None, Row | None, Row | None]]
    part: Cols


class ViewerStatic:
    """Viewers' batch part (:func:`features.vector.viewer_static` of demographics and
    profile), kept per viewer while its two rows stay the same objects: the store's cache
    (and the room memory) hand out the same batch rows until they refresh, so a viewer
    scored again pays only for the live part. Kept arrays are read-only; safe from
    several threads.

    A call about one viewer (RankProducts, an overlay refresh) finds its columns as they
    are (a bounded LRU of ``one_size``: about 5 KB a viewer). Calls about many viewers
    (ScoreConversion, RecommendNextProduct) find each viewer as one packed row
    (:func:`features.vector.pack_static`, about 0.4 KB; an LRU of ``size``), stack them and
    convert only the viewers not kept.

    A call about one viewer also finds the viewer's live part (:meth:`with_live`), kept
    while the viewer's live row is the same object too (an LRU of ``one_size``). A call
    about a room's viewers (RecommendNextProduct, ScoreConversion) finds the live part of
    the viewers whose three rows are the same objects as in its key's last call
    (:meth:`many_live`: the last part of each of ``rooms`` keys, ~0.5 KB a viewer, holding
    the rows it was made of until replaced).
    """

    def __init__(self, size: int = 100_000, one_size: int = 4096, rooms: int = 16) -> None:
        self._one: _KeptWhileSame[str, Cols] = _KeptWhileSame(one_size)
        self._live: _KeptWhileSame[str, Cols] = _KeptWhileSame(one_size)
        self._many: _KeptWhileSame[str, tuple[np.ndarray, str]] = _KeptWhileSame(size)
        #: A room's viewers' live part as last built (:meth:`many_live`), ``rooms`` of them.
        self._rooms: OrderedDict[Hashable, _ManyLive] = OrderedDict()
        self._rooms_size = rooms
        self._rooms_lock = threading.Lock()

    def get(
        self,
        viewer_ids: Sequence[str],
        demographics: Sequence[Row | None],
        profiles: Sequence[Row | None],
    ) -> Cols:
        """The static columns of ``viewer_ids`` (equal to :func:`viewer_static` of their
        rows' columns), from kept parts where the viewer's rows are the same objects."""
        if len(viewer_ids) == 1:
            demo, prof = demographics[0], profiles[0]

            def build_one() -> Cols:
                static = _static([demo], [prof])
                _read_only(static)
                return static

            return self._one.get(viewer_ids[0], [demo, prof], build_one)

        def build(missed: list[int]) -> list[tuple[np.ndarray, str]]:
            packed, markets = pack_static(
                _static([demographics[i] for i in missed], [profiles[i] for i in missed])
            )
            packed.flags.writeable = False
            return list(zip(packed, markets, strict=True))

        pairs = [[d, p] for d, p in zip(demographics, profiles, strict=True)]
        kept = self._many.get_many(viewer_ids, pairs, build)
        return stack_static([row for row, _ in kept], [market for _, market in kept])

    def with_live(
        self, viewer_id: str, demographics: Row | None, profile: Row | None, live: Row | None
    ) -> Cols:
        """:func:`features.vector.viewer_live` of one viewer (a call about one viewer), kept
        while its batch rows and its live row stay the same objects: the fold hands out
        the same live row until the viewer's next event, so a viewer's overlay refreshed
        between its events pays only for the time and the room (:func:`viewer_now`)."""

        def build() -> Cols:
            static = self.get([viewer_id], [demographics], [profile])
            part = viewer_live(static, view_columns(VIEWER_LIVE.name, [live]))
            _read_only({k: v for k, v in part.items() if k not in static})
            return part

        return self._live.get(viewer_id, [demographics, profile, live], build)

    def many_live(
        self,
        key: Hashable,
        viewer_ids: Sequence[str],
        demographics: Sequence[Row | None],
        profiles: Sequence[Row | None],
        live: Sequence[Row | None],
    ) -> Cols:
        """:func:`features.vector.viewer_live` of many viewers (a room's), as ``key``'s last
        one with the viewers whose three rows are not the same objects as then (or who
        were not there) converted again: in a live room asked every few seconds, most
        viewers sent nothing in between. Each viewer's columns are its own (the same bits
        as converted with any others); viewers are matched by id."""
        n = len(viewer_ids)
        rows = list(zip(demographics, profiles, live, strict=True))
        with self._rooms_lock:
            last = self._rooms.get(key)
            if last is not None:
                self._rooms.move_to_end(key)
        at = np.full(n, -1, dtype=np.int64)
        if last is not None:
            where, before = last.at, last.rows
            for i, (v, r) in enumerate(zip(viewer_ids, rows, strict=True)):
                j = where.get(v, -1)
                if j >= 0:
                    d, p, x = before[j]
                    if d is r[0] and p is r[1] and x is r[2]:
                        at[i] = j
        todo = np.flatnonzero(at < 0)
        if last is None or len(todo) == n:
            part = self._live_part(viewer_ids, rows)
        elif not len(todo) and n == len(last.rows) and (at == np.arange(n)).all():
            return last.part  # the same viewers, the same rows: read-only, shared
        else:
            redo = todo.tolist()
            fresh = (
                self._live_part([viewer_ids[i] for i in redo], [rows[i] for i in redo])
                if redo
                else {}
            )
            part = {}
            for k, old in last.part.items():
                new = old[at]  # a copy; the rows of viewers to convert are set next
                if redo:
                    new[todo] = fresh[k]
                part[k] = new
        if not all(type(v) is np.ndarray and len(v) == n for v in part.values()):
            return part  # not kept: a column that is not one value per viewer
        for v in part.values():
            v.flags.writeable = False
        entry = _ManyLive({v: i for i, v in enumerate(viewer_ids)}, rows, part)
        with self._rooms_lock:
            self._rooms[key] = entry
            self._rooms.move_to_end(key)
            while len(self._rooms) > self._rooms_size:
                self._rooms.popitem(last=False)
        return part

    def _live_part(self, viewer_ids: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> Cols:
        static = self.get(viewer_ids, [r[0] for r in rows], [r[1] for r in rows])
        return viewer_live(static, view_columns(VIEWER_LIVE.name, [r[2] for r in rows]))

    def kept(self, viewer_id: str) -> Cols | None:
        """The columns kept for ``viewer_id`` alone (tests)."""
        return self._one.kept(viewer_id)

    def kept_live(self, viewer_id: str) -> Cols | None:
        """The live part kept for ``viewer_id`` (tests)."""
        return self._live.kept(viewer_id)

    def packed(self, viewer_id: str) -> np.ndarray | None:
        """The packed row kept for ``viewer_id`` (tests)."""
        hit = self._many.kept(viewer_id)
        return None if hit is None else hit[0]


def _static(demographics: list[Row | None], profiles: list[Row | None]) -> Cols:
    cols = view_columns(VIEWER_DEMOGRAPHICS.name, demographics)
    cols.update(view_columns(VIEWER_PROFILE.name, profiles))
    return viewer_static(cols)


def _alike_order(block: Cols, keys: Sequence[str], n: int) -> np.ndarray | None:
    """The order of ``block``'s ``n`` viewers sorted by the columns ``keys``, first key
    first (NaN last, ties in their order); ``None``: as they are.

    ONNX Runtime walks every tree for one row after another; rows whose values take the
    same branches keep its branch predictor and caches right. Measured on the bench
    room's grid (2,000 viewers x 30 products, next-product model, one thread): 66 ms in
    viewer-id order, 52 ms sorted by the ten viewer columns split on most, for 0.6 ms
    of sorting.
    """
    if n < 2 or not keys:
        return None
    return np.lexsort([block[k] for k in reversed(keys)])


def _kept_cross(
    last: RoomGrid,
    at: np.ndarray,
    same: np.ndarray,
    block: Cols,
    products: Cols,
    names: Sequence[str],
) -> np.ndarray:
    """(rows, cross columns) float32 of a room's grid (the viewers at ``at`` in ``last``,
    viewer-major over its candidates): the kept rows of the viewers ``same`` says,
    :func:`features.vector.cross_block` of the others (``block``: the viewers' block), in
    ``names`` order (the grid's cross columns). The kept matrix itself (read-only) when
    every viewer stands where it stood and kept its cross rows: the usual case."""
    if same.all() and RoomScores.in_place(last, at):
        return last.blocks.cross
    n, nc, m = len(at), len(last.blocks.products), len(names)
    out = np.empty((n * nc, m), dtype=np.float32)
    grid = out.reshape(n, nc, m)
    keep = np.flatnonzero(same)
    if len(keep):
        grid[keep] = last.blocks.cross.reshape(-1, nc, m)[at[keep]]
    todo = np.flatnonzero(~same)
    if len(todo):
        made = cross_block(_viewer_rows(block, todo, n), products, EXPOSURE_STAGE, grid=True)
        for k, name in enumerate(names):
            grid[todo, :, k] = made[name].reshape(len(todo), nc)
    return out


def _rows_walked(need: np.ndarray) -> np.ndarray:
    """The rows (ascending) with any group of trees to walk in ``need`` (rows x groups):
    one column at a time, ~3x as fast as ``need.any(axis=1)`` over a room's grid."""
    rows = need[:, 0].copy()
    for g in range(1, need.shape[1]):
        rows |= need[:, g]
    return np.flatnonzero(rows)


def _walk_order(walk: np.ndarray, order: np.ndarray, nv: int, nc: int) -> np.ndarray:
    """The grid rows ``walk`` (ascending) with their viewers in ``order`` (each viewer's
    rows in product order): what the trees run fastest on."""
    mask = np.zeros(nv * nc, dtype=bool)
    mask[walk] = True
    at = np.flatnonzero(mask.reshape(nv, nc)[order])
    viewer, product = np.divmod(at, nc)
    return order[viewer] * nc + product


def _grid_order(model: LoadedModel, block: Cols, n: int) -> np.ndarray | None:
    """A room's ``n`` viewers in the order of what the trees test most (:func:`_alike_order`
    of ``model``'s :data:`GRID_ORDER_BY` most split viewer columns)."""
    return _alike_order(block, model.most_split(CONVERSION.columns, GRID_ORDER_BY), n)


def _in_time(deadline: Deadline) -> None:
    """Past the deadline (the caller has given up) the rest of a room's grid is not built."""
    if deadline.remaining() <= 0:
        raise DeadlineExceeded("deadline passed while the room's grid was built")


def _withdraw(jobs: Iterable[cf.Future[Any]]) -> None:
    """Withdraw a failed call's jobs from the bulk threads (those not started yet)."""
    for f in jobs:
        f.cancel()


@dataclass(frozen=True, slots=True, eq=False)
class _RoomGridCall:
    """What one RecommendNextProduct call builds a room's grid of: the model, the blocks of
    its ``viewers`` viewers (by id) and ``products`` candidates, and when the caller stops
    waiting."""

    model: LoadedModel
    vblock: Cols
    pblock: Cols
    viewers: int
    products: int
    deadline: Deadline


@dataclass(frozen=True, slots=True, eq=False)
class _Scored:
    """A room's grid as RecommendNextProduct scored it: each row's probability (float64,
    viewer-major), and the grid itself, as rows (``X``) or by its sources (``blocks``),
    to read the rows and columns that reasons need. Its viewers are in id order, or (a
    model without groups, ``X``) in the order the trees run fastest on: nothing lines a
    row up with a viewer's id, the answer sums over all of them."""

    scored: np.ndarray
    products: int
    X: np.ndarray | None = None
    blocks: GridBlocks | None = None

    def rows(self, idx: np.ndarray) -> np.ndarray:
        if self.X is not None:
            return self.X[idx]
        assert self.blocks is not None
        return self.blocks.rows(idx)

    def column(self, j: int, product: int) -> np.ndarray:
        if self.X is not None:
            return self.X[product :: self.products, j]
        assert self.blocks is not None
        return self.blocks.column(j, product)


def _viewer_rows(block: Cols, rows: slice | np.ndarray, n: int) -> Cols:
    """``block`` (``n`` viewers' columns) at ``rows``; what is one for all is kept as is."""
    return {k: v[rows] if type(v) is np.ndarray and len(v) == n else v for k, v in block.items()}


def _parts(viewers: int, products: int) -> list[tuple[int, int]]:
    """A room's grid in parts of whole viewers, each about ``GRID_PART_ROWS`` rows (a viewer
    with more rows than that is a part alone)."""
    rows = viewers * products
    count = max(1, min(viewers, -(-rows // GRID_PART_ROWS)))
    bounds = np.linspace(0, viewers, count + 1).round().astype(int).tolist()
    return list(itertools.pairwise(bounds))


def _without_held(request: Request, live: ViewerRows | None) -> list[int]:
    """Take out of ``request`` the viewers' live rows (and the room's) that ``live`` holds;
    the positions of the viewers left to read."""
    if live is None:
        return []
    unheld = [i for i, r in enumerate(live.viewer_live) if r is None]
    request[VIEWER_LIVE.name] = [request[VIEWER_LIVE.name][i] for i in unheld]
    if live.room_state is not None:
        del request[ROOM_STATE.name]
    return unheld


def _with_held(rows: Rows | None, live: ViewerRows | None, unheld: list[int]) -> Rows | None:
    """The rows read for a request trimmed by :func:`_without_held`, completed with the
    rows ``live`` holds, in the viewers' order."""
    if rows is None or live is None:
        return rows
    merged = list(live.viewer_live)
    for i, row in zip(unheld, rows[VIEWER_LIVE.name], strict=True):
        merged[i] = row
    rows[VIEWER_LIVE.name] = merged
    if live.room_state is not None:
        rows[ROOM_STATE.name] = [live.room_state]
    return rows


def _same(a: Sequence[Row | None], b: Sequence[Row | None]) -> bool:
    return len(a) == len(b) and all(map(operator.is_, a, b))


class Scorer:
    """The four questions of the contract, over online features and served models."""

    def __init__(
        self, settings: ServiceSettings, features: OnlineFeatures, models: ModelRegistry
    ) -> None:
        self.s = settings
        self.features = features
        self.models = models
        self._product_cols = ProductColumns()
        self._viewer_static = ViewerStatic(settings.viewer_cache_size)
        #: RankProducts' cross features of (viewer, candidates), kept while the viewer's
        #: batch and live rows and the candidates' product_stats rows are the same objects
        #: (:func:`features.vector.cross_block` reads nothing else of theirs): about 5 KB
        #: an entry, plus the rows it holds until it is used again or falls out.
        self._cross: _KeptWhileSame[tuple[str, tuple[str, ...]], Cols] = _KeptWhileSame(4096)
        #: RecommendNextProduct's last grid of each room, to score only what moved.
        self.room_scores = RoomScores(settings.score_kept_rows)

    # -- helpers -----------------------------------------------------------------------

    def rows_counted(self) -> list[tuple[str, str, str, int]]:
        """``(model, kept_by, how, rows)``: the rows each model's scores were looked up for
        or scored, kept by branch key (RankProducts, ScoreConversion) or by room
        (RecommendNextProduct: rows walked through any group of trees), since start
        (:meth:`Metrics.watch_rows`)."""
        out = []
        for name in (CONVERSION_MODEL, NEXT_PRODUCT_MODEL):
            model = self.models.get(name)
            kept = None if model is None else model.kept
            if kept is not None:
                out += [(name, "rows", "looked_up", kept.looked_up)]
                out += [(name, "rows", "scored", kept.scored)]
        rooms = self.room_scores
        out += [(NEXT_PRODUCT_MODEL, "room", "looked_up", rooms.looked_up)]
        out += [(NEXT_PRODUCT_MODEL, "room", "scored", rooms.scored)]
        return out

    def row_groups_counted(self) -> list[tuple[str, str, int]]:
        """``(model, how, pairs)``: the rooms' grids' (row, group of trees) pairs whose
        margin was looked up or walked, since start (:meth:`Metrics.watch_rows`)."""
        rooms = self.room_scores
        return [
            (NEXT_PRODUCT_MODEL, "looked_up", rooms.groups_looked_up),
            (NEXT_PRODUCT_MODEL, "scored", rooms.groups_scored),
        ]

    def segment(self, p: float) -> Segment:
        if p >= self.s.segment_high_conversion:
            return Segment.HIGH_CONVERSION
        if p >= self.s.segment_high_potential:
            return Segment.HIGH_POTENTIAL
        return Segment.TO_BE_ACTIVATED

    @staticmethod
    def _meta(name: str, model: LoadedModel | None, items: Sequence[tuple[Flags, int]]) -> Meta:
        flags = Flags()
        age = 0
        for f, a in items:
            flags.merge(f)
            age = max(age, a)
        version = model.version if model is not None and not flags.fallback else ""
        return Meta(model_name=name, model_version=version, feature_age_ms=age, flags=flags)

    def _viewers_flags(self, rows: Rows, n: int, now: float) -> list[tuple[Flags, int]]:
        """Flags and age (ms) of viewers ``0..n-1``: stale if any of a viewer's rows (or
        the room's) is past its view's TTL, as old as the oldest, cold start without a
        profile; over arrays of the rows' times (:func:`judge`'s float operations). One
        viewer (RankProducts) goes through :func:`judge` itself: arrays of one cost more."""
        profiles = rows[VIEWER_PROFILE.name]
        if n == 1:
            used = [(view, rows[view][0]) for view in VIEWER_VIEWS]
            used.append((ROOM_STATE.name, rows[ROOM_STATE.name][0]))
            judged = judge(used, now)
            judged.flags.cold_start = profiles[0] is None
            return [(judged.flags, judged.age_ms)]
        stale, ages = self._viewers_age(rows, n, now)
        return [
            (Flags(cold_start=profiles[i] is None, stale_features=stale[i]), ages[i])
            for i in range(n)
        ]

    @staticmethod
    def _viewers_age(rows: Rows, n: int, now: float) -> tuple[list[bool], list[int]]:
        """Per viewer ``0..n-1``: any of its rows (and the room's) past its view's TTL, and
        the age in ms of the oldest, as :func:`judge` computes them."""
        nan = float("nan")
        views = [*VIEWER_VIEWS, ROOM_STATE.name]
        room = rows[ROOM_STATE.name][0]
        times = [[nan if r is None else float(r[TS]) for r in rows[v][:n]] for v in VIEWER_VIEWS]
        times.append([nan if room is None else float(room[TS])] * n)
        row_age = np.maximum(0.0, now - np.array(times, dtype=np.float64).reshape(len(views), n))
        ttl = np.array([ttl_s(v) for v in views])[:, None]
        stale: list[bool] = np.any(row_age > ttl, axis=0).tolist()  # NaN (no row): never stale
        ages: list[int] = (
            (np.fmax(np.fmax.reduce(row_age, axis=0), 0.0) * 1000).astype(np.int64).tolist()
        )
        return stale, ages

    def _viewers_block(
        self,
        viewers: Sequence[str],
        rows: Rows,
        now: float,
        keep_live: bool = False,
        live_key: Hashable | None = None,
    ) -> Cols:
        """:func:`features.vector.viewer_block` of ``viewers``, their batch parts kept; with
        ``keep_live`` (one viewer whose live row the fold holds) its live part kept too;
        with ``live_key`` (a room's viewers) the live part of the viewers whose rows are
        the same objects as in ``live_key``'s last call kept (:meth:`ViewerStatic.many_live`)."""
        n = len(viewers)
        # The room's row, converted once and repeated for every viewer.
        room = view_columns(ROOM_STATE.name, rows[ROOM_STATE.name][:1])
        if live_key is not None and n > 1:
            part = self._viewer_static.many_live(
                live_key,
                viewers,
                rows[VIEWER_DEMOGRAPHICS.name],
                rows[VIEWER_PROFILE.name],
                rows[VIEWER_LIVE.name],
            )
            return viewer_now(part, {c: np.repeat(v, n) for c, v in room.items()}, now)
        if n == 1 and keep_live:
            part = self._viewer_static.with_live(
                viewers[0],
                rows[VIEWER_DEMOGRAPHICS.name][0],
                rows[VIEWER_PROFILE.name][0],
                rows[VIEWER_LIVE.name][0],
            )
            return viewer_now(part, room, now)
        static = self._viewer_static.get(
            viewers, rows[VIEWER_DEMOGRAPHICS.name], rows[VIEWER_PROFILE.name]
        )
        cols = view_columns(VIEWER_LIVE.name, rows[VIEWER_LIVE.name])
        cols.update(room if n == 1 else {c: np.repeat(v, n) for c, v in room.items()})
        return viewer_at(static, cols, now)

    # -- ScoreConversion ---------------------------------------------------------------

    def score_conversion(
        self, q: ScoreConversionQuery, deadline: Deadline, live: ViewerRows | None = None
    ) -> ConversionAnswer:
        """With ``live`` (the fold's rows of these viewers, in the process that owns live
        state), only batch rows and the live rows the fold does not hold are read."""
        model = self.models.get(CONVERSION_MODEL)
        now = self.features.clock()
        viewers = list(q.viewer_ids)
        rows = self._viewer_rows(viewers, q.room_id, deadline, live)
        if rows is None or model is None:
            return self._conversion_fallback(q, model, missing=rows is None)
        block = self._viewers_block(viewers, rows, now, live_key=("score", q.room_id))
        X = assemble_viewers(CONVERSION, block)
        # A room's viewers asked again mostly cross no split: their rows are looked up.
        p, keys = model.predict_kept(X)
        p = p.clip(0.0, 1.0)
        contrib = model.contributions_kept(X, keys) if self.s.reasons_per_item else None
        reasons = explain_rows(CONVERSION.columns, X, contrib, self.s.reasons_per_item)
        judged = self._viewers_flags(rows, len(viewers), now)
        scores = [
            ViewerScore(v, pi, self.segment(pi), why, flags, age)
            for v, pi, why, (flags, age) in zip(viewers, p.tolist(), reasons, judged, strict=True)
        ]
        meta = self._meta(CONVERSION_MODEL, model, [(s.flags, s.feature_age_ms) for s in scores])
        return ConversionAnswer(scores, meta)

    def _viewer_rows(
        self, viewers: list[str], room_id: str, deadline: Deadline, live: ViewerRows | None
    ) -> Rows | None:
        request = self.features.viewer_request(viewers, room_id)
        unheld = _without_held(request, live)
        return _with_held(self.features.fetch(request, deadline), live, unheld)

    def _conversion_fallback(
        self, q: ScoreConversionQuery, model: LoadedModel | None, missing: bool
    ) -> ConversionAnswer:
        p = self.s.fallback_conversion_rate
        scores = [
            ViewerScore(
                v, p, self.segment(p), [], Flags(fallback=True, missing_features=missing), 0
            )
            for v in q.viewer_ids
        ]
        meta = self._meta(CONVERSION_MODEL, model, [(s.flags, 0) for s in scores])
        return ConversionAnswer(scores, meta)

    # -- RankProducts ------------------------------------------------------------------

    def rank_products(self, q: RankProductsQuery, deadline: Deadline) -> RankAnswer:
        now = self.features.clock()
        stats, stats_ok = self.features.products(q.candidates, deadline)
        rows = self.features.fetch(self._rank_request(q), deadline)
        return self._rank(q, now, stats, stats_ok, rows)

    async def rank_products_async(
        self, q: RankProductsQuery, deadline: Deadline, live: ViewerRows | None = None
    ) -> RankAnswer:
        """:meth:`rank_products` for a caller on an event loop, with no thread hop of its own.

        The store read goes through :meth:`OnlineFeatures.fetch_async` (in place for a
        local store, awaited in the store's pool otherwise); the rest is well under a
        millisecond of CPU and runs on the caller's loop, where a hop would cost more than
        the work. A candidate never seen before takes the blocking path once. With
        ``live`` (the fold's row of this viewer, in the process that owns live state) the
        viewer's live row is not read from the store.
        """
        now = self.features.clock()
        stats = self.features.cached_products(q.candidates)
        if stats is None:
            return await asyncio.to_thread(self.rank_products, q, deadline)
        request = self._rank_request(q)
        unheld = _without_held(request, live)
        rows = _with_held(await self.features.fetch_async(request, deadline), live, unheld)
        # A live row from the store is a new object on every read: keeping what is built
        # from it would only cost; one the fold holds stays the same until the next event.
        held = live is not None and live.viewer_live[0] is not None
        return self._rank(q, now, stats, True, rows, held)

    def _rank_request(self, q: RankProductsQuery) -> Request:
        request = self.features.viewer_request([q.viewer_id], q.room_id)
        request[PRODUCT_LIVE.name] = [(p, q.room_id) for p in q.candidates]
        return request

    def _rank(
        self,
        q: RankProductsQuery,
        now: float,
        stats: list[Row | None],
        stats_ok: bool,
        rows: Rows | None,
        held: bool = False,
    ) -> RankAnswer:
        model = self.models.get(NEXT_PRODUCT_MODEL)
        cands = list(q.candidates)
        n = len(cands)
        if rows is None or model is None:
            return RankAnswer(*self._popularity(cands, q.top_k, model, missing=rows is None))
        # One viewer x n candidates: the viewer's block is computed once, not n times
        # (assemble_grid equals assemble on the repeated rows; features.vector tests it).
        X = self._rank_grid(q, rows, stats, now, held=held)
        # Rows that take the same branches as rows scored before are looked up (exact).
        p, keys = model.predict_kept(X)
        scores = p.clip(0.0, 1.0).tolist()
        top = sorted(range(n), key=lambda i: (-scores[i], cands[i]))[: q.top_k]
        contrib = (
            model.contributions_kept(X[top], keys and [keys[i] for i in top])
            if self.s.reasons_per_item and top
            else None
        )
        reasons = explain_rows(NEXT_PRODUCT.columns, X[top], contrib, self.s.reasons_per_item)
        ((viewer_flags, viewer_age),) = self._viewers_flags(rows, 1, now)
        live = rows[PRODUCT_LIVE.name]
        products = []
        ages = []
        for rank, i in enumerate(top):
            judged = judge([("product_stats", stats[i]), (PRODUCT_LIVE.name, live[i])], now)
            flags = judged.flags.merge(viewer_flags)
            flags.cold_start |= stats[i] is None and stats_ok
            flags.missing_features |= stats[i] is None and not stats_ok
            products.append(ScoredProduct(cands[i], scores[i], reasons[rank], flags))
            ages.append(max(judged.age_ms, viewer_age))
        items = [(sp.flags, a) for sp, a in zip(products, ages, strict=True)]
        if not items:
            items = [(viewer_flags, viewer_age)]
        return RankAnswer(products, self._meta(NEXT_PRODUCT_MODEL, model, items))

    def _rank_grid(
        self,
        q: RankProductsQuery,
        rows: Rows,
        stats: list[Row | None],
        now: float,
        *,
        held: bool,
    ) -> np.ndarray:
        """The next-product matrix of one viewer x the candidates: the viewer's batch part
        and the candidates' columns kept while their rows are the same objects, and with
        ``held`` (the viewer's live row is the fold's) its live part and the cross
        features too; the time, the room's row and the products' live rows are read on
        every call."""
        pcols, static = self._product_cols.get(q.candidates, stats, rows[PRODUCT_LIVE.name])
        vblock = self._viewers_block([q.viewer_id], rows, now, keep_live=held)
        pblock = product_at(static, pcols, now)
        if not held:
            return assemble_grid(NEXT_PRODUCT, vblock, pblock, EXPOSURE_OVERLAY)

        def cross() -> Cols:
            kept = cross_block(vblock, pblock, EXPOSURE_OVERLAY, grid=True)
            _read_only(kept)
            return kept

        viewer_rows = [rows[view][0] for view in VIEWER_VIEWS]
        return assemble_grid(
            NEXT_PRODUCT,
            vblock,
            pblock,
            EXPOSURE_OVERLAY,
            self._cross.get((q.viewer_id, q.candidates), [*viewer_rows, *stats], cross),
        )

    def _popularity(
        self, cands: list[str], top_k: int, model: LoadedModel | None, missing: bool
    ) -> tuple[list[ScoredProduct], Meta]:
        """Fallback ranking: historical purchase rate from the product cache."""
        pop = self.features.popularity(cands)
        order = sorted(range(len(cands)), key=lambda i: (-pop[i], cands[i]))[:top_k]
        products = [
            ScoredProduct(
                cands[i],
                min(max(pop[i], 0.0), 1.0),
                [],
                Flags(fallback=True, missing_features=missing),
            )
            for i in order
        ]
        items = [(sp.flags, 0) for sp in products] or [(Flags(fallback=True), 0)]
        return products, self._meta(NEXT_PRODUCT_MODEL, model, items)

    # -- RecommendNextProduct ----------------------------------------------------------

    def recommend_next_product(
        self,
        q: NextProductQuery,
        deadline: Deadline,
        room: RoomSnapshot | None = None,
        rooms: RoomMemory | None = None,
    ) -> NextProductAnswer:
        """Expected buyers per candidate if it goes on stage now, over the viewers present.

        With ``room`` (a snapshot of the aggregator's fold) and ``rooms`` (its cache of
        the viewers' batch rows), the answer is built from memory; otherwise from a
        roster scan and online reads.
        """
        model = self.models.get(NEXT_PRODUCT_MODEL)
        now = self.features.clock()
        cands = list(q.candidates)
        if room is not None and rooms is not None:
            present: list[str] | None = room.viewers
        else:
            present = self.features.present_viewers(q.room_id, deadline)
        if present is None or not present or model is None:
            products, meta = self._popularity(cands, q.top_k, model, missing=present is None)
            return NextProductAnswer(products, len(present or ()), meta)
        viewers = sorted(present)[: self.s.max_present_viewers]
        stats, stats_ok = self.features.products(cands, deadline)
        rows: Rows | None
        if room is not None and rooms is not None:
            batch = rooms.batch_rows(viewers, deadline)
            rows = None
            if batch is not None:
                rows = dict(batch)
                rows[VIEWER_LIVE.name] = room.viewer_live[: len(viewers)]
                rows[ROOM_STATE.name] = [room.room_state]
                rows[PRODUCT_LIVE.name] = room.product_live
        else:
            request = self.features.viewer_request(viewers, q.room_id)
            request[PRODUCT_LIVE.name] = [(p, q.room_id) for p in cands]
            rows = self.features.fetch(request, deadline)
        if rows is None:
            products, meta = self._popularity(cands, q.top_k, model, missing=True)
            return NextProductAnswer(products, len(viewers), meta)
        nv, nc = len(viewers), len(cands)
        # Row r = viewer r // nc, candidate r % nc; each block is computed once.
        pcols, static = self._product_cols.get(q.candidates, stats, rows[PRODUCT_LIVE.name])
        vblock = self._viewers_block(viewers, rows, now, live_key=("next", q.room_id))
        pblock = product_at(static, pcols, now)

        # Every viewer's rows judged at once (stale if any is, as old as the oldest) while
        # the bulk threads walk the trees.
        def judge_viewers() -> tuple[list[bool], list[int]]:
            return self._viewers_age(rows, nv, now)

        call = _RoomGridCall(model, vblock, pblock, nv, nc, deadline)
        if model.groups is None:
            grid, (stale, viewer_ages) = self._grid_whole(call, judge_viewers)
        else:
            grid, (stale, viewer_ages) = self._grid_grouped(
                call, model.groups, (q.room_id, q.candidates), viewers, judge_viewers
            )
        P = np.clip(grid.scored.reshape(nv, nc), 0.0, 1.0)
        expected = P.sum(axis=0)
        score = expected / nv
        top = sorted(range(nc), key=lambda j: (-score[j], cands[j]))[: q.top_k]
        room_flags = Flags(stale_features=any(stale))
        room_age = max(viewer_ages, default=0)
        totals = None
        if self.s.reasons_per_item and top:
            # Explain each through the viewers who carry its expected conversions: at most
            # REASON_SAMPLE of them, summed by leaf counts (cost: trees x leaves), all the
            # candidates' rows in one leaf prediction.
            carry = [np.argsort(-P[:, j], kind="stable")[:REASON_SAMPLE] * nc + j for j in top]
            group = np.repeat(np.arange(len(top)), [len(c) for c in carry])
            totals = model.total_contributions(grid.rows(np.concatenate(carry)), group, len(top))
        products = []
        ages = []
        for k, j in enumerate(top):
            judged = judge(
                [("product_stats", stats[j]), (PRODUCT_LIVE.name, rows[PRODUCT_LIVE.name][j])], now
            )
            flags = judged.flags.merge(room_flags)
            flags.cold_start |= stats[j] is None and stats_ok
            flags.missing_features |= stats[j] is None and not stats_ok
            reasons: list[Reason] = []
            if self.s.reasons_per_item:
                reasons = explain_room(
                    NEXT_PRODUCT.columns,
                    functools.partial(grid.column, product=j),
                    nv,
                    None if totals is None else totals[k][None, :],
                    self.s.reasons_per_item,
                )
            products.append(
                ScoredProduct(cands[j], float(score[j]), reasons, flags, float(expected[j]))
            )
            ages.append(max(judged.age_ms, room_age))
        items = [(sp.flags, a) for sp, a in zip(products, ages, strict=True)]
        return NextProductAnswer(products, nv, self._meta(NEXT_PRODUCT_MODEL, model, items))

    @staticmethod
    def _grid_in_parts(
        call: _RoomGridCall,
        meanwhile: Callable[[], T],
        walk: Callable[[np.ndarray, slice], tuple[Callable[[], Any], cf.Future[Any]]],
    ) -> tuple[np.ndarray, np.ndarray | None, T]:
        """A room's whole grid (every row scored), built in parts of viewers, each handed
        to ``walk(part, rows)`` (which submits it to the bulk threads and returns how to
        collect it and the job) while this thread builds the next (past the deadline the
        rest is not built, and what was submitted is withdrawn); then ``meanwhile``, then
        each part collected. The grid's viewers are in the order of what the trees test
        most (``order``, not by id; ``None``: by id): the answer is the same sum over the
        same viewers, and the trees run ~20% faster. Returns the grid, ``order`` and what
        ``meanwhile`` returned."""
        nv, nc = call.viewers, call.products
        order = _grid_order(call.model, call.vblock, nv)
        block = call.vblock if order is None else _viewer_rows(call.vblock, order, nv)
        X = np.empty((nv * nc, len(NEXT_PRODUCT.columns)), dtype=np.float32)
        jobs: list[tuple[Callable[[], Any], cf.Future[Any]]] = []
        try:
            for a, b in _parts(nv, nc):
                _in_time(call.deadline)
                rows = slice(a * nc, b * nc)
                assemble_grid(
                    NEXT_PRODUCT,
                    _viewer_rows(block, slice(a, b), nv),
                    call.pblock,
                    EXPOSURE_STAGE,
                    out=X[rows],
                )
                jobs.append(walk(X[rows], rows))
            done = meanwhile()
            for take, _ in jobs:
                take()
        except BaseException:
            _withdraw(f for _, f in jobs)
            raise
        return X, order, done

    def _grid_whole(self, call: _RoomGridCall, meanwhile: Callable[[], T]) -> tuple[_Scored, T]:
        """A room's grid built and scored whole, by a model without tree groups."""
        model = call.model
        scored = np.empty(call.viewers * call.products, dtype=np.float64)

        def walk(part: np.ndarray, rows: slice) -> tuple[Callable[[], Any], cf.Future[Any]]:
            f = model.submit(part)

            def take() -> None:
                scored[rows] = np.asarray(model.collect(f, part)).ravel()

            return take, f

        X, _, done = self._grid_in_parts(call, meanwhile, walk)
        return _Scored(scored, call.products, X=X), done

    def _grid_grouped(
        self,
        call: _RoomGridCall,
        groups: TreeGroups,
        room_key: Hashable,
        viewers: list[str],
        meanwhile: Callable[[], T],
    ) -> tuple[_Scored, T]:
        """A room's grid scored by tree groups, held by its sources (:class:`GridBlocks`):
        with the room's last grid kept (by the same model, over the same candidates), only
        its (row, group of trees) pairs where a value crossed one of the group's splits
        are walked again (exact: :mod:`service.room_scores`), and only those rows are made.
        The rows to walk go to the bulk threads in parts, each built while the one before
        is walked (past the deadline the rest is not built, and what was submitted is
        withdrawn); then ``meanwhile``. With nothing kept, the grid is built whole as
        :meth:`_grid_in_parts` builds it, and kept by its sources."""
        sources = grid_sources(NEXT_PRODUCT)
        model, vblock, pblock = call.model, call.vblock, call.pblock
        nv, nc = call.viewers, call.products
        last = self.room_scores.get(room_key, model)
        need: np.ndarray | None = None
        if last is None:
            # Nothing kept: every row through every group, the grid built whole in parts.
            margins = np.empty((nv * nc, groups.groups), dtype=np.float32)

            def whole(part: np.ndarray, rows: slice) -> tuple[Callable[[], Any], cf.Future[Any]]:
                out = margins[rows]  # a view: the walk writes the part's margins in place
                f = groups.submit(part, None, out)
                return (lambda: groups.collect(f, part, None, out)), f

            X, order, done = self._grid_in_parts(call, meanwhile, whole)
            cross = cross_of(X, sources)
            if order is not None:  # kept by id, as the viewers come
                rank = np.argsort(order)
                margins = margins.reshape(nv, nc, -1)[rank].reshape(nv * nc, -1)
                cross = cross.reshape(nv, nc, -1)[rank].reshape(nv * nc, -1)
            blocks = grid_blocks(NEXT_PRODUCT, vblock, pblock, EXPOSURE_STAGE, cross)
            walked = nv * nc
        else:
            at = self.room_scores.positions(last, viewers)
            same = self.room_scores.cross_same(last, at, vblock, pblock)
            names = [NEXT_PRODUCT.columns[j] for j in sources.cross]
            # The cross rows of viewers whose inputs hold the same bits are the kept ones.
            blocks = grid_blocks(
                NEXT_PRODUCT,
                vblock,
                pblock,
                EXPOSURE_STAGE,
                _kept_cross(last, at, same, vblock, pblock, names),
            )
            products_moved = groups.keys.moved(
                blocks.products, last.blocks.products, sources.products
            )
            need, margins = self.room_scores.moved(
                last, groups.keys, at, blocks.viewers, sources, products_moved, blocks.cross, same
            )
            walk = _rows_walked(need)
            walked = len(walk)
            if 2 * walked > nv * nc:
                # Many rows: their viewers alike together, as the trees run fastest.
                order = _grid_order(model, vblock, nv)
                if order is not None:
                    walk = _walk_order(walk, order, nv, nc)
            parts = 1 if walked <= WALK_ALONE else max(2, -(-walked // GRID_PART_ROWS))
            jobs: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any]] = []
            try:
                for idx in np.array_split(walk, parts):
                    _in_time(call.deadline)
                    if not len(idx):
                        continue
                    rows = blocks.rows(idx)
                    part_need = need[idx]
                    out = margins[idx]
                    jobs.append((idx, rows, part_need, out, groups.submit(rows, part_need, out)))
                done = meanwhile()
                for idx, rows, part_need, out, f in jobs:
                    margins[idx] = groups.collect(f, rows, part_need, out)
            except BaseException:
                _withdraw(job[-1] for job in jobs)
                raise
        self.room_scores.put(room_key, model, viewers, blocks, margins, (vblock, pblock))
        pairs = nv * nc * groups.groups if need is None else int(np.count_nonzero(need))
        self.room_scores.count(nv * nc, walked, pairs, groups.groups)
        return _Scored(groups.probability(margins), nc, blocks=blocks), done

    # -- GetViewerProfile --------------------------------------------------------------

    def viewer_profile(self, q: ProfileQuery, deadline: Deadline) -> ProfileAnswer:
        model = self.models.get(CONVERSION_MODEL)
        now = self.features.clock()
        room = q.room_id
        if room is None:
            room = self._current_room(q.viewer_id, deadline)
        request = self.features.viewer_request([q.viewer_id], room or "")
        if room is None:
            del request[VIEWER_LIVE.name], request[ROOM_STATE.name]
        rows = self.features.fetch(request, deadline)
        if rows is None:
            flags = Flags(missing_features=True, fallback=True)
            meta = self._meta(CONVERSION_MODEL, model, [(flags, 0)])
            return ProfileAnswer(q.viewer_id, room, {}, Segment.UNSPECIFIED, None, now, meta)
        one = {view: r[0] for view, r in rows.items()}
        judged = judge(one.items(), now)
        judged.flags.cold_start = one.get(VIEWER_PROFILE.name) is None and all(
            one.get(v) is None for v in VIEWER_VIEWS
        )
        live = one.get(VIEWER_LIVE.name)
        segment = Segment.UNSPECIFIED
        flags = judged.flags
        if live is not None and room is not None:
            answer = self.score_conversion(ScoreConversionQuery(room, (q.viewer_id,)), deadline)
            segment = answer.scores[0].segment
            flags.merge(answer.scores[0].flags)
        last = live.get("last_event_ts") if live else None
        last_ts = float(last) if last is not None and not np.isnan(last) else None
        meta = self._meta(CONVERSION_MODEL, model, [(flags, judged.age_ms)])
        return ProfileAnswer(q.viewer_id, room, one, segment, last_ts, now, meta)

    def _current_room(self, viewer_id: str, deadline: Deadline) -> str | None:
        """The room the viewer is present in now (from the roster), if any."""
        # The roster only knows present viewers; "the room last in" needs the aggregator.
        roster = self.features.present_viewers_all(deadline) or {}
        for room, viewers in sorted(roster.items()):
            if viewer_id in viewers:
                return room
        return None


__all__ = ["TS", "Scorer"]
