"""Point-in-time training sets for the conversion and next-product models (DESIGN §7).

Every row is an entity (viewer, room[, product]) at a moment ``t``; Feast joins
the feature values stamped strictly before ``t`` (the entity timestamp is
``t - 1 µs``), :func:`features.vector.assemble` turns them into the model's
float32 columns, and the label looks only at events strictly after ``t``.
Streams are split by start time (train / early stopping / calibration / test),
never at random, so the test streams are later than everything trained on.

Run ``python -m training.data --help`` to build and summarise the sets.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import typer

from features import schema
from features.session_sim import EXPOSURE_WINDOW_MIN
from features.vector import (
    CONVERSION,
    EXPOSURE_OVERLAY,
    EXPOSURE_STAGE,
    NEXT_PRODUCT,
    ModelSpec,
    assemble,
)

log = logging.getLogger(__name__)

#: Splits in time order and the share of streams each gets.
SPLITS: tuple[tuple[str, float], ...] = (
    ("train", 0.6),
    ("valid", 0.1),
    ("calib", 0.1),
    ("test", 0.2),
)
ONE_US = pd.Timedelta(microseconds=1)
WINDOW = pd.Timedelta(minutes=EXPOSURE_WINDOW_MIN)
#: Default cap on exposure rows sent to Feast (negatives are subsampled above it).
MAX_EXPOSURE_ROWS = 300_000

#: Above this many entity rows, ``auto`` uses the as-of join instead of Feast's.
FEAST_MAX_ROWS = 20_000

#: Fetches features for an entity frame (keys + ``event_timestamp``); injectable in tests.
Fetcher = Callable[[pd.DataFrame, str], pd.DataFrame]


@dataclass
class TrainingSet:
    """A point-in-time training frame of one model.

    ``frame`` holds the raw Feast columns (``<view>__<feature>``) beside the keys,
    ``time`` (the scoring moment), ``label``, ``weight`` (inverse sampling rate),
    ``split``, ``stream_start``, ``region`` (the viewer's market region) and,
    for next-product rows, ``product_id`` and ``exposure_kind``.
    """

    spec: ModelSpec
    frame: pd.DataFrame
    extra: dict[str, Any] = field(default_factory=dict)

    def matrix(self, spec: ModelSpec | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """The float32 feature matrix in ``spec``'s column order (default: this set's spec)."""
        df = self.frame if rows is None else self.frame.iloc[rows]
        return vectors(spec or self.spec, df)

    def part(self, split: str) -> np.ndarray:
        """Positional indices of one split."""
        return np.flatnonzero(self.frame["split"].to_numpy() == split)

    @property
    def y(self) -> np.ndarray:
        return self.frame["label"].to_numpy(dtype=np.float64)

    @property
    def weight(self) -> np.ndarray:
        return self.frame["weight"].to_numpy(dtype=np.float64)

    def fingerprint(self) -> dict[str, Any]:
        """Row count, content hash and feature service: what exactly was trained on."""
        keys = [c for c in ("viewer_id", "room_id", "product_id", "time") if c in self.frame]
        h = hashlib.sha256()
        h.update(pd.util.hash_pandas_object(self.frame[keys], index=False).to_numpy().tobytes())
        h.update(self.frame["label"].to_numpy(dtype=np.int8).tobytes())
        h.update(self.frame["split"].astype(str).str.cat().encode())
        return {
            "rows": len(self.frame),
            "positives": int(self.frame["label"].sum()),
            "sha256": h.hexdigest()[:16],
            "feature_service": self.spec.feature_service,
            "model": self.spec.name,
        }


def vectors(spec: ModelSpec, df: pd.DataFrame) -> np.ndarray:
    """Assemble ``spec``'s float32 matrix from a frame of raw Feast columns."""
    cols: dict[str, Any] = {c: df[c].to_numpy() for c in df.columns if "__" in c}
    if "product_id" in df:
        cols["product_id"] = df["product_id"].to_numpy()
    now = _epoch(df["time"])
    kind = df["exposure_kind"].to_numpy(dtype=np.float64) if "exposure_kind" in df else 0.0
    return assemble(spec, cols, now, kind)


def _epoch(t: pd.Series) -> np.ndarray:
    return t.astype("datetime64[us, UTC]").astype("int64").to_numpy() / 1e6


def stream_splits(data_dir: Path) -> pd.DataFrame:
    """room_id, start_time, region (the stream's), lineup and split, in time order."""
    streams = schema.read_table("streams", data_dir).to_pandas()
    streams = streams.sort_values(["start_time", "room_id"], kind="stable").reset_index(drop=True)
    n = len(streams)
    bounds = np.cumsum([share for _, share in SPLITS])
    labels = np.array([name for name, _ in SPLITS])
    position = (np.arange(n) + 0.5) / max(n, 1)
    streams["split"] = labels[
        np.searchsorted(bounds, position, side="right").clip(0, len(labels) - 1)
    ]
    return streams[["room_id", "start_time", "region", "lineup", "split"]]


def feast_fetcher(settings: Any) -> Fetcher:
    """A fetcher reading the offline store of ``settings`` through Feast."""
    from features.store import open_store

    store = open_store(settings)

    def fetch(entity_df: pd.DataFrame, feature_service: str) -> pd.DataFrame:
        service = store.get_feature_service(feature_service)
        out = store.get_historical_features(
            entity_df=entity_df, features=service, full_feature_names=True
        ).to_df()
        if len(out) != len(entity_df):
            raise AssertionError(
                f"Feast returned {len(out)} rows for {len(entity_df)} entity rows "
                f"({feature_service}); the point-in-time join must be one row out per row in"
            )
        return out

    return fetch


def asof_fetcher(settings: Any) -> Fetcher:
    """Feast's point-in-time semantics as a sorted as-of join, for worlds too big for Feast's.

    Feast 0.67's DuckDB offline store joins every entity row to every earlier row of
    its key before keeping the latest, which is quadratic in a key's history: one
    ``room_state`` row per room event makes the default world's training set take
    hours and tens of GB. This reads the *same* registered views (source, join keys,
    TTL, feature names) from the Feast registry and keeps, per entity row and view,
    the latest feature row with ``ts <= entity ts`` and ``ts >= entity ts - ttl`` —
    Feast's rule — via ``pandas.merge_asof``. ``tests/training`` checks it equals
    Feast's own output on the tiny world.
    """
    from features.store import open_store

    store = open_store(settings)
    cache: dict[str, pd.DataFrame] = {}

    def view_rows(view: Any, columns: list[str]) -> pd.DataFrame:
        if view.name not in cache:
            src = view.batch_source
            df = pd.read_parquet(src.path)
            df = df.rename(columns={src.timestamp_field: "_ts"})
            df["_ts"] = df["_ts"].astype("datetime64[us, UTC]")
            cache[view.name] = df.sort_values("_ts", kind="stable")
        return cache[view.name]

    def fetch(entity_df: pd.DataFrame, feature_service: str) -> pd.DataFrame:
        service = store.get_feature_service(feature_service)
        out = entity_df.copy()
        out["_ets"] = out["event_timestamp"].astype("datetime64[us, UTC]")
        out["_pos"] = np.arange(len(out))
        out = out.sort_values("_ets", kind="stable")
        for projection in service.feature_view_projections:
            view = store.get_feature_view(projection.name)
            keys = list(view.join_keys)
            names = [f.name for f in projection.features]
            right = view_rows(view, names)[[*keys, "_ts", *names]]
            prefix = projection.name_to_use()
            right = right.rename(columns={n: f"{prefix}__{n}" for n in names})
            merged = pd.merge_asof(
                out[[*keys, "_ets"]].reset_index(),
                right,
                left_on="_ets",
                right_on="_ts",
                by=keys,
                direction="backward",
                allow_exact_matches=True,
                tolerance=pd.Timedelta(view.ttl) if view.ttl else None,
            ).set_index("index")
            for n in names:
                col = merged[f"{prefix}__{n}"]
                if col.dtype == object:
                    col = col.astype(object).where(col.notna(), None)
                out[f"{prefix}__{n}"] = col
        out = out.sort_values("_pos", kind="stable").drop(columns=["_ets", "_pos"])
        return out.reset_index(drop=True)

    return fetch


def make_fetcher(settings: Any, join: str = "auto") -> Fetcher:
    """``feast``, ``asof`` or ``auto``: Feast up to :data:`FEAST_MAX_ROWS` entity rows."""
    if join == "feast":
        return feast_fetcher(settings)
    if join == "asof":
        return asof_fetcher(settings)
    if join != "auto":
        raise ValueError(f"join must be feast, asof or auto, got {join!r}")
    feast, asof = feast_fetcher(settings), asof_fetcher(settings)

    def fetch(entity_df: pd.DataFrame, feature_service: str) -> pd.DataFrame:
        chosen = feast if len(entity_df) <= FEAST_MAX_ROWS else asof
        return chosen(entity_df, feature_service)

    return fetch


def _fetch(fetch: Fetcher, rows: pd.DataFrame, keys: list[str], service: str) -> pd.DataFrame:
    """Join features to ``rows`` (which has ``time``) as of ``time - 1 µs``, keeping row order."""
    entity = rows[keys].copy()
    entity["event_timestamp"] = rows["time"] - ONE_US
    entity["_row"] = np.arange(len(rows))
    out = fetch(entity, service)
    out = out.sort_values("_row").reset_index(drop=True)
    if not np.array_equal(out["_row"].to_numpy(), np.arange(len(rows))):
        raise AssertionError(f"point-in-time join of {service} lost or duplicated rows")
    features = out[[c for c in out.columns if "__" in c]]
    return pd.concat([rows.reset_index(drop=True), features], axis=1)


def _purchases(data_dir: Path) -> pd.DataFrame:
    return _events(data_dir, ["purchase"])[["viewer_id", "room_id", "product_id", "event_time"]]


def _events(data_dir: Path, types: list[str]) -> pd.DataFrame:
    table = schema.read_events(
        data_dir, columns=["event_type", "event_time", "room_id", "viewer_id", "product_id"]
    )
    mask = pc.is_in(table.column("event_type"), value_set=pa.array(types))
    return table.filter(mask).to_pandas()


def sessions(data_dir: Path) -> pd.DataFrame:
    """viewer_id, room_id, join, leave (NaT when the log ends first), from join/leave events."""
    ev = _events(data_dir, ["join", "leave"]).sort_values("event_time", kind="stable")
    ev["n"] = ev.groupby(["viewer_id", "room_id", "event_type"]).cumcount()
    joins = ev[ev["event_type"] == "join"][["viewer_id", "room_id", "n", "event_time"]]
    leaves = ev[ev["event_type"] == "leave"][["viewer_id", "room_id", "n", "event_time"]]
    out = joins.merge(leaves, on=["viewer_id", "room_id", "n"], how="left", suffixes=("", "_l"))
    return out.rename(columns={"event_time": "join", "event_time_l": "leave"}).drop(columns="n")


def _viewer_regions(data_dir: Path) -> pd.Series:
    viewers = schema.read_table("viewers", data_dir).to_pandas()
    return viewers.set_index("viewer_id")["region"]


def conversion_rows(data_dir: Path) -> pd.DataFrame:
    """Scoring points with their oracle and label, before any feature is joined.

    Label: the viewer buys anything in that room strictly after the point and
    no later than the end of that session (DESIGN §7, "before the viewer leaves").
    """
    points = schema.read_table("scoring_points", data_dir).to_pandas()
    truth = schema.read_table("truth", data_dir).to_pandas()
    rows = points.merge(truth, on="point_id", how="inner", validate="one_to_one")
    if len(rows) != len(points) or len(rows) != len(truth):
        raise AssertionError(
            f"scoring_points ({len(points)}) and truth ({len(truth)}) do not join 1:1"
        )
    rows = rows.rename(columns={"point_time": "time", "p_buy_before_leave": "oracle"})
    sess = sessions(data_dir)
    # The session the point belongs to: the last join at or before the point.
    rows = rows.sort_values("time", kind="stable")
    sess = sess.sort_values("join", kind="stable")
    rows = pd.merge_asof(rows, sess, left_on="time", right_on="join", by=["viewer_id", "room_id"])
    end = rows["leave"].fillna(pd.Timestamp.max.tz_localize("UTC"))
    buys = _purchases(data_dir)[["viewer_id", "room_id", "event_time"]]
    cand = rows[["point_id", "viewer_id", "room_id", "time"]].merge(
        buys, on=["viewer_id", "room_id"]
    )
    cand = cand.merge(pd.DataFrame({"point_id": rows["point_id"], "end": end}), on="point_id")
    hit = cand[(cand["event_time"] > cand["time"]) & (cand["event_time"] <= cand["end"])]
    rows["label"] = rows["point_id"].isin(set(hit["point_id"])).astype(np.int8)
    return rows.drop(columns=["join", "leave", "product_ids", "p_buy_if_shown"])


def exposure_rows(data_dir: Path) -> pd.DataFrame:
    """Every (viewer, product) exposure: stage changes to all present viewers, overlay shows.

    Label: that viewer buys that product in that room within (t, t + window].
    """
    ev = _events(data_dir, ["stage_change", "overlay_impression"])
    overlay = ev[ev["event_type"] == "overlay_impression"][
        ["viewer_id", "room_id", "product_id", "event_time"]
    ].assign(exposure_kind=EXPOSURE_OVERLAY)
    stage = ev[ev["event_type"] == "stage_change"][["room_id", "product_id", "event_time"]]
    sess = sessions(data_dir)
    present = stage.merge(sess, on="room_id")
    leave = present["leave"].fillna(pd.Timestamp.max.tz_localize("UTC"))
    present = present[(present["join"] <= present["event_time"]) & (present["event_time"] < leave)]
    stage_rows = present[["viewer_id", "room_id", "product_id", "event_time"]].assign(
        exposure_kind=EXPOSURE_STAGE
    )
    rows = pd.concat([stage_rows, overlay], ignore_index=True).rename(
        columns={"event_time": "time"}
    )
    rows["label"] = _bought_within(rows, _purchases(data_dir))
    return rows


def _bought_within(rows: pd.DataFrame, buys: pd.DataFrame) -> np.ndarray:
    """1 where the viewer bought the row's product in the row's room in (time, time + window]."""
    keys = ["viewer_id", "room_id", "product_id"]
    r = rows[[*keys, "time"]].assign(_i=np.arange(len(rows)))
    cand = r.merge(buys, on=keys)
    ok = (cand["event_time"] > cand["time"]) & (cand["event_time"] <= cand["time"] + WINDOW)
    label = np.zeros(len(rows), dtype=np.int8)
    label[cand.loc[ok, "_i"].to_numpy()] = 1
    return label


def _attach_streams(rows: pd.DataFrame, data_dir: Path) -> pd.DataFrame:
    streams = stream_splits(data_dir)[["room_id", "start_time", "split"]]
    rows = rows.merge(streams.rename(columns={"start_time": "stream_start"}), on="room_id")
    rows["region"] = rows["viewer_id"].map(_viewer_regions(data_dir)).fillna("?")
    return rows


def _subsample(
    rows: pd.DataFrame, max_rows: int | None, rng: np.random.Generator
) -> tuple[pd.DataFrame, float]:
    """Keep every positive and a uniform share of negatives; weight negatives back up."""
    rows = rows.assign(weight=1.0)
    if max_rows is None or len(rows) <= max_rows:
        return rows, 1.0
    pos = rows["label"].to_numpy() == 1
    rate = max(1e-3, min(1.0, (max_rows - pos.sum()) / max((~pos).sum(), 1)))
    keep = pos | (rng.random(len(rows)) < rate)
    rows = rows[keep].copy()
    rows.loc[rows["label"] == 0, "weight"] = 1.0 / rate
    return rows, rate


def _sorted(rows: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("stream_start", "room_id", "time", "viewer_id", "product_id") if c in rows]
    return rows.sort_values(keys, kind="stable").reset_index(drop=True)


def conversion_set(
    data_dir: Path, fetch: Fetcher, max_rows: int | None = None, seed: int = 7
) -> TrainingSet:
    """The conversion model's training set (all scoring points, unless capped)."""
    rows = _attach_streams(conversion_rows(data_dir), data_dir)
    rows, rate = _subsample(rows, max_rows, np.random.default_rng(seed))
    rows = _sorted(rows)
    frame = _fetch(fetch, rows, ["viewer_id", "room_id"], CONVERSION.feature_service)
    return TrainingSet(CONVERSION, frame, {"negative_rate": rate})


def next_product_set(
    data_dir: Path, fetch: Fetcher, max_rows: int | None = MAX_EXPOSURE_ROWS, seed: int = 7
) -> TrainingSet:
    """The next-product model's exposure rows, negatives subsampled above ``max_rows``."""
    rows = _attach_streams(exposure_rows(data_dir), data_dir)
    rows, rate = _subsample(rows, max_rows, np.random.default_rng(seed + 1))
    rows = _sorted(rows)
    frame = _fetch(
        fetch, rows, ["viewer_id", "room_id", "product_id"], NEXT_PRODUCT.feature_service
    )
    return TrainingSet(NEXT_PRODUCT, frame, {"negative_rate": rate})


def ranking_set(data_dir: Path, fetch: Fetcher, split: str = "test") -> TrainingSet:
    """Per (viewer, scoring point) groups over the stream's lineup, for NDCG@5.

    Every lineup product is scored as if put on stage at the point. Relevance:
    the viewer bought that product in that room within the exposure window after
    the point. Groups with no purchase are dropped (their share is in ``extra``);
    features are fetched only for the kept groups.
    """
    points = schema.read_table("scoring_points", data_dir).to_pandas()
    truth = schema.read_table("truth", data_dir).to_pandas()
    streams = stream_splits(data_dir)
    rooms = set(streams.loc[streams["split"] == split, "room_id"])
    pts = points[points["room_id"].isin(rooms)].merge(truth, on="point_id", validate="one_to_one")
    rows = pts[["point_id", "viewer_id", "room_id", "point_time", "product_ids", "p_buy_if_shown"]]
    rows = rows.explode(["product_ids", "p_buy_if_shown"], ignore_index=True)
    rows = rows.rename(
        columns={"point_time": "time", "product_ids": "product_id", "p_buy_if_shown": "oracle"}
    )
    rows["oracle"] = rows["oracle"].astype(np.float64)
    rows["label"] = _bought_within(rows, _purchases(data_dir))
    has_pos = rows.groupby("point_id")["label"].transform("max") > 0
    groups = rows["point_id"].nunique()
    kept = rows[has_pos].copy()
    kept["exposure_kind"] = EXPOSURE_STAGE
    kept = _sorted(_attach_streams(kept, data_dir).assign(weight=1.0))
    frame = _fetch(
        fetch, kept, ["viewer_id", "room_id", "product_id"], NEXT_PRODUCT.feature_service
    )
    extra = {
        "groups": int(groups),
        "groups_kept": int(kept["point_id"].nunique()),
        "dropped_share": 1.0 - kept["point_id"].nunique() / max(groups, 1),
    }
    return TrainingSet(NEXT_PRODUCT, frame, extra)


app = typer.Typer(help=__doc__, no_args_is_help=False, add_completion=False)


@app.command()
def main(
    data_dir: Annotated[
        Path | None, typer.Option(help="Data dir with raw and feature tables (default: settings).")
    ] = None,
    max_rows: Annotated[
        int, typer.Option(help="Cap on next-product exposure rows (negatives subsampled).")
    ] = MAX_EXPOSURE_ROWS,
    seed: Annotated[int, typer.Option(help="Seed of the negative subsampling.")] = 7,
    join: Annotated[
        str, typer.Option(help="Point-in-time join: feast, asof or auto (by row count).")
    ] = "auto",
) -> None:
    """Build both training sets and print their fingerprints and split sizes."""
    from features.settings import FeatureSettings

    settings = FeatureSettings(data_dir=data_dir) if data_dir else FeatureSettings()
    fetch = make_fetcher(settings, join)
    for ts in (
        conversion_set(settings.data_dir, fetch, seed=seed),
        next_product_set(settings.data_dir, fetch, max_rows=max_rows, seed=seed),
    ):
        sizes = ts.frame.groupby("split")["label"].agg(["size", "mean"]).to_dict("index")
        typer.echo(json.dumps({**ts.fingerprint(), "splits": sizes}, default=str))


if __name__ == "__main__":
    app()
