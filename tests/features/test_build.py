"""The batch feature build: truncation-safe, one definition with the live fold."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest

from features import schema
from features.build import build_features, day_end
from features.tables import ALL_TABLES, BY_NAME, TIMESTAMP
from tests.features.helpers import pit_join

CHECKED = ("viewer_profile", "viewer_live", "product_stats", "product_live", "room_state")


def _truncate(src: Path, dst: Path, cut: pd.Timestamp) -> None:
    dst.mkdir(parents=True)
    for name in ("viewers", "products", "streams", "fx", "scoring_points", "truth"):
        shutil.copy(src / f"{name}.parquet", dst / f"{name}.parquet")
    ev = schema.read_events(src)
    kept = ev.filter(pc.less(ev.column("event_time"), pa_scalar(cut)))
    schema.write_table("events", kept, dst)


def pa_scalar(ts: pd.Timestamp):
    import pyarrow as pa

    return pa.scalar(ts.to_pydatetime(), type=schema.TS)


def _entities(table: str, offline: Path, ts: pd.Timestamp) -> pd.DataFrame:
    keys = list(BY_NAME[table].keys)
    df = pd.read_parquet(offline / BY_NAME[table].file, columns=keys)
    ent = df.drop_duplicates().reset_index(drop=True)
    ent["ts"] = ts
    return ent


@pytest.mark.parametrize("fraction", [0.35, 0.6, 0.85])
def test_features_at_t_equal_a_rebuild_from_events_strictly_before_t(
    tiny_world: Path, tmp_path: Path, fraction: float
) -> None:
    """Catches any table that counts what happens at or after T (e.g. a daily
    profile stamped at the start of its day)."""
    ev = schema.read_events(tiny_world, ["event_time"]).to_pandas()["event_time"]
    cut = ev.quantile(fraction)
    cut = pd.Timestamp(cut).floor("s") + pd.Timedelta(milliseconds=137)
    trunc = tmp_path / "trunc"
    _truncate(tiny_world, trunc, cut)
    build_features(trunc, progress=False)
    at = cut - pd.Timedelta(microseconds=1)
    compared = 0
    for table in CHECKED:
        ent = _entities(table, tiny_world / "features", at)
        full = pit_join(ent, table, tiny_world / "features")
        part = pit_join(ent, table, trunc / "features")
        cols = [f"{table}__{c}" for c in BY_NAME[table].columns]
        pd.testing.assert_frame_equal(
            full[cols].reset_index(drop=True),
            part[cols].reset_index(drop=True),
            check_exact=False,
            rtol=1e-9,
            obj=table,
        )
        compared += int(full[cols[0]].notna().sum())
    assert compared > 100


def test_every_table_has_its_declared_columns(tiny_world: Path) -> None:
    for spec in ALL_TABLES:
        df = pd.read_parquet(tiny_world / "features" / spec.file)
        assert list(df.columns) == [*spec.keys, *spec.columns, TIMESTAMP]
        assert len(df) > 0, spec.name


def test_profile_snapshots_are_stamped_after_the_sessions_they_count(tiny_world: Path) -> None:
    prof = pd.read_parquet(tiny_world / "features" / "viewer_profile.parquet")
    stamps = prof[TIMESTAMP].astype("int64") / 1e6
    assert np.allclose(stamps % 86400, 0)
    first_seen = prof["first_seen_ts"].to_numpy()
    assert (first_seen < stamps.to_numpy()).all()
    assert (prof["last_order_ts"].fillna(0).to_numpy() < stamps.to_numpy()).all()
    assert day_end(np.array([86400.0 * 3 + 5]))[0] == 86400.0 * 4
