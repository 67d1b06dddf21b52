"""The production profile end to end: SQL registry on PostgreSQL, Redis online store.

Each run registers a project of its own in a PostgreSQL schema of its own (Feast's
SQL registry teardown empties every table it owns, whatever the project), and
removes both, and the project's Redis keys, when it ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pandas as pd
import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from features.settings import FeatureSettings
from features.store import apply, materialize, open_store
from features.tables import ALL_TABLES
from tests.features.tiny_tables import entity_rows, latest, write_tiny_tables

pytestmark = pytest.mark.integration


@pytest.fixture
def registry_schema(postgres_url: str) -> Iterator[str]:
    schema = f"feast_it_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _registry_url(postgres_url: str, schema: str) -> str:
    """The SQLAlchemy URL (psycopg 3 driver) of ``postgres_url``, confined to ``schema``."""
    url = make_url(postgres_url).set(drivername="postgresql+psycopg")
    url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def _project_keys(redis_url: str, project: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        return list(client.scan_iter(match=f"*{project}".encode()))
    finally:
        client.close()


def test_apply_materialize_and_read_back(
    redis_url: str,
    postgres_url: str,
    registry_schema: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    project = f"liverec_it_{uuid.uuid4().hex[:12]}"
    settings = FeatureSettings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path_factory.mktemp("feast_production"),
        profile="production",
        redis_url=redis_url,
        registry_url=_registry_url(postgres_url, registry_schema),
        project=project,
    )
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    frames = write_tiny_tables(settings.offline_dir, now)
    store = apply(settings)
    try:
        materialize(settings, end=now)

        # The registry is in PostgreSQL, in this run's schema, under this run's project.
        with psycopg.connect(postgres_url) as conn:
            (views,) = conn.execute(
                f'SELECT count(*) FROM "{registry_schema}".feature_views WHERE project_id = %s',
                (project,),
            ).fetchone()  # type: ignore[misc]
        assert views == len(ALL_TABLES)

        # A fresh store (as a scoring worker would open) reads the values from Redis.
        reader = open_store(settings)
        assert {v.name for v in reader.list_feature_views()} == {t.name for t in ALL_TABLES}
        assert _project_keys(redis_url, project)
        for table in ALL_TABLES:
            expected = latest(frames[table.name], table)
            got = reader.get_online_features(
                features=[f"{table.name}:{c}" for c in table.columns],
                entity_rows=entity_rows(expected, table),
            ).to_df()
            columns = list(table.keys) + list(table.columns)
            pd.testing.assert_frame_equal(
                got[columns].reset_index(drop=True), expected[columns], check_dtype=False
            )
    finally:
        store.teardown()
    assert _project_keys(redis_url, project) == []
