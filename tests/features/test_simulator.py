"""The simulated world: reproducible, schema-true, realistic and hard enough."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from features import schema
from features.simulator import simulate
from features.vector import CONVERSION, CONVERSION_PROFILE_ONLY, assemble
from tests.features.helpers import conversion_columns, epoch, scoring_frame

TABLES = ("viewers", "products", "streams", "fx", "scoring_points", "truth")


def _digest(data_dir: Path) -> dict[str, str]:
    out = {}
    for name in TABLES:
        out[name] = hashlib.sha256(
            schema.read_table(name, data_dir).to_pandas().to_json().encode()
        ).hexdigest()
    ev = schema.read_events(data_dir).to_pandas()
    out["events"] = hashlib.sha256(ev.to_json().encode()).hexdigest()
    return out


def test_same_seed_gives_identical_tables(tmp_path: Path) -> None:
    simulate(tmp_path / "a", "tiny", seed=3, progress=False)
    simulate(tmp_path / "b", "tiny", seed=3, progress=False)
    simulate(tmp_path / "c", "tiny", seed=4, progress=False)
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b
    assert a["events"] != c["events"]


def test_end_at_now_makes_the_last_stream_end_then(tmp_path: Path) -> None:
    end = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    simulate(tmp_path, "tiny", seed=2, end_at=end, progress=False)
    streams = schema.read_table("streams", tmp_path).to_pandas()
    assert streams["end_time"].max() == pd.Timestamp(end)
    ev = schema.read_events(tmp_path).to_pandas()
    assert ev["event_time"].max() <= pd.Timestamp(end)


def test_tables_validate_on_read_and_events_are_time_ordered(tiny_world: Path) -> None:
    for name in TABLES:
        assert schema.read_table(name, tiny_world).num_rows > 0
    ev = schema.read_events(tiny_world).to_pandas()
    assert ev["event_time"].is_monotonic_increasing
    assert set(ev["event_type"]) == set(schema.EVENT_TYPES)
    joins = ev[ev["event_type"] == "join"].groupby(["room_id", "viewer_id"]).size()
    leaves = ev[ev["event_type"] == "leave"].groupby(["room_id", "viewer_id"]).size()
    assert (joins == 1).all() and joins.index.equals(leaves.index)
    purchases = ev[ev["event_type"] == "purchase"]
    jpy = purchases[purchases["currency"] == "JPY"]["amount_minor"]
    assert (purchases["amount_minor"] > 0).all() and len(jpy) >= 0


def test_stream_start_announces_the_schedules_end(tiny_world: Path) -> None:
    ev = schema.read_events(tiny_world).to_pandas()
    starts = ev[ev["event_type"] == "stream_start"].set_index("room_id")
    streams = schema.read_table("streams", tiny_world).to_pandas().set_index("room_id")
    schedule_end = streams["stage_schedule"].map(lambda slots: max(s["end_time"] for s in slots))
    planned = starts["planned_end_time"].reindex(schedule_end.index)
    assert (planned == schedule_end.map(pd.Timestamp)).all()
    assert ev.loc[ev["event_type"] != "stream_start", "planned_end_time"].isna().all()
    # Announced before the stream closes: the model may use it, it is not the future.
    assert (planned < streams["end_time"]).all()


def test_schema_rejects_a_planned_end_before_the_start(tiny_world: Path) -> None:
    ev = schema.read_events(tiny_world)
    starts = ev.filter(pa.compute.equal(ev.column("event_type"), "stream_start"))
    i = starts.schema.get_field_index("planned_end_time")
    early = pa.compute.subtract(
        starts.column("event_time"), pa.scalar(60_000_000, pa.duration("us"))
    )
    with pytest.raises(schema.SchemaError, match="planned_end_time"):
        schema.validate("events", starts.set_column(i, "planned_end_time", early))
    problem = schema.event_problem(
        {
            "event_id": "x",
            "event_type": "like",
            "event_time": 1.0,
            "room_id": "r",
            "viewer_id": "v",
            "planned_end_time": 2.0,
        }
    )
    assert problem is not None and problem.startswith("planned_end_time")


@pytest.mark.parametrize(
    ("column", "mutate", "message"),
    [
        ("event_type", lambda t: pa.array(["teleport"] * len(t)), "event_type"),
        ("room_id", lambda t: pa.array([None] * len(t), type=pa.string()), "room_id"),
        ("amount_minor", lambda t: pa.array([-5] * len(t), type=pa.int64()), "amount_minor"),
        ("viewer_id", lambda t: pa.array([None] * len(t), type=pa.string()), "viewer_id"),
    ],
)
def test_schema_rejects_a_bad_events_table_naming_the_column(
    tiny_world: Path, column: str, mutate, message: str
) -> None:
    ev = schema.read_events(tiny_world)
    purchases = ev.filter(pa.compute.equal(ev.column("event_type"), "purchase")).slice(0, 20)
    bad = purchases.set_column(purchases.schema.get_field_index(column), column, mutate(purchases))
    with pytest.raises(schema.SchemaError, match=message):
        schema.validate("events", bad)


def test_schema_rejects_a_missing_column_and_a_wrong_type(tiny_world: Path, tmp_path: Path) -> None:
    viewers = schema.read_table("viewers", tiny_world)
    with pytest.raises(schema.SchemaError, match="'market'"):
        schema.validate("viewers", viewers.drop(["market"]))
    pq.write_table(
        viewers.set_column(8, "signup_time", pa.array(["soon"] * len(viewers))),
        tmp_path / "viewers.parquet",
    )
    with pytest.raises(schema.SchemaError, match="signup_time"):
        schema.read_table("viewers", tmp_path)


def _sessions(data_dir: Path) -> pd.DataFrame:
    ev = schema.read_events(data_dir, ["event_type", "room_id", "viewer_id"]).to_pandas()
    joins = ev[ev["event_type"] == "join"][["room_id", "viewer_id"]]
    buyers = ev[ev["event_type"] == "purchase"][["room_id", "viewer_id"]].drop_duplicates()
    s = joins.merge(buyers.assign(bought=1), how="left").fillna({"bought": 0})
    viewers = schema.read_table("viewers", data_dir).to_pandas()
    return s.merge(viewers[["viewer_id", "region"]], on="viewer_id")


def test_base_rates_are_a_few_percent(small_world: Path) -> None:
    s = _sessions(small_world)
    overall = s["bought"].mean()
    assert 0.02 <= overall <= 0.10, overall
    by_region = s.groupby("region")["bought"].mean()
    assert by_region.between(0.01, 0.16).all(), by_region.to_dict()
    # Price-sensitive, discount-driven SEA converts most; slow deciders (JP, US) least.
    assert by_region["SEA"] == by_region.max()
    assert max(by_region["JP"], by_region["US"]) < min(by_region["EU"], by_region["MENA"])


def _shown_truth(data_dir: Path) -> pd.DataFrame:
    pts = schema.read_table("scoring_points", data_dir).to_pandas()
    truth = schema.read_table("truth", data_dir).to_pandas()
    long = truth[["point_id", "product_ids", "p_buy_if_shown"]].explode(
        ["product_ids", "p_buy_if_shown"]
    )
    long = long.rename(columns={"product_ids": "product_id", "p_buy_if_shown": "p"})
    long["p"] = long["p"].astype(float)
    long = long.merge(pts[["point_id", "viewer_id"]], on="point_id")
    viewers = schema.read_table("viewers", data_dir).to_pandas()[["viewer_id", "region"]]
    products = schema.read_table("products", data_dir).to_pandas()
    long = long.merge(viewers, on="viewer_id").merge(products, on="product_id")
    return long


def test_market_differences_are_present(small_world: Path) -> None:
    t = _shown_truth(small_world)
    # Discounts lift the chance to buy far more in SEA than in Japan.
    lift = {}
    for region in ("SEA", "JP"):
        r = t[t["region"] == region]
        lift[region] = (
            r[r["discount_pct"] >= 0.3]["p"].mean() / r[r["discount_pct"] == 0]["p"].mean()
        )
    assert lift["SEA"] > 1.5 * lift["JP"], lift
    # MENA viewers buy non-compliant products far less than compliant ones in sensitive categories.
    sensitive = t["category"].isin(["beauty", "fashion", "food", "health"])
    mena = t[(t["region"] == "MENA") & sensitive]
    ratio = mena[~mena["mena_compliant"]]["p"].mean() / mena[mena["mena_compliant"]]["p"].mean()
    others = t[(t["region"] == "EU") & sensitive]
    ratio_eu = (
        others[~others["mena_compliant"]]["p"].mean() / others[others["mena_compliant"]]["p"].mean()
    )
    assert ratio < 0.4 and ratio_eu > 0.7, (ratio, ratio_eu)


def test_oracle_is_calibrated_and_difficulty_is_in_band(small_world: Path) -> None:
    pts = scoring_frame(small_world)
    # The oracle is exact: realised labels match its probabilities bin by bin.
    bins = pd.qcut(pts["p_buy_before_leave"].rank(method="first"), 10, labels=False)
    table = pts.groupby(bins).agg(p=("p_buy_before_leave", "mean"), y=("label", "mean"))
    assert np.allclose(table["p"], table["y"], atol=0.03), table
    # Pinned difficulty: the best possible AUC is high but far from perfect.
    auc = roc_auc_score(pts["label"], pts["p_buy_before_leave"])
    assert 0.78 <= auc <= 0.92, auc


def test_live_signal_adds_what_the_profile_alone_cannot(small_world: Path) -> None:
    """LightGBM on profile-only vs profile + live features, split by stream time."""
    pts = scoring_frame(small_world)
    cols = conversion_columns(pts, small_world / "features")
    now = epoch(pts["point_time"])
    streams = schema.read_table("streams", small_world).to_pandas().sort_values("start_time")
    cut = set(streams["room_id"].iloc[: int(len(streams) * 0.7)])
    train = pts["room_id"].isin(cut).to_numpy()
    y = pts["label"].to_numpy()
    aucs = {}
    for spec in (CONVERSION_PROFILE_ONLY, CONVERSION):
        x = assemble(spec, {c: cols[c].to_numpy() for c in cols.columns}, now)
        model = lgb.LGBMClassifier(
            n_estimators=150,
            learning_rate=0.05,
            num_leaves=31,
            deterministic=True,
            num_threads=1,
            verbose=-1,
        )
        model.fit(x[train], y[train])
        aucs[spec.name] = roc_auc_score(y[~train], np.asarray(model.predict_proba(x[~train]))[:, 1])
    assert aucs["conversion"] - aucs["conversion_profile_only"] >= 0.03, aucs


@pytest.mark.parametrize("hour", [0, 12, 21, 23])
def test_a_world_may_end_at_any_hour_of_the_day(tmp_path: Path, hour: int) -> None:
    """A host's local evening in the Americas falls on the next UTC day: a world ending
    late in the UTC day plans its last streams past its end date, and each needs that
    day's exchange rates (the tests' worlds end "now", whatever the hour)."""
    end = datetime(2026, 11, 26, hour, 50, tzinfo=UTC)
    simulate(tmp_path, "tiny", seed=11, end_at=end, progress=False)
    fx = schema.read_table("fx", tmp_path).to_pandas()
    streams = schema.read_table("streams", tmp_path).to_pandas()
    assert len(streams) > 0
    assert fx.groupby("currency").size().nunique() == 1  # every currency on every day
