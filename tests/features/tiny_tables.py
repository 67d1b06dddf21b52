"""A tiny, hand-checkable set of offline feature tables for the Feast tests.

Built from :mod:`features.tables` (every declared column, typed), not from the
simulator, so the Feast repo is tested on its own. Every entity (or entity pair)
has a row at ``now`` - 6 h, - 4 h and - 2 h, all within every view's TTL at ``now``,
with values that differ between rows, so a retrieval that returns the wrong row
(a later one, an expired one) returns a different value.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.tables import ALL_TABLES, TIMESTAMP, FeatureTable

KEY_VALUES: dict[str, tuple[str, ...]] = {
    "viewer_id": ("v0", "v1", "v2", "v3"),
    "product_id": ("p0", "p1", "p2"),
    "room_id": ("r0", "r1"),
}
OFFSETS = (timedelta(hours=-6), timedelta(hours=-4), timedelta(hours=-2))


def tiny_table(table: FeatureTable, now: datetime, seed: int = 7) -> pd.DataFrame:
    """Rows of ``table`` for every key combination of :data:`KEY_VALUES`, shuffled."""
    rng = np.random.default_rng(seed)
    rows = []
    for keys in itertools.product(*(KEY_VALUES[k] for k in table.keys)):
        for step, offset in enumerate(OFFSETS):
            row: dict[str, object] = dict(zip(table.keys, keys, strict=True))
            row[TIMESTAMP] = now + offset
            for col, kind in table.columns.items():
                if kind == "float":
                    # Multiples of 1/8 survive every float round trip exactly.
                    row[col] = float(rng.integers(0, 80_000)) / 8
                elif kind == "int":
                    row[col] = int(rng.integers(0, 1_000_000))
                else:
                    row[col] = f"{col}:{'/'.join(keys)}:{step}"
            rows.append(row)
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    dtypes = {"float": "float64", "int": "int64", "string": "object"}
    return frame.astype({col: dtypes[kind] for col, kind in table.columns.items()})


def write_tiny_tables(offline_dir: Path, now: datetime) -> dict[str, pd.DataFrame]:
    """Write every declared table to ``offline_dir/<name>.parquet``; return the frames."""
    offline_dir.mkdir(parents=True, exist_ok=True)
    frames = {t.name: tiny_table(t, now, seed=i) for i, t in enumerate(ALL_TABLES)}
    for table in ALL_TABLES:
        frames[table.name].to_parquet(offline_dir / table.file, index=False)
    return frames


def latest(frame: pd.DataFrame, table: FeatureTable) -> pd.DataFrame:
    """The last row of each entity (what the online store holds after materializing)."""
    ordered = frame.sort_values(TIMESTAMP)
    return ordered.groupby(list(table.keys)).tail(1).reset_index(drop=True)


def entity_rows(frame: pd.DataFrame, table: FeatureTable) -> list[dict[str, Any]]:
    """The entity keys of each row of ``frame``, as ``get_online_features`` takes them."""
    return [{key: row[key] for key in table.keys} for _, row in frame.iterrows()]
