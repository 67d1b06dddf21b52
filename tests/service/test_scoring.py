"""The plain core over the real tiny-world store: TTL, cold start, reasons, segments."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import itertools
import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from features.tables import BY_NAME
from features.vector import CONVERSION, NEXT_PRODUCT, viewer_live, viewer_static
from service import reasons as reasons_module
from service import scoring
from service.domain import (
    Deadline,
    Flags,
    NextProductQuery,
    RankProductsQuery,
    Reason,
    ScoreConversionQuery,
    Segment,
)
from service.errors import DeadlineExceeded
from service.feast_reader import FeastReader, Row
from service.features_online import VIEWER_VIEWS, OnlineFeatures, Rows, judge
from service.models import LoadedModel, ModelRegistry
from service.reasons import explain, explain_rows
from service.scoring import Scorer, _alike_order, _viewer_rows, view_columns
from service.settings import NEXT_PRODUCT_MODEL
from tests.service.conftest import World, fake_source, make_settings
from tests.service.fakes import LinearModel


def _scorer(world: World, tmp: Path, clock_shift_s: float = 0.0) -> Scorer:
    settings = make_settings(world, tmp)
    models = ModelRegistry(settings, LinearModel.load, fake_source(tmp))
    models.start()
    features = OnlineFeatures(world.reader, clock=lambda: time.time() + clock_shift_s)
    return Scorer(settings, features, models)


def _scorer_and_rows(
    world: World, tmp: Path, viewers: list[str], now: float
) -> tuple[Scorer, Rows]:
    """A scorer whose clock stands at ``now``, and the rows it reads for ``viewers``."""
    scorer = _scorer(world, tmp)
    scorer.features.clock = lambda: now
    rows = scorer.features.fetch(
        scorer.features.viewer_request(viewers, world.room), Deadline.after(5)
    )
    assert rows is not None
    return scorer, rows


def test_fresh_rows_are_not_stale_and_old_ones_are_flagged(world: World, tmp_path: Path) -> None:
    query = ScoreConversionQuery(world.room, tuple(world.present[:5]))
    fresh = _scorer(world, tmp_path).score_conversion(query, Deadline.after(5))
    assert not fresh.meta.flags.stale_features
    assert not fresh.meta.flags.fallback
    # The oldest row used is the demographics row, stamped at sign-up (contract: oldest row).
    assert fresh.meta.feature_age_ms > 0
    # Two days later the live rows (TTL 12 h) are stale: still used, but flagged.
    later = _scorer(world, tmp_path, clock_shift_s=2 * 86400).score_conversion(
        query, Deadline.after(5)
    )
    assert all(s.flags.stale_features for s in later.scores)
    assert later.meta.feature_age_ms >= fresh.meta.feature_age_ms + 2 * 86400 * 1000 - 60_000


def test_out_of_time_answers_from_the_base_rate(world: World, tmp_path: Path) -> None:
    scorer = _scorer(world, tmp_path)
    answer = scorer.score_conversion(ScoreConversionQuery(world.room, ("v",)), Deadline.after(0))
    assert answer.meta.flags.fallback and answer.meta.flags.missing_features
    assert answer.scores[0].probability == scorer.s.fallback_conversion_rate
    assert answer.meta.model_version == ""


def test_segments_follow_the_thresholds(world: World, tmp_path: Path) -> None:
    scorer = _scorer(world, tmp_path)
    assert scorer.segment(0.5) == Segment.HIGH_CONVERSION
    assert scorer.segment(scorer.s.segment_high_conversion) == Segment.HIGH_CONVERSION
    assert scorer.segment(0.1) == Segment.HIGH_POTENTIAL
    assert scorer.segment(0.01) == Segment.TO_BE_ACTIVATED


def test_reasons_read_like_sentences() -> None:
    columns = CONVERSION.columns
    x = np.zeros(len(columns), dtype=np.float32)
    contrib = np.zeros(len(columns))
    x[columns.index("chat_shipping")] = 2
    contrib[columns.index("chat_shipping")] = 0.8
    x[columns.index("carts")] = 1
    contrib[columns.index("carts")] = -1.2
    reasons = explain(columns, x, contrib, 3)
    assert [(r.code, r.text) for r in reasons] == [
        ("ADDED_TO_CART", "added to cart once"),
        ("ASKED_SHIPPING", "asked about shipping twice"),
    ]
    assert reasons[1].args == {"topic": "shipping", "count": "2"}
    cols = NEXT_PRODUCT.columns
    x = np.zeros(len(cols), dtype=np.float32)
    contrib = np.zeros(len(cols))
    x[cols.index("discount_x_sea")] = 0.3
    contrib[cols.index("discount_x_sea")] = 0.5
    (reason,) = explain(cols, x, contrib, 3)
    assert reason.code == "PRICE_SENSITIVE_DISCOUNT"
    assert reason.text == "price-sensitive market, 30% off"
    assert reason.weight == pytest.approx(0.5)


class _Counting:
    """Counts the keys read per view."""

    def __init__(self, inner: FeastReader) -> None:
        self.inner = inner
        self.keys: Counter[str] = Counter()

    def read(self, view: str, keys: Sequence[tuple[str, ...]]) -> list[Row | None]:
        self.keys[view] += len(keys)
        return self.inner.read(view, keys)

    def present_viewers(self) -> dict[str, list[str]]:
        return self.inner.present_viewers()


def test_batch_rows_are_cached_and_repeated_viewers_read_once(world: World) -> None:
    reader = _Counting(world.reader)
    features = OnlineFeatures(reader, viewer_cache_s=60, live_cache_s=0)
    viewers = [*world.present[:3], *world.present[:3]]
    for _ in range(2):
        rows = features.fetch(features.viewer_request(viewers, world.room), Deadline.after(5))
        assert rows is not None
        assert rows["viewer_profile"][0] is rows["viewer_profile"][3]
    assert reader.keys["viewer_profile"] == 3  # three distinct viewers, read once
    assert reader.keys["viewer_live"] == 6  # live rows: three per call, never cached
    assert reader.keys["room_state"] == 2


def _columns_one_by_one(view: str, rows: Sequence[Row | None]) -> dict[str, np.ndarray]:
    """The per-column definition :func:`service.scoring.view_columns` must match."""
    out: dict[str, np.ndarray] = {}
    for c, kind in BY_NAME[view].columns.items():
        values = [r.get(c) if r else None for r in rows]
        if kind == "string":
            out[f"{view}__{c}"] = np.array(values, dtype=object)
        else:
            out[f"{view}__{c}"] = np.array(
                [float("nan") if v is None else v for v in values], np.float64
            )
    return out


def _viewer_flags(rows: Rows, i: int, now: float) -> tuple[Flags, int]:
    """The one-viewer definition :meth:`Scorer._viewers_flags` must match."""
    used = [(v, rows[v][i]) for v in VIEWER_VIEWS]
    used.append(("room_state", rows["room_state"][0]))
    judged = judge(used, now)
    judged.flags.cold_start = rows["viewer_profile"][i] is None
    return judged.flags, judged.age_ms


def test_fast_paths_answer_as_the_one_by_one_definitions(world: World, tmp_path: Path) -> None:
    now = time.time()
    viewers = [*world.present[:6], "v-nobody"]
    scorer, rows = _scorer_and_rows(world, tmp_path, viewers, now)
    for view in VIEWER_VIEWS:
        got, want = view_columns(view, rows[view]), _columns_one_by_one(view, rows[view])
        assert list(got) == list(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    for at in (now, now + 2 * 86400):  # fresh, then stale
        one_by_one = [_viewer_flags(rows, i, at) for i in range(len(viewers))]
        assert scorer._viewers_flags(rows, len(viewers), at) == one_by_one
        assert scorer._viewers_flags(rows, 1, at) == one_by_one[:1]  # RankProducts' path
    assert any(f.cold_start for f, _ in one_by_one) and all(f.stale_features for f, _ in one_by_one)
    # RankProducts on an event loop (one thread hop) answers as the blocking call does,
    # for candidates seen for the first time and for cached ones.
    query = RankProductsQuery(
        world.room, world.present[0], (*world.products[:20], "p-nobody"), top_k=5
    )
    first = asyncio.run(scorer.rank_products_async(query, Deadline.after(5)))
    blocking = scorer.rank_products(query, Deadline.after(5))
    cached = asyncio.run(scorer.rank_products_async(query, Deadline.after(5)))
    assert first == blocking == cached
    assert len(blocking.products) == 5 and blocking.products[0].reasons


def _explain_one_row(columns: Sequence[str], x: np.ndarray, contrib: np.ndarray, n: int) -> list:
    """The row-by-row definition of reasons (before they were computed for all rows at once)."""
    c = np.array(contrib, dtype=np.float64)
    c[[j for j, name in enumerate(columns) if name in reasons_module._SILENT]] = 0.0
    out = []
    for j in np.argsort(-np.abs(c), kind="stable")[:n]:
        if float(c[j]) == 0.0:
            break
        feature, value = columns[j], float(x[j])
        rule = reasons_module._RULES.get(feature)
        if rule is None or math.isnan(value):
            code, args, text = reasons_module._generic(feature, value)
        else:
            code, args, text = rule[0], rule[1](value), rule[2](value)
        out.append(Reason(code=code, args=args, text=text, weight=float(c[j])))
    return out


def test_reasons_of_all_rows_at_once_are_each_rows_reasons() -> None:
    columns = NEXT_PRODUCT.columns
    rng = np.random.default_rng(3)
    X = rng.integers(0, 4, size=(12, len(columns))).astype(np.float32)
    X[0, :10] = np.nan
    contrib = rng.normal(size=(12, len(columns)))
    contrib[1] = 0.0  # nothing to say
    contrib[2, :8] = 0.5  # ties keep column order
    contrib[3, columns.index("exposure_kind")] = 99.0  # silent
    want = [_explain_one_row(columns, X[i], contrib[i], 3) for i in range(len(X))]
    assert explain_rows(columns, X, contrib, 3) == want
    assert explain_rows(columns, X, contrib, 3) == want  # formatted once, then remembered
    assert want[1] == [] and len(want[2]) == 3
    assert [explain(columns, X[i], contrib[i], 3) for i in range(len(X))] == want


class _Threaded(_Counting):
    """Records the thread of every read; ``local`` as an embedded store says."""

    def __init__(self, inner: FeastReader, local: bool) -> None:
        super().__init__(inner)
        self.local = local
        self.threads: set[int] = set()

    def read(self, view: str, keys: Sequence[tuple[str, ...]]) -> list[Row | None]:
        import threading

        self.threads.add(threading.get_ident())
        return super().read(view, keys)


@pytest.mark.parametrize("local", [True, False])
def test_a_local_store_is_read_in_place_and_a_networked_one_in_the_pool(
    world: World, local: bool
) -> None:
    import threading

    reader = _Threaded(world.reader, local=local)
    features = OnlineFeatures(reader, live_cache_s=0, viewer_cache_s=0)
    request = features.viewer_request(world.present[:2], world.room)

    async def read() -> tuple[int, object]:
        return threading.get_ident(), await features.fetch_async(request, Deadline.after(5))

    loop_thread, rows = asyncio.run(read())
    assert rows == features.fetch(request, Deadline.after(5))
    assert (loop_thread in reader.threads) is local
    # The switch is the service's too: off, even a local store is read in the pool.
    assert not OnlineFeatures(reader, inline_local_reads=False).inline
    features.close()


def test_a_failed_read_in_place_answers_none_not_an_exception(world: World) -> None:
    class Broken(_Threaded):
        def read(self, view: str, keys: Sequence[tuple[str, ...]]) -> list[Row | None]:
            raise OSError("disk gone")

    features = OnlineFeatures(Broken(world.reader, local=True))
    request = features.viewer_request(world.present[:1], world.room)
    assert asyncio.run(features.fetch_async(request, Deadline.after(5))) is None


def test_a_rooms_candidate_rows_are_reused_whole_until_the_oldest_expires(world: World) -> None:
    reader = _Counting(world.reader)
    features = OnlineFeatures(reader, live_cache_s=0.3)
    keys: list[tuple[str, ...]] = [(p, world.room) for p in world.products[:5]]
    first = features.fetch({"product_live": keys}, Deadline.after(5))
    again = features.fetch({"product_live": keys}, Deadline.after(5))
    assert first is not None and again is not None
    assert again["product_live"] is first["product_live"]  # one lookup, the same rows
    assert reader.keys["product_live"] == 5
    # One more candidate: only it is read; the five are still fresh per key.
    more = features.fetch(
        {"product_live": [*keys, (world.products[5], world.room)]}, Deadline.after(5)
    )
    assert more is not None and more["product_live"][:5] == first["product_live"]
    assert reader.keys["product_live"] == 6
    time.sleep(0.35)
    later = features.fetch({"product_live": keys}, Deadline.after(5))
    assert later is not None and later["product_live"] is not first["product_live"]
    assert reader.keys["product_live"] == 11  # expired: read again


def test_conversion_from_the_folds_rows_reads_only_what_the_fold_lacks(
    world: World, tmp_path: Path
) -> None:
    """The owner of live state passes its rows (``ViewerRows``): the answer is the one the
    same rows give from the store, and only viewers the fold does not hold are read."""
    from service.ingest.rooms import ViewerRows

    now = time.time()
    scorer = _scorer(world, tmp_path)
    scorer.features.clock = lambda: now
    viewers = (*world.present[:4], "v-nobody")
    stored = scorer.features.fetch(
        scorer.features.viewer_request(list(viewers), world.room), Deadline.after(5)
    )
    assert stored is not None
    query = ScoreConversionQuery(world.room, viewers)
    from_store = scorer.score_conversion(query, Deadline.after(5))
    counting = _Counting(world.reader)
    scorer.features = OnlineFeatures(counting, clock=lambda: now, live_cache_s=0)
    held = [*stored["viewer_live"][:3], None, None]  # the fold lacks the last two
    live = ViewerRows(held, stored["room_state"][0])
    from_memory = scorer.score_conversion(query, Deadline.after(5), live=live)
    assert from_memory == from_store
    assert counting.keys["viewer_live"] == 2 and counting.keys["room_state"] == 0


def test_rank_from_the_folds_row_reads_no_viewer_live_row(world: World, tmp_path: Path) -> None:
    """In the process that owns live state RankProducts takes the viewer's live row from the
    fold: the same answer as from the store's copy of that row, without reading it; a
    viewer the fold does not hold is read from the store."""
    from service.ingest.rooms import ViewerRows

    now = time.time()
    scorer = _scorer(world, tmp_path)
    scorer.features.clock = lambda: now
    viewer = world.present[0]
    stored = scorer.features.fetch(
        scorer.features.viewer_request([viewer], world.room), Deadline.after(5)
    )
    assert stored is not None and stored["viewer_live"][0] is not None
    query = RankProductsQuery(world.room, viewer, tuple(world.products[:20]), top_k=5)
    from_store = asyncio.run(scorer.rank_products_async(query, Deadline.after(5)))
    counting = _Counting(world.reader)
    features = OnlineFeatures(counting, clock=lambda: now, live_cache_s=0)
    features.warm_products(list(world.products[:20]))
    scorer.features = features
    held = ViewerRows([stored["viewer_live"][0]], None)
    from_fold = asyncio.run(scorer.rank_products_async(query, Deadline.after(5), held))
    assert from_fold == from_store and from_fold.products[0].reasons
    assert counting.keys["viewer_live"] == 0 and counting.keys["room_state"] == 1
    asyncio.run(scorer.rank_products_async(query, Deadline.after(5), ViewerRows([None], None)))
    assert counting.keys["viewer_live"] == 1


def test_a_viewers_batch_part_is_kept_while_its_rows_are_the_same(
    world: World, tmp_path: Path
) -> None:
    """RankProducts keeps a viewer's batch columns (viewer_static) while the store's cache
    hands out the same demographics and profile rows, and rebuilds them for new rows; the
    answer is the one from the whole viewer block either way."""
    now = time.time()
    scorer = _scorer(world, tmp_path)
    scorer.features.clock = lambda: now
    viewer = world.present[0]
    query = RankProductsQuery(world.room, viewer, tuple(world.products[:20]), top_k=5)
    first = scorer.rank_products(query, Deadline.after(5))
    kept = scorer._viewer_static.kept(viewer)
    again = scorer.rank_products(query, Deadline.after(5))
    assert again == first and scorer._viewer_static.kept(viewer) is kept
    # New rows (the cache expired, a new day's profile): rebuilt, the same answer here.
    scorer.features = OnlineFeatures(world.reader, clock=lambda: now)
    fresh = scorer.rank_products(query, Deadline.after(5))
    assert fresh == first and scorer._viewer_static.kept(viewer) is not kept
    # A changed profile row is never answered from the kept part.
    rows = scorer.features.fetch(scorer._rank_request(query), Deadline.after(5))
    assert rows is not None and rows["viewer_profile"][0] is not None
    changed = dict(rows["viewer_profile"][0], cat_aff_fashion=0.987654)
    rows["viewer_profile"] = [changed]
    block = scorer._viewers_block([viewer], rows, now)
    assert block["cat_aff_fashion"][0] == 0.987654


def test_a_viewers_live_part_is_kept_while_its_live_row_is_the_same(
    world: World, tmp_path: Path
) -> None:
    """RankProducts keeps a viewer's live part (viewer_live) while its batch rows and its
    live row are the same objects (the fold hands out one row until the viewer's next
    event): later calls pay only for the time and the room's row, and answer as a scorer
    that kept nothing; a new live row is never answered from the kept part."""
    from service.ingest.rooms import ViewerRows

    now = time.time()
    scorer = _scorer(world, tmp_path)
    scorer.features.clock = lambda: now
    viewer = world.present[0]
    query = RankProductsQuery(world.room, viewer, tuple(world.products[:20]), top_k=5)
    rows = scorer.features.fetch(scorer._rank_request(query), Deadline.after(5))
    assert rows is not None and rows["viewer_live"][0] is not None
    held = ViewerRows([rows["viewer_live"][0]], None)
    scorer.features.warm_products(list(query.candidates))
    first = asyncio.run(scorer.rank_products_async(query, Deadline.after(5), held))
    kept = scorer._viewer_static.kept_live(viewer)
    cross = scorer._cross.kept((viewer, query.candidates))
    assert kept is not None and cross is not None
    # Ten minutes later, the same live row: the part is kept, the answer a fresh scorer's.
    later = now + 600.0
    scorer.features.clock = lambda: later
    again = asyncio.run(scorer.rank_products_async(query, Deadline.after(5), held))
    assert scorer._viewer_static.kept_live(viewer) is kept
    assert scorer._cross.kept((viewer, query.candidates)) is cross
    fresh = _scorer(world, tmp_path)
    fresh.features.clock = lambda: later
    fresh.features.warm_products(list(query.candidates))
    assert again == asyncio.run(fresh.rank_products_async(query, Deadline.after(5), held))
    rows["viewer_live"] = held.viewer_live
    at_first, at_later = (scorer._viewers_block([viewer], rows, t, True) for t in (now, later))
    assert at_later["dwell_min"][0] == pytest.approx(at_first["dwell_min"][0] + 10.0)
    assert first.products and scorer._viewer_static.kept_live(viewer) is kept
    # The viewer acts: a new live row, a new part that says so.
    clicked = dict(rows["viewer_live"][0])
    clicked["clicks"] = float(clicked.get("clicks") or 0.0) + 7.0
    clicked["cart_products"] = query.candidates[3]
    moved = ViewerRows([clicked], None)
    asyncio.run(scorer.rank_products_async(query, Deadline.after(5), moved))
    rebuilt = scorer._viewer_static.kept_live(viewer)
    assert rebuilt is not kept and rebuilt is not None
    assert rebuilt["clicks"][0] == kept["clicks"][0] + 7.0
    # The cross features were rebuilt from it: the fourth candidate is now in the cart.
    carted = scorer._cross.kept((viewer, query.candidates))
    assert carted is not None and carted is not cross
    assert carted["in_cart"].tolist() == [float(j == 3) for j in range(len(query.candidates))]
    # A room row that changed is read on every call, the live part kept.
    rows["viewer_live"] = [clicked]
    block = scorer._viewers_block([viewer], rows, later, True)
    room = rows["room_state"][0]
    assert room is not None
    busier = dict(room, viewers_present=12345.0)
    rows["room_state"] = [busier]
    assert scorer._viewers_block([viewer], rows, later, True)["room_viewers_present"][0] == 12345.0
    assert block["room_viewers_present"][0] != 12345.0
    assert scorer._viewer_static.kept_live(viewer) is rebuilt
    # A live row read from the store (a new object every read) is never kept.
    other = world.present[1]
    query = RankProductsQuery(world.room, other, tuple(world.products[:20]), top_k=5)
    read = asyncio.run(scorer.rank_products_async(query, Deadline.after(5)))
    assert read.products and scorer._viewer_static.kept_live(other) is None
    assert scorer._cross.kept((other, query.candidates)) is None


def test_many_viewers_batch_parts_are_kept_and_stacked_as_viewer_static(
    world: World, tmp_path: Path
) -> None:
    """ScoreConversion and RecommendNextProduct stack the viewers' kept batch parts: the
    same columns as viewer_static of all their rows, converting only viewers not kept
    (or whose rows changed); and the answers are those of a scorer that kept nothing."""
    now = time.time()
    viewers = [*world.present[:8], "v-nobody"]
    scorer, rows = _scorer_and_rows(world, tmp_path, viewers, now)
    demo, prof = rows["viewer_demographics"], rows["viewer_profile"]
    cols = view_columns("viewer_demographics", demo)
    cols.update(view_columns("viewer_profile", prof))
    want = viewer_static(cols)
    kept = scorer._viewer_static

    def same(got: dict[str, np.ndarray], part: slice = slice(None)) -> None:
        assert list(got) == list(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name][part], err_msg=name)

    same(kept.get(viewers[3:], demo[3:], prof[3:]), slice(3, None))  # some kept first
    before = {v: kept.packed(v) for v in viewers}
    assert all(before[v] is None for v in viewers[:3])
    same(kept.get(viewers, demo, prof))  # the first three converted, the rest stacked
    assert all(kept.packed(v) is before[v] for v in viewers[3:])
    # One viewer (RankProducts) keeps its columns as they are: the same columns.
    same(kept.get(viewers[4:5], demo[4:5], prof[4:5]), slice(4, 5))
    assert kept.kept(viewers[4]) is not None
    # A changed profile row is never answered from the kept part.
    assert prof[0] is not None
    changed = [dict(prof[0], cat_aff_fashion=0.987654), *prof[1:]]
    assert kept.get(viewers, demo, changed)["cat_aff_fashion"][0] == 0.987654
    # Whole answers: the same as from a scorer that has kept nothing.
    query = ScoreConversionQuery(world.room, tuple(viewers))
    warm = scorer.score_conversion(query, Deadline.after(5))
    cold = _scorer(world, tmp_path)
    cold.features.clock = lambda: now
    assert warm == cold.score_conversion(query, Deadline.after(5))
    assert sum(s.flags.cold_start for s in warm.scores) >= 1


def test_a_rooms_viewers_live_part_is_kept_for_those_whose_rows_are_the_same(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RecommendNextProduct keeps its room's viewers' live part: asked again, only the
    viewers whose rows are not the same objects (or who joined) are converted, and the
    columns are those of all of them converted at once, whoever joined or left."""
    now = time.time()
    viewers = list(world.present[:8])
    assert len(viewers) >= 5
    scorer, rows = _scorer_and_rows(world, tmp_path, viewers, now)
    demo, prof = rows["viewer_demographics"], rows["viewer_profile"]
    live = list(rows["viewer_live"])
    assert all(r is not None for r in live)
    kept = scorer._viewer_static
    converted: list[int] = []
    convert = scoring.view_columns

    def counted(view: str, rows_: Sequence[Row | None]) -> Any:
        if view == "viewer_live":
            converted.append(len(rows_))
        return convert(view, rows_)

    monkeypatch.setattr(scoring, "view_columns", counted)

    def want(order: list[int], live_: list[Row | None]) -> dict[str, np.ndarray]:
        cols = convert("viewer_demographics", [demo[i] for i in order])
        cols.update(convert("viewer_profile", [prof[i] for i in order]))
        return viewer_live(viewer_static(cols), convert("viewer_live", [live_[i] for i in order]))

    def ask(order: list[int], live_: list[Row | None]) -> None:
        got = kept.many_live(
            "room",
            [viewers[i] for i in order],
            [demo[i] for i in order],
            [prof[i] for i in order],
            [live_[i] for i in order],
        )
        expect = want(order, live_)
        assert list(got) == list(expect)
        for name, column in expect.items():
            np.testing.assert_array_equal(got[name], column, err_msg=name)
            assert not got[name].flags.writeable

    everyone = list(range(len(viewers)))
    ask(everyone, live)
    assert converted == [len(viewers)]
    ask(everyone, live)  # the same rows: nothing converted
    assert converted == [len(viewers)]
    # One viewer acted (a new live row); another left, in another order; one joins.
    acted = list(live)
    acted[2] = dict(acted[2] or {}, clicks=float((acted[2] or {}).get("clicks") or 0.0) + 3.0)
    ask([5, 2, 0, 1, 3], acted)
    assert converted[1:] == [1]
    ask([5, 2, 0, 1, 3, 4], acted)
    assert converted[2:] == [1]
    # A key of its own starts from nothing.
    got = kept.many_live("other", viewers[:2], demo[:2], prof[:2], live[:2])
    assert converted[3:] == [2] and len(got["region"]) == 2


def test_scoring_calls_leave_no_reference_cycles(world: World, tmp_path: Path) -> None:
    """The serving process freezes what lives long and collects its young objects often
    (service.heap.settle_heap): the calls themselves must free everything they make by
    reference counting, or each collection would free their garbage too and pause every
    call in flight for longer."""
    import gc

    scorer = _scorer(world, tmp_path)
    viewers = tuple(world.present[:20])
    rank = RankProductsQuery(world.room, viewers[0], tuple(world.products[:30]), top_k=5)
    score = ScoreConversionQuery(world.room, viewers)

    def calls() -> None:
        scorer.rank_products(rank, Deadline.after(5))
        scorer.score_conversion(score, Deadline.after(5))

    calls()  # caches filled, lazy state built
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(5):
            calls()
        gc.collect()
        garbage = [type(o).__name__ for o in _cycles_not_of_other_libraries(gc.garbage)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert garbage == [], Counter(garbage).most_common(10)


def _cycles_not_of_other_libraries(garbage: list[object]) -> list[object]:
    """The objects of ``garbage`` in cycles made of builtins and this project's types: a
    cycle holding another library's object (e.g. SQLAlchemy's registry, dropped by a
    thread an earlier test left running) is that library's."""
    import gc

    index = {id(o): i for i, o in enumerate(garbage)}
    parent = list(range(len(garbage)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, o in enumerate(garbage):
        for r in gc.get_referents(o):
            j = index.get(id(r))
            if j is not None:
                parent[root(i)] = root(j)
    own = ("builtins", "service", "features", "training", "tests")
    foreign = {
        root(i) for i, o in enumerate(garbage) if type(o).__module__.split(".")[0] not in own
    }
    return [o for i, o in enumerate(garbage) if root(i) not in foreign]


def test_a_rooms_viewers_are_sorted_alike_together_every_column_alike() -> None:
    nan = float("nan")
    block = {
        "a": np.array([2.0, nan, 1.0, 2.0]),
        "b": np.array([1.0, 0.0, 5.0, 0.0]),
        "_cart": np.array(["w", "x", "y", "z"], dtype=object),
        "_affinity": np.arange(8.0).reshape(4, 2),
    }
    got = _alike_order(block, ["a", "b"], 4)
    assert got is not None
    order = [2, 3, 0, 1]  # by a, then b; NaN last
    assert got.tolist() == order
    out = _viewer_rows(block, got, 4)
    assert list(out) == list(block)
    for k, v in block.items():
        np.testing.assert_array_equal(out[k], v[order])
    # Ties keep their order; nothing to sort by (or one viewer) leaves the block as it is.
    ties = _alike_order({"a": np.array([1.0, 1.0, 0.0]), "i": np.arange(3.0)}, ["a"], 3)
    assert ties is not None and ties.tolist() == [2, 0, 1]
    assert _alike_order(block, [], 4) is None
    assert _alike_order({"a": np.array([1.0])}, ["a"], 1) is None


def test_a_rooms_rows_to_walk_are_found_and_ordered_by_their_viewers() -> None:
    rng = np.random.default_rng(5)
    need = rng.random((60, 7)) < 0.1
    walk = scoring._rows_walked(need)
    assert walk.tolist() == np.flatnonzero(need.any(axis=1)).tolist()
    # 12 viewers x 5 products: the rows to walk, their viewers in the order given, each
    # viewer's rows in product order.
    order = rng.permutation(12)
    got = scoring._walk_order(walk, order, 12, 5)
    expect = [v * 5 + p for v in order.tolist() for p in range(5) if v * 5 + p in set(walk)]
    assert got.tolist() == expect
    every = np.arange(60)
    assert scoring._walk_order(every, order, 12, 5).tolist() == [
        v * 5 + p for v in order.tolist() for p in range(5)
    ]


def test_a_rooms_answer_is_the_same_whatever_order_its_viewers_are_scored_in(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = _scorer(world, tmp_path)
    model = scorer.models.get(NEXT_PRODUCT_MODEL)
    assert model is not None
    # The fake's only weighted viewer column; most_split ranks the columns by splits.
    assert model.most_split(CONVERSION.columns, scoring.GRID_ORDER_BY) == ["carts"]
    query = NextProductQuery(world.room, tuple(world.products[:8]), top_k=5)
    moved: list[bool] = []

    def alike_order(block: dict, keys: Sequence[str], n: int) -> np.ndarray | None:
        # Sorted by profile columns, which differ between the tiny world's viewers
        # whatever the hour (who has a cart depends on when the test runs).
        order = _alike_order(block, ["tenure_days", "order_count"] if keys else [], n)
        moved.append(order is not None and order.tolist() != sorted(order.tolist()))
        return order

    monkeypatch.setattr(scoring, "_alike_order", alike_order)
    sorted_ = scorer.recommend_next_product(query, Deadline.after(5))
    assert moved == [True]  # the room's viewers were scored in another order than by id
    monkeypatch.setattr(scoring, "GRID_ORDER_BY", 0)
    by_id = scorer.recommend_next_product(query, Deadline.after(5))
    assert sorted_.viewers_present == by_id.viewers_present > 2
    assert [p.product_id for p in sorted_.products] == [p.product_id for p in by_id.products]
    for a, b in zip(sorted_.products, by_id.products, strict=True):
        assert a.score == pytest.approx(b.score, rel=1e-12)
        assert [r.code for r in a.reasons] == [r.code for r in b.reasons]
        assert [r.weight for r in a.reasons] == pytest.approx([r.weight for r in b.reasons])


def test_a_rooms_grid_in_parts_covers_every_viewer_once() -> None:
    assert scoring._parts(1, 30) == [(0, 1)]
    assert scoring._parts(3, 2) == [(0, 3)]  # small: one part
    for viewers, products in ((2000, 30), (301, 30), (9000, 1), (7, 5000)):
        parts = scoring._parts(viewers, products)
        assert parts[0][0] == 0 and parts[-1][1] == viewers
        assert all(a < b for a, b in parts)
        assert all(b == c for (_, b), (c, _) in itertools.pairwise(parts))
        assert len(parts) >= 2  # both bulk threads score
        assert max((b - a) * products for a, b in parts) <= scoring.GRID_PART_ROWS + products
    assert len(scoring._parts(2000, 30)) == -(-60_000 // scoring.GRID_PART_ROWS)


def test_a_rooms_answer_is_the_same_built_and_scored_in_parts(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RecommendNextProduct builds a room's grid viewers part by part and submits each
    part to be scored on other threads as it is built (while it builds the next into the
    same matrix): the answer is the one of the grid scored whole."""
    scorer = _scorer(world, tmp_path)
    model = scorer.models.get(NEXT_PRODUCT_MODEL)
    assert model is not None
    query = NextProductQuery(world.room, tuple(world.products[:8]), top_k=5)
    submitted: list[int] = []
    threads = cf.ThreadPoolExecutor(2)

    def on_threads(self: LoadedModel, X: np.ndarray) -> cf.Future[np.ndarray]:
        submitted.append(len(X))
        return threads.submit(lambda: np.asarray(self.model.predict(X)).ravel())

    monkeypatch.setattr(LoadedModel, "submit", on_threads)
    try:
        whole = scorer.recommend_next_product(query, Deadline.after(5))
        assert submitted == [whole.viewers_present * 8]
        submitted.clear()
        monkeypatch.setattr(scoring, "GRID_PART_ROWS", 8)  # a part a viewer
        parts = scorer.recommend_next_product(query, Deadline.after(5))
    finally:
        threads.shutdown()
    assert whole.viewers_present > 2
    assert submitted == [8] * whole.viewers_present
    assert [p.product_id for p in parts.products] == [p.product_id for p in whole.products]
    for a, b in zip(parts.products, whole.products, strict=True):
        assert a.score == b.score and a.expected_conversions == b.expected_conversions
        assert [(r.code, r.weight) for r in a.reasons] == [(r.code, r.weight) for r in b.reasons]


def test_a_rooms_grid_is_not_built_past_the_deadline(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the deadline has passed (the caller has given up) the rest of the grid is not
    built and the parts submitted are withdrawn."""
    scorer = _scorer(world, tmp_path)
    query = NextProductQuery(world.room, tuple(world.products[:8]), top_k=5)
    monkeypatch.setattr(scoring, "GRID_PART_ROWS", 8)  # a part a viewer
    built: list[int] = []
    assemble = scoring.assemble_grid

    def slow(*args: Any, **kwargs: Any) -> np.ndarray:
        built.append(1)
        time.sleep(0.3)  # the first part outlasts the deadline
        return assemble(*args, **kwargs)

    monkeypatch.setattr(scoring, "assemble_grid", slow)
    with pytest.raises(DeadlineExceeded, match="grid"):
        scorer.recommend_next_product(query, Deadline.after(0.2))
    assert built == [1]
