"""Point-in-time training sets: one row per point, nothing from the future, time splits."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from features import schema
from features.settings import FeatureSettings
from features.vector import CONVERSION, NEXT_PRODUCT
from training import data


def test_conversion_set_has_one_row_per_scoring_point(
    conversion_set: data.TrainingSet, feast_world: FeatureSettings
) -> None:
    points = schema.read_table("scoring_points", feast_world.data_dir)
    assert len(conversion_set.frame) == len(points)
    assert conversion_set.frame["point_id"].is_unique
    assert set(conversion_set.frame["label"].unique()) <= {0, 1}
    X = conversion_set.matrix()
    assert X.dtype == np.float32 and X.shape == (len(points), len(CONVERSION.columns))


def test_splits_are_by_time_over_streams(conversion_set: data.TrainingSet) -> None:
    f = conversion_set.frame
    first = f.groupby("split")["stream_start"].min().to_dict()
    last = f.groupby("split")["stream_start"].max().to_dict()
    order = [name for name, _ in data.SPLITS]
    for earlier, later in itertools.pairwise(order):
        assert last[earlier] <= first[later], (earlier, later)
    assert (f.groupby("room_id")["split"].nunique() == 1).all(), "a stream spans two splits"


def test_no_feature_stamped_after_the_scoring_point(
    conversion_set: data.TrainingSet, feast_world: FeatureSettings
) -> None:
    f = conversion_set.frame
    t = f["time"].astype("datetime64[us, UTC]").astype("int64").to_numpy() / 1e6
    last = f["viewer_live__last_event_ts"].to_numpy(float)
    seen = ~np.isnan(last)
    assert seen.any()
    assert (last[seen] < t[seen]).all(), "a live row from the scoring moment or later was joined"
    assert (f["viewer_live__join_ts"].to_numpy(float)[seen] < t[seen]).all()
    # room_state has one row per room event: it counted exactly the joins strictly before t.
    joins = data._events(feast_world.data_dir, ["join"])
    joins_us = joins["event_time"].astype("datetime64[us, UTC]").astype("int64")
    times_us = f["time"].astype("datetime64[us, UTC]").astype("int64").to_numpy()
    by_room = {room: np.sort(g.to_numpy()) for room, g in joins_us.groupby(joins["room_id"])}
    expected = [
        np.searchsorted(by_room[room], when, side="left")
        for room, when in zip(f["room_id"], times_us, strict=True)
    ]
    got = f["room_state__viewers_joined"].to_numpy(float)
    np.testing.assert_array_equal(got, np.asarray(expected, dtype=float))


def test_conversion_label_is_a_purchase_strictly_after_the_point(
    conversion_set: data.TrainingSet, feast_world: FeatureSettings
) -> None:
    f = conversion_set.frame
    buys = data._purchases(feast_world.data_dir)
    m = f[["point_id", "viewer_id", "room_id", "time", "label"]].merge(
        buys, on=["viewer_id", "room_id"], how="left"
    )
    m["after"] = m["event_time"] > m["time"]
    any_after = m.groupby("point_id")["after"].any()
    labels = f.set_index("point_id")["label"]
    # Every positive has a later purchase; no purchase at or before the point makes one.
    assert any_after[labels[labels == 1].index].all()
    assert labels.sum() > 0


def test_exposures_cover_stage_changes_and_overlays(next_product_set: data.TrainingSet) -> None:
    f = next_product_set.frame
    assert set(f["exposure_kind"].unique()) == {0.0, 1.0}
    assert f["label"].sum() > 0
    X = next_product_set.matrix()
    assert X.shape[1] == len(NEXT_PRODUCT.columns)
    col = NEXT_PRODUCT.columns.index("exposure_kind")
    np.testing.assert_array_equal(X[:, col], f["exposure_kind"].to_numpy(np.float32))


@pytest.mark.parametrize("kind", ["conversion", "next_product"])
def test_asof_join_equals_feast(feast_world: FeatureSettings, kind: str) -> None:
    build = data.conversion_set if kind == "conversion" else data.next_product_set
    feast = build(feast_world.data_dir, data.feast_fetcher(feast_world))
    asof = build(feast_world.data_dir, data.asof_fetcher(feast_world))
    pd.testing.assert_index_equal(feast.frame.columns, asof.frame.columns)
    np.testing.assert_array_equal(feast.matrix(), asof.matrix())
    assert feast.fingerprint() == asof.fingerprint()


def test_fingerprint_tracks_rows_and_labels(conversion_set: data.TrainingSet) -> None:
    fp = conversion_set.fingerprint()
    assert fp["rows"] == len(conversion_set.frame) and fp["feature_service"] == "conversion_v2"
    flipped = data.TrainingSet(conversion_set.spec, conversion_set.frame.copy())
    labels = flipped.frame["label"].to_numpy().copy()
    labels[0] = 1 - labels[0]
    flipped.frame["label"] = labels
    assert flipped.fingerprint()["sha256"] != fp["sha256"]
