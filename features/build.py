"""`liverec features build`: the event log -> offline feature tables (parquet).

Push tables are the live fold of :class:`features.transforms.LiveAggregator`
replayed over the log, one row per change, stamped with the event's time.
Batch tables are daily snapshots stamped at the end of each UTC day and built
only from sessions that ended (and events that happened) before the stamp, so
a point-in-time join at T never sees anything from T or later.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from features import schema
from features.schema import CATEGORIES, CHAT_TOPICS, CURRENCY_EXPONENT, PAYMENT_METHODS, REGIONS
from features.tables import (
    BY_NAME,
    PRODUCT_LIVE,
    PRODUCT_STATS,
    ROOM_STATE,
    TIMESTAMP,
    VIEWER_DEMOGRAPHICS,
    VIEWER_LIVE,
    VIEWER_PROFILE,
    FeatureTable,
)
from features.transforms import (
    EVENT_FIELDS,
    Event,
    FxLookup,
    LiveAggregator,
    ViewerSession,
    events_from_columns,
    usd_amount,
)

log = logging.getLogger(__name__)
DAY = 86400.0
FUNNEL_WEIGHT = {"product_click": 1.0, "add_to_cart": 2.0, "checkout_start": 2.0, "purchase": 4.0}


def fx_lookup(fx: pd.DataFrame) -> FxLookup:
    """USD per unit of a currency on the UTC day of a time (last known rate if later)."""
    by_cur: dict[str, tuple[list[float], list[float]]] = {}
    for cur, g in fx.sort_values("date").groupby("currency"):
        days = [datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() for d in g["date"]]
        by_cur[str(cur)] = (days, g["usd_per_unit"].tolist())

    def lookup(currency: str, t: float) -> float:
        days, rates = by_cur[currency]
        i = max(0, bisect_right(days, t) - 1)
        return rates[i]

    return lookup


def _epoch(col: pa.ChunkedArray) -> list[float]:
    return (pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False) / 1e6).tolist()


def fold_events(
    events: pa.Table, region_of: dict[str, str], fx: FxLookup, progress: bool = True
) -> tuple[dict[str, dict[str, list[Any]]], list[dict[str, Any]]]:
    """Replay the live fold over the log: push-table rows and finished sessions."""
    agg = LiveAggregator(lambda v: region_of.get(v, ""), fx)
    out: dict[str, dict[str, list[Any]]] = {
        t.name: defaultdict(list) for t in (VIEWER_LIVE, PRODUCT_LIVE, ROOM_STATE)
    }
    sessions: list[dict[str, Any]] = []
    cols = {
        name: _epoch(col) if pa.types.is_timestamp(col.type) else col.to_pylist()
        for name in EVENT_FIELDS
        for col in (events.column(name),)
    }
    for e in tqdm(
        events_from_columns(cols),
        total=events.num_rows,
        desc="folding events",
        unit="ev",
        unit_scale=True,
        disable=not progress,
    ):
        changes = agg.apply(e)
        for table, keys in (
            (VIEWER_LIVE, changes.viewer_live),
            (PRODUCT_LIVE, changes.product_live),
            (ROOM_STATE, changes.room_state),
        ):
            buf = out[table.name]
            for key in dict.fromkeys(keys):
                for k, v in zip(table.keys, key, strict=True):
                    buf[k].append(v)
                buf[TIMESTAMP].append(e.event_time)
                for k, v in agg.rows(table.name, key).items():
                    buf[k].append(v)
        if e.event_type == "leave":
            assert e.viewer_id is not None
            sessions.append(_session_summary(e, agg.viewers[(e.viewer_id, e.room_id)]))
    return out, sessions


def _session_summary(e: Event, s: ViewerSession) -> dict[str, Any]:
    decision = (s.last_purchase_ts - s.first_click_ts) / 60.0 if s.purchases else np.nan
    row = {
        "viewer_id": e.viewer_id,
        "room_id": e.room_id,
        "join_ts": s.join_ts,
        "leave_ts": e.event_time,
        "dwell_min": (e.event_time - s.join_ts) / 60.0,
        "likes": s.likes,
        "clicks": s.clicks,
        "carts": s.carts,
        "purchases": s.purchases,
        "purchase_usd": s.purchase_usd,
        "last_purchase_ts": s.last_purchase_ts,
        "decision_min": decision,
        "abandoned": float(len(s.cart)),
    }
    for topic, n in s.chat.items():
        row[f"chat_{topic}"] = n
    return row


def day_end(ts: np.ndarray | pd.Series) -> np.ndarray:
    """The stamp of the daily snapshot that first includes something at ``ts``."""
    return (np.floor(np.asarray(ts, dtype=np.float64) / DAY) + 1.0) * DAY


def viewer_profile(
    sessions: pd.DataFrame, funnel: pd.DataFrame, payments: pd.DataFrame
) -> pd.DataFrame:
    """Daily cumulative profile from sessions that ended before each stamp."""
    s = sessions.assign(stamp=day_end(sessions["leave_ts"]))
    sums = [
        "dwell_min",
        "likes",
        "clicks",
        "carts",
        "purchases",
        "purchase_usd",
        "abandoned",
        *(f"chat_{t}" for t in CHAT_TOPICS),
    ]
    s["n"] = 1.0
    s["buying"] = (s["purchases"] > 0).astype(float)
    s["decision_sum"] = s["decision_min"].fillna(0.0)
    daily = s.groupby(["viewer_id", "stamp"]).agg(
        **{c: (c, "sum") for c in [*sums, "n", "buying", "decision_sum"]},
        last_order_ts=("last_purchase_ts", "max"),
        first_seen_ts=("join_ts", "min"),
    )
    daily = daily.sort_index()
    g = daily.groupby(level="viewer_id")
    cum = g[[*sums, "n", "buying", "decision_sum"]].cumsum()
    cum["last_order_ts"] = g["last_order_ts"].cummax()
    cum["first_seen_ts"] = g["first_seen_ts"].cummin()
    n = cum["n"]
    prof = pd.DataFrame(index=cum.index)
    prof["sessions_count"] = n
    prof["total_dwell_min"] = cum["dwell_min"]
    prof["avg_dwell_min"] = cum["dwell_min"] / n
    prof["order_count"] = cum["purchases"]
    prof["order_value_usd"] = cum["purchase_usd"]
    prof["avg_order_value_usd"] = (cum["purchase_usd"] / cum["purchases"]).where(
        cum["purchases"] > 0
    )
    prof["last_order_ts"] = cum["last_order_ts"]
    prof["first_seen_ts"] = cum["first_seen_ts"]
    prof["decision_time_min"] = (cum["decision_sum"] / cum["buying"]).where(cum["buying"] > 0)
    prof["clicks_per_session"] = cum["clicks"] / n
    prof["likes_per_session"] = cum["likes"] / n
    prof["cart_abandon_rate"] = (cum["abandoned"] + 0.5) / (cum["carts"] + 2.0)
    for t in CHAT_TOPICS:
        prof[f"topic_rate_{t}"] = cum[f"chat_{t}"] / n
    prof = prof.join(_cumulative_shares(funnel, "category", CATEGORIES, "cat_aff_", prof.index))
    pay = _cumulative_shares(payments, "payment_method", PAYMENT_METHODS, "pay_", prof.index)
    has_pay = pay.sum(axis=1) > 0
    prof["preferred_payment"] = np.where(
        has_pay, np.array(PAYMENT_METHODS)[pay.to_numpy().argmax(axis=1)], ""
    )
    return prof.reset_index().rename(columns={"stamp": TIMESTAMP})


def _cumulative_shares(
    df: pd.DataFrame, column: str, values: tuple[str, ...], prefix: str, index: pd.Index
) -> pd.DataFrame:
    """Per (viewer, stamp): smoothed cumulative share of weight by ``column`` value."""
    if df.empty:
        counts = pd.DataFrame(0.0, index=index, columns=list(values))
    else:
        d = df.assign(stamp=day_end(df["leave_ts"]))
        counts = d.pivot_table(
            index=["viewer_id", "stamp"],
            columns=column,
            values="weight",
            aggfunc="sum",
            fill_value=0.0,
        )
        counts = counts.reindex(columns=list(values), fill_value=0.0)
        counts = counts.reindex(index, fill_value=0.0).groupby(level="viewer_id").cumsum()
    if prefix == "pay_":
        return counts.add_prefix(prefix)
    total = counts.sum(axis=1)
    shares = (counts.add(0.5)).div(total + 0.5 * len(values), axis=0)
    return shares.add_prefix(prefix)


def product_stats(
    products: pd.DataFrame,
    sessions: pd.DataFrame,
    streams: pd.DataFrame,
    funnel: pd.DataFrame,
    region_of: dict[str, str],
    fx: FxLookup,
    stamps: np.ndarray,
) -> pd.DataFrame:
    """Daily product snapshots: catalogue facts plus rates from sessions ended before."""
    lineup = (
        streams[["room_id", "lineup"]].explode("lineup").rename(columns={"lineup": "product_id"})
    )
    s = sessions[["viewer_id", "room_id", "leave_ts"]].copy()
    s["region"] = s["viewer_id"].map(region_of)
    exposed = s.merge(lineup, on="room_id")
    exposed["stamp"] = day_end(exposed["leave_ts"])
    f = funnel.copy()
    f["region"] = f["viewer_id"].map(region_of)
    f["stamp"] = day_end(f["leave_ts"])
    frames = []
    for stamp in stamps:
        ex = exposed[exposed["stamp"] <= stamp]
        fu = f[f["stamp"] <= stamp]
        base = products[["product_id"]].copy()
        n = ex.groupby("product_id").size()
        n_reg = ex.groupby(["product_id", "region"]).size().unstack(fill_value=0)
        by_type = fu.groupby(["product_id", "event_type"]).size().unstack(fill_value=0)
        bought = fu[fu["event_type"] == "purchase"]
        b_reg = bought.groupby(["product_id", "region"]).size().unstack(fill_value=0)
        pid = base["product_id"]
        sessions_n = pid.map(n).fillna(0.0)
        base["lineup_sessions"] = sessions_n
        for name, etype in (
            ("click_rate", "product_click"),
            ("cart_rate", "add_to_cart"),
            ("purchase_rate", "purchase"),
        ):
            cnt = pid.map(by_type[etype]) if etype in by_type else 0.0
            base[name] = (pd.Series(cnt, index=base.index).fillna(0.0) + 0.2) / (sessions_n + 20.0)
        for r in REGIONS:
            ns = pid.map(n_reg[r]).fillna(0.0) if r in n_reg else 0.0
            nb = pid.map(b_reg[r]).fillna(0.0) if r in b_reg else 0.0
            base[f"purchase_rate_{r}"] = (nb + 0.2) / (ns + 20.0)
        base[TIMESTAMP] = stamp
        frames.append(base)
    stats = pd.concat(frames, ignore_index=True)
    cat = products.set_index("product_id")
    minor = cat["list_price_minor"].astype(float) / cat["currency"].map(
        lambda c: 10 ** CURRENCY_EXPONENT[c]
    )
    catalogue = pd.DataFrame(
        {
            "category": cat["category"],
            "discount_pct": cat["discount_pct"],
            "mena_compliant": cat["mena_compliant"].astype(float),
            "_major": minor,
            "_cur": cat["currency"],
        }
    )
    stats = stats.join(catalogue, on="product_id")
    stats["price_usd"] = [
        m * fx(c, t)
        for m, c, t in zip(stats["_major"], stats["_cur"], stats[TIMESTAMP], strict=True)
    ]
    stats["final_price_usd"] = stats["price_usd"] * (1.0 - stats["discount_pct"])
    return stats.drop(columns=["_major", "_cur"])


def _to_table(table: FeatureTable, df: pd.DataFrame) -> pa.Table:
    """Keys + declared columns + timestamp, typed as declared."""
    arrays, fields = [], []
    for k in table.keys:
        arrays.append(pa.array(df[k].astype(str).tolist(), type=pa.string()))
        fields.append(pa.field(k, pa.string()))
    for c, kind in table.columns.items():
        if kind == "string":
            arrays.append(pa.array(df[c].fillna("").astype(str).tolist(), type=pa.string()))
            fields.append(pa.field(c, pa.string()))
        else:
            typ = pa.float64() if kind == "float" else pa.int64()
            arrays.append(
                pa.array(np.asarray(df[c], dtype=np.float64), type=pa.float64()).cast(typ)
            )
            fields.append(pa.field(c, typ))
    ts = (np.asarray(df[TIMESTAMP], dtype=np.float64) * 1e6).astype(np.int64)
    arrays.append(pa.array(ts, type=schema.TS))
    fields.append(pa.field(TIMESTAMP, schema.TS))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def build_features(
    data_dir: Path, out_dir: Path | None = None, progress: bool = True
) -> dict[str, int]:
    """Build every offline feature table from the raw tables in ``data_dir``."""
    data_dir = Path(data_dir)
    out_dir = Path(out_dir) if out_dir is not None else data_dir / "features"
    events = schema.read_events(data_dir)
    viewers = schema.read_table("viewers", data_dir).to_pandas()
    products = schema.read_table("products", data_dir).to_pandas()
    streams = schema.read_table("streams", data_dir).to_pandas()
    fx = fx_lookup(schema.read_table("fx", data_dir).to_pandas())
    region_of = dict(zip(viewers["viewer_id"], viewers["region"], strict=True))
    push, sessions_rows = fold_events(events, region_of, fx, progress)
    sessions = pd.DataFrame(sessions_rows)
    leave = sessions.set_index(["viewer_id", "room_id"])["leave_ts"]
    funnel, payments = _funnel_and_payments(events, products, leave, fx)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames: dict[str, pd.DataFrame] = {name: pd.DataFrame(cols) for name, cols in push.items()}
    frames[VIEWER_PROFILE.name] = viewer_profile(sessions, funnel, payments)
    demo = viewers.copy()
    # Epoch seconds whatever the datetime unit pandas read (parquet TS is microseconds).
    demo[TIMESTAMP] = demo["signup_time"].astype("datetime64[us, UTC]").astype("int64") / 1e6
    frames[VIEWER_DEMOGRAPHICS.name] = demo
    t_events = events.column("event_time")
    first = pc.min(t_events).value / 1e6
    last = pc.max(t_events).value / 1e6
    stamps = np.arange(np.floor(first / DAY) * DAY, day_end(np.array([last]))[0] + 1, DAY)
    frames[PRODUCT_STATS.name] = product_stats(
        products, sessions, streams, funnel, region_of, fx, stamps
    )
    counts = {}
    for name, df in frames.items():
        table = _to_table(BY_NAME[name], df)
        pq.write_table(table, out_dir / BY_NAME[name].file)
        counts[name] = table.num_rows
    return counts


def _funnel_and_payments(
    events: pa.Table, products: pd.DataFrame, leave: pd.Series, fx: FxLookup
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Funnel events (with category and weight) and payments, each tied to its session's end."""
    types = list(FUNNEL_WEIGHT)
    mask = pc.is_in(events.column("event_type"), value_set=pa.array(types))
    f = (
        events.filter(mask)
        .select(
            ["event_type", "room_id", "viewer_id", "product_id", "payment_method", "event_time"]
        )
        .to_pandas()
    )
    f["category"] = f["product_id"].map(products.set_index("product_id")["category"])
    f["weight"] = f["event_type"].map(FUNNEL_WEIGHT)
    f["product_id"] = f["product_id"].astype(str)
    idx = pd.MultiIndex.from_arrays([f["viewer_id"], f["room_id"]])
    f["leave_ts"] = leave.reindex(idx).to_numpy()
    f = f.dropna(subset=["leave_ts"])  # sessions still open at the end of the log
    pay = f[f["event_type"] == "purchase"].assign(weight=1.0)
    return f, pay


__all__ = ["build_features", "day_end", "fold_events", "fx_lookup", "usd_amount"]
