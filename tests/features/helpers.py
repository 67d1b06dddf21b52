"""Shared test helpers: labels and point-in-time lookups without Feast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features import schema
from features.tables import BY_NAME, TIMESTAMP


def scoring_frame(data_dir: Path) -> pd.DataFrame:
    """Scoring points with the oracle and the realised label (buys after the point)."""
    pts = schema.read_table("scoring_points", data_dir).to_pandas()
    truth = schema.read_table("truth", data_dir).to_pandas()
    pts = pts.merge(truth, on="point_id", validate="one_to_one")
    ev = schema.read_events(data_dir, ["event_type", "event_time", "room_id", "viewer_id"])
    ev = ev.to_pandas()
    buys = ev[ev["event_type"] == "purchase"][["room_id", "viewer_id", "event_time"]]
    m = pts[["point_id", "room_id", "viewer_id", "point_time"]].merge(
        buys, on=["room_id", "viewer_id"], how="left"
    )
    after = m.assign(after=m["event_time"] > m["point_time"]).groupby("point_id")["after"].any()
    pts["label"] = pts["point_id"].map(after).astype(int)
    return pts


def pit_join(entity: pd.DataFrame, table: str, offline_dir: Path) -> pd.DataFrame:
    """Latest row of ``table`` stamped at or before each entity row's ``ts`` (Feast semantics)."""
    spec = BY_NAME[table]
    df = pd.read_parquet(offline_dir / spec.file)
    df = df.rename(columns={c: f"{table}__{c}" for c in spec.columns})
    df = df.sort_values(TIMESTAMP)
    left = entity.sort_values("ts").reset_index()
    left["ts"] = left["ts"].astype("datetime64[us, UTC]")
    df[TIMESTAMP] = df[TIMESTAMP].astype("datetime64[us, UTC]")
    out = pd.merge_asof(
        left,
        df,
        left_on="ts",
        right_on=TIMESTAMP,
        by=list(spec.keys),
        direction="backward",
        tolerance=pd.Timedelta(spec.ttl),
    )
    return out.set_index("index").sort_index().drop(columns=[TIMESTAMP])


def conversion_columns(pts: pd.DataFrame, offline_dir: Path) -> pd.DataFrame:
    """Raw feature columns for each scoring point, as of 1 microsecond before it."""
    entity = pts[["viewer_id", "room_id"]].copy()
    entity["ts"] = pts["point_time"] - pd.Timedelta(microseconds=1)
    out = entity
    for table in ("viewer_demographics", "viewer_profile", "viewer_live", "room_state"):
        joined = pit_join(entity, table, offline_dir)
        new = [c for c in joined.columns if c.startswith(f"{table}__")]
        out = out.join(joined[new])
    return out


def epoch(ts: pd.Series) -> np.ndarray:
    return ts.astype("datetime64[us, UTC]").astype("int64").to_numpy() / 1e6
