"""LiveRec's two online stores: Feast's own, adjusted where they did not fit.

Feast resolves ``online_store.type: features.online_store.WalSqliteOnlineStore`` by
importing the class and its config class, named ``<class>Config``, from this module
(``feast.repo_config.get_online_config_from_type``).

* :class:`WalSqliteOnlineStore` (embedded profile): Feast's SQLite store with the
  database in WAL mode, so scoring workers in other processes read while the
  aggregator writes instead of waiting on its lock (DESIGN §8). A relative ``path``
  is taken under the data dir (``LIVEREC_DATA_DIR``), not under the Feast repo, so
  ``feast`` run from ``features/`` and :func:`features.store.open_store` open the
  same file.
* :class:`RedisUrlOnlineStore` (production profile): Feast's Redis store that also
  takes a ``redis://`` URL, the form :class:`features.settings.FeatureSettings` and
  every other Redis client use, so one ``LIVEREC_REDIS_URL`` serves the yaml and
  the code alike.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from feast.feature_view import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    _quote_id,
    _table_id,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.utils import to_naive_utc
from pydantic import StrictStr, field_validator

WAL_SQLITE_TYPE = "features.online_store.WalSqliteOnlineStore"
REDIS_URL_TYPE = "features.online_store.RedisUrlOnlineStore"


class WalSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """Feast's SQLite online store config; ``path`` is relative to the data dir."""

    type: Literal["features.online_store.WalSqliteOnlineStore"] = WAL_SQLITE_TYPE  # type: ignore[assignment]
    path: StrictStr = "feast/online.db"


class WalSqliteOnlineStore(SqliteOnlineStore):
    """SQLite online store whose connections run in WAL mode with ``synchronous=NORMAL``.

    WAL lets readers in other processes proceed while one writer commits, and
    ``NORMAL`` skips the fsync per transaction that WAL does not need for
    consistency (a crash may lose the last commits, never corrupt the file); the
    events themselves are durable in the aggregator's write-ahead log.
    """

    @staticmethod
    def _get_db_path(config: RepoConfig) -> str:
        path = Path(config.online_store.path)
        if not path.is_absolute():
            from features.settings import FeatureSettings

            path = FeatureSettings().data_dir / path
        return str(path)

    def _get_conn(self, config: RepoConfig) -> sqlite3.Connection:
        if self._conn is None:
            # Feast creates only the last folder; a fresh data dir needs the parents too.
            Path(self._get_db_path(config)).parent.mkdir(parents=True, exist_ok=True)
            conn = super()._get_conn(config)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        assert self._conn is not None
        return self._conn

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Feast's upsert, sent as one ``executemany`` per batch instead of one
        ``execute`` per feature value: the live aggregator writes thousands of
        coalesced rows of ~30 features a second (DESIGN §8)."""
        store = config.online_store
        if store.vector_enabled or getattr(store, "enable_openai_compatible_store", False):
            super().online_write_batch(config, table, data, progress)
            return
        conn = self._get_conn(config)
        name = _table_id(
            config.project, table, config.registry.enable_online_feature_view_versioning
        )
        sql = (
            f"INSERT INTO {_quote_id(name)} "
            "(entity_key, feature_name, value, value_text, event_ts, created_ts) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
            "value = excluded.value, value_text = excluded.value_text, "
            "event_ts = excluded.event_ts, created_ts = excluded.created_ts;"
        )
        version = config.entity_key_serialization_version
        params = []
        for entity_key, values, timestamp, created_ts in data:
            key = serialize_entity_key(entity_key, entity_key_serialization_version=version)
            ts = to_naive_utc(timestamp)
            created = to_naive_utc(created_ts) if created_ts is not None else None
            for feature_name, val in values.items():
                text, _ = extract_text_and_num(val, False)
                params.append((key, feature_name, val.SerializeToString(), text, ts, created))
        with conn:
            conn.executemany(sql, params)
        if progress:
            progress(len(data))


class RedisUrlOnlineStoreConfig(RedisOnlineStoreConfig):
    """Feast's Redis online store config; ``connection_string`` may be a redis:// URL."""

    type: Literal["features.online_store.RedisUrlOnlineStore"] = REDIS_URL_TYPE  # type: ignore[assignment]

    @field_validator("connection_string", mode="before")
    @classmethod
    def _from_url(cls, value: Any) -> Any:
        return redis_connection_string(value) if isinstance(value, str) else value


class RedisUrlOnlineStore(RedisOnlineStore):
    """Feast's Redis online store, configured by :class:`RedisUrlOnlineStoreConfig`."""


def redis_connection_string(url: str) -> str:
    """Turn ``redis[s]://[user:password@]host[:port][/db][?key=value]`` into Feast's form.

    Feast's Redis store parses ``host:port,db=0,password=...`` itself and reads a
    URL as a host named ``redis``. Anything that is not a URL passes through
    unchanged, so Feast's own (and Redis Cluster's multi-node) strings still work.
    """
    if "${" in url:
        raise ValueError(f"unexpanded environment variable in Redis connection string: {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return url
    if not parts.hostname:
        raise ValueError(f"Redis URL without a host (unix sockets are not supported): {url!r}")
    params: list[str] = [f"{parts.hostname}:{parts.port or 6379}"]
    db = parts.path.strip("/")
    if db:
        params.append(f"db={int(db)}")
    if parts.username:
        params.append(f"username={unquote(parts.username)}")
    if parts.password:
        params.append(f"password={unquote(parts.password)}")
    if parts.scheme == "rediss":
        params.append("ssl=true")
    params.extend(f"{key}={value}" for key, value in parse_qsl(parts.query))
    return ",".join(params)
