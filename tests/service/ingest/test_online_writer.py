"""Prepared-row writes of live state to the Feast online store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from features.settings import FeatureSettings
from features.store import apply, open_store
from features.tables import VIEWER_LIVE
from service.ingest import online_writer
from service.ingest.online_writer import OnlineWriter

NOW = 1_800_000_000.0


def test_a_large_write_goes_in_bounded_batches_and_every_row_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = FeatureSettings(data_dir=tmp_path)
    apply(settings)
    writer = OnlineWriter(open_store(settings))
    batches: list[int] = []
    real = writer._provider.online_write_batch

    def counted(config: Any, view: Any, data: list[Any], progress: Any) -> None:
        batches.append(len(data))
        real(config, view, data, progress)

    monkeypatch.setattr(writer._provider, "online_write_batch", counted)
    n = 2 * online_writer.WRITE_CHUNK_ROWS + 88
    rows = [
        ((f"v{i:04d}", "r1"), {"present": 1.0, "chat_price": float(i)}, NOW + i) for i in range(n)
    ]
    assert writer.write(VIEWER_LIVE.name, iter(rows)) == n  # any iterable of rows
    assert batches == [online_writer.WRITE_CHUNK_ROWS] * 2 + [88]
    assert writer.rows_written == n
    assert writer.write(VIEWER_LIVE.name, []) == 0 and batches[-1] == 88  # nothing to send
    online = (
        open_store(settings)
        .get_online_features(
            features=["viewer_live:chat_price", "viewer_live:present"],
            entity_rows=[{"viewer_id": f"v{i:04d}", "room_id": "r1"} for i in range(n)],
        )
        .to_dict()
    )
    assert online["chat_price"] == [float(i) for i in range(n)]
    assert online["present"] == [1.0] * n
