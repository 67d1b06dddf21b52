"""The plain core over the real tiny-world store: TTL, cold start, reasons, segments."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from features.vector import CONVERSION, NEXT_PRODUCT
from service.domain import Deadline, ScoreConversionQuery, Segment
from service.feast_reader import FeastReader, Row
from service.features_online import OnlineFeatures
from service.models import ModelRegistry
from service.reasons import explain
from service.scoring import Scorer
from tests.service.conftest import World, fake_source, make_settings
from tests.service.fakes import LinearModel


def _scorer(world: World, tmp: Path, clock_shift_s: float = 0.0) -> Scorer:
    settings = make_settings(world, tmp)
    models = ModelRegistry(settings, LinearModel.load, fake_source(tmp))
    models.start()
    features = OnlineFeatures(world.reader, clock=lambda: time.time() + clock_shift_s)
    return Scorer(settings, features, models)


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
