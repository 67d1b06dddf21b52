"""The WAL SQLite online store and the Redis URL translation."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from features.online_store import WalSqliteOnlineStore, redis_connection_string
from features.store import open_store
from features.tables import BY_NAME, TIMESTAMP
from tests.features.conftest import TinyRepo


def _online_db(tiny_repo: TinyRepo) -> str:
    return str(tiny_repo.settings.feast_dir / "online.db")


def _write_room(tiny_repo: TinyRepo, room_id: str, viewers_present: float) -> None:
    """Write one room_state row for a room the offline tables do not have."""
    table = BY_NAME["room_state"]
    row = tiny_repo.frames[table.name].iloc[[0]].copy()
    row["room_id"] = room_id
    row["viewers_present"] = viewers_present
    row[TIMESTAMP] = pd.Timestamp(tiny_repo.now)
    tiny_repo.store.write_to_online_store(table.name, row.reset_index(drop=True))


def test_online_db_is_in_wal_mode_after_a_write(tiny_repo: TinyRepo) -> None:
    _write_room(tiny_repo, "wal-room-0", 41.0)
    with sqlite3.connect(_online_db(tiny_repo)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    online_store = tiny_repo.store._get_provider().online_store
    assert isinstance(online_store, WalSqliteOnlineStore)
    # synchronous is per connection: 1 is NORMAL (FULL, the default, is 2).
    assert online_store._get_conn(tiny_repo.store.config).execute(
        "PRAGMA synchronous"
    ).fetchone() == (1,)


def test_reader_in_another_connection_does_not_wait_on_the_writer(tiny_repo: TinyRepo) -> None:
    """While a writer holds an exclusive transaction, a reader still gets the committed value.

    In SQLite's default rollback-journal mode this read would block and fail with
    "database is locked" after the driver's busy timeout.
    """
    _write_room(tiny_repo, "wal-room-1", 17.0)
    writer = sqlite3.connect(_online_db(tiny_repo), timeout=0.5, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute(f"UPDATE \"{tiny_repo.settings.project}_room_state\" SET value = x''")
        reader = open_store(tiny_repo.settings)  # a new store: its own connection
        got = reader.get_online_features(
            features=["room_state:viewers_present"], entity_rows=[{"room_id": "wal-room-1"}]
        ).to_dict()
        assert got["viewers_present"] == [17.0]
    finally:
        writer.execute("ROLLBACK")
        writer.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1:6379,db=0"),
        ("redis://localhost", "localhost:6379"),
        ("redis://:s%40cret@cache:6380/3", "cache:6380,db=3,password=s@cret"),
        ("redis://app:pw@cache:6379/1", "cache:6379,db=1,username=app,password=pw"),
        ("rediss://cache:6380/0?socket_timeout=0.5", "cache:6380,db=0,ssl=true,socket_timeout=0.5"),
        # Feast's own form (and Redis Cluster's node lists) pass through unchanged.
        ("cache:6379,db=0", "cache:6379,db=0"),
        ("n1:7000,n2:7001,ssl=true", "n1:7000,n2:7001,ssl=true"),
    ],
)
def test_redis_url_becomes_feast_connection_string(url: str, expected: str) -> None:
    assert redis_connection_string(url) == expected


def test_unset_environment_variable_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unexpanded environment variable"):
        redis_connection_string("${LIVEREC_REDIS_URL}")
