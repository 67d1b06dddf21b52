"""Session fixtures: one tiny Feast repo (embedded profile), applied and materialized once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import pytest
from feast import FeatureStore

from features.settings import FeatureSettings
from features.store import apply, materialize
from tests.features.tiny_tables import write_tiny_tables


@dataclass(frozen=True)
class TinyRepo:
    settings: FeatureSettings
    store: FeatureStore
    #: The offline tables as written, by table name.
    frames: dict[str, pd.DataFrame]
    #: The reference time: the tables' rows are hours before it; materialized up to it.
    now: datetime


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyRepo]:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    settings = FeatureSettings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path_factory.mktemp("feast_repo"),
        profile="embedded",
        project="liverec",
    )
    frames = write_tiny_tables(settings.offline_dir, now)
    apply(settings)
    store = materialize(settings, end=now)
    yield TinyRepo(settings=settings, store=store, frames=frames, now=now)
    store.teardown()
