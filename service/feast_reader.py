"""Blocking reads of Feast online rows through the online store's own ``online_read``.

``FeatureStore.get_online_features`` costs ~0.7 ms for one entity against ~0.1 ms
for the store's own read (DESIGN §8), so the service reads through the provider
and decodes the values itself. Everything here blocks: callers run it in a
thread with a timeout (:mod:`service.features_online`).
"""

from __future__ import annotations

import itertools
import logging
import operator
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from feast import FeatureStore, FeatureView
from feast.infra.key_encoding_utils import deserialize_entity_key, serialize_entity_key
from feast.infra.online_stores.sqlite import SqliteOnlineStore, _quote_id, _table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type

from features.tables import BY_NAME, VIEWER_LIVE

log = logging.getLogger(__name__)

#: Key under which a row carries its event time (epoch seconds).
TS = "_ts"

Row = dict[str, Any]


class OnlineReader(Protocol):
    """What the service needs from an online store (a Feast one, or a test double).

    A reader may also set ``local = True`` when its reads are local and short (an
    embedded file in WAL mode, never waiting on a writer): a caller on an event loop
    then reads in place instead of through the read pool. Absent means False.
    """

    def read(self, view: str, keys: Sequence[tuple[str, ...]]) -> list[Row | None]:
        """One row per key (``None`` when absent), each with its event time under ``_ts``."""
        ...

    def present_viewers(self) -> dict[str, list[str]]:
        """room_id -> viewers whose ``viewer_live`` row says present=1, for every room."""
        ...


class FeastReader:
    """:class:`OnlineReader` over a Feast store of either profile."""

    def __init__(self, store: FeatureStore) -> None:
        self._store = store
        self._config = store.config
        self._provider = store._get_provider()  # public API is the 7x slower get_online_features
        self._views: dict[str, FeatureView] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._keys: dict[tuple[str, tuple[str, ...]], bytes] = {}
        #: The SQLite file to read directly (embedded profile); None: through the provider.
        self._sqlite_path = _sqlite_path(self._provider.online_store, self._config)
        self.local = self._sqlite_path is not None

    def _view(self, name: str) -> FeatureView:
        view = self._views.get(name)
        if view is None:
            with self._lock:
                view = self._store.get_feature_view(name)
                self._views[name] = view
        return view

    def read(self, view: str, keys: Sequence[tuple[str, ...]]) -> list[Row | None]:
        if not keys:
            return []
        fv = self._view(view)
        if self._sqlite_path is not None:
            return self._read_sqlite(fv, view, keys)
        raw = self._provider.online_read(
            config=self._config, table=fv, entity_keys=[self._entity_key(view, k) for k in keys]
        )
        return [_decode(ts, values) for ts, values in raw]

    def _entity_key(self, view: str, key: tuple[str, ...]) -> EntityKeyProto:
        return EntityKeyProto(
            join_keys=list(BY_NAME[view].keys),
            entity_values=[ValueProto(string_val=v) for v in key],
        )

    def _serialized(self, view: str, key: tuple[str, ...]) -> bytes:
        """The stored form of an entity key (cached: the same viewers and products come
        back call after call, and serializing one costs more than reading its row)."""
        cache_key = (view, key)
        found = self._keys.get(cache_key)
        if found is None:
            found = serialize_entity_key(
                self._entity_key(view, key),
                entity_key_serialization_version=self._config.entity_key_serialization_version,
            )
            if len(self._keys) >= _KEYS_MAX:
                self._keys.clear()
            self._keys[cache_key] = found
        return found

    def _read_sqlite(
        self, fv: FeatureView, view: str, keys: Sequence[tuple[str, ...]]
    ) -> list[Row | None]:
        """Feast's SQLite ``online_read`` (the same query, the same row per key), decoded
        straight into rows: its connection parses the timestamp of every feature value
        (about half the cost of a read) and wraps each value in a proto; here one
        timestamp per row is parsed, the one Feast keeps (the row's last)."""
        wanted = [self._serialized(view, k) for k in keys]
        table = self._table(fv)
        fetched = (
            self._sqlite()
            .execute(
                f"SELECT entity_key, feature_name, value, event_ts FROM {table} "
                f"WHERE entity_key IN ({','.join('?' * len(wanted))}) ORDER BY entity_key",
                wanted,
            )
            .fetchall()
        )
        rows: dict[bytes, Row] = {}
        for key, group in itertools.groupby(fetched, key=_first):
            values = list(group)
            row: Row = {name: _value(blob) for _, name, blob, _ in values}
            row[TS] = _epoch(values[-1][3])
            rows[key] = row
        # A key asked twice gets the same row twice (rows are never changed once read).
        return [rows.get(key) for key in wanted]

    def _table(self, fv: FeatureView) -> str:
        """The quoted SQLite table Feast keeps a view's online rows in."""
        config = self._config
        return _quote_id(
            _table_id(config.project, fv, config.registry.enable_online_feature_view_versioning)
        )

    def _sqlite(self) -> sqlite3.Connection:
        """This thread's read connection (WAL: reads never wait on the writer)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            assert self._sqlite_path is not None
            conn = sqlite3.connect(self._sqlite_path, check_same_thread=False)
            self._local.conn = conn
        return conn

    def present_viewers(self) -> dict[str, list[str]]:
        """Scan of the SQLite ``viewer_live`` table (embedded profile only).

        A stop-gap until the live aggregator owns the room roster in memory
        (DESIGN §4); other stores answer no roster, which degrades
        RecommendNextProduct to its popularity fallback.
        """
        if self._sqlite_path is None:
            return {}
        table = self._table(self._view(VIEWER_LIVE.name))
        rows = (
            self._sqlite()
            .execute(f"SELECT entity_key, value FROM {table} WHERE feature_name = ?", ("present",))
            .fetchall()
        )
        rooms: dict[str, list[str]] = {}
        version = self._config.entity_key_serialization_version
        for key_bin, value_bin in rows:
            if _value(value_bin) != 1.0:
                continue
            key = deserialize_entity_key(key_bin, version)
            ids = dict(zip(key.join_keys, (v.string_val for v in key.entity_values), strict=True))
            rooms.setdefault(ids["room_id"], []).append(ids["viewer_id"])
        return rooms


#: Scalar kinds read as they are (every column of features.tables is a scalar).
_SCALARS = frozenset(
    {"double_val", "float_val", "int64_val", "int32_val", "string_val", "bool_val"}
)


def _python(value: ValueProto) -> Any:
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    if kind in _SCALARS:  # 10x faster than Feast's generic conversion, per value
        return getattr(value, kind)
    return feast_value_type_to_python_type(value)


def _sqlite_path(online: Any, config: Any) -> str | None:
    if not isinstance(online, SqliteOnlineStore) or config.online_store.vector_enabled:
        return None
    return str(online._get_db_path(config))


_KEYS_MAX = 200_000
_first = operator.itemgetter(0)

#: Decoded values by their stored bytes: most values repeat (counts, flags, codes).
_VALUES: dict[bytes, Any] = {}
_VALUES_MAX = 100_000


def _value(blob: bytes) -> Any:
    try:
        return _VALUES[blob]
    except KeyError:
        pass
    value = ValueProto()
    value.ParseFromString(blob)
    decoded = _python(value)
    if decoded is None or isinstance(decoded, float | int | str | bool):  # immutable: shareable
        if len(_VALUES) >= _VALUES_MAX:
            _VALUES.clear()
        _VALUES[blob] = decoded
    return decoded


_TIMESTAMP = sqlite3.converters.get("TIMESTAMP")


def _epoch(stored: Any) -> float:
    """Epoch seconds of a stored ``event_ts``, parsed as Feast's connection parses it."""
    if isinstance(stored, datetime):
        ts = stored
    elif _TIMESTAMP is not None:
        ts = _TIMESTAMP(stored.encode() if isinstance(stored, str) else stored)
    else:
        ts = datetime.fromisoformat(stored if isinstance(stored, str) else stored.decode())
    ts = ts.astimezone(UTC) if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    return ts.timestamp()


def _decode(ts: Any, values: dict[str, ValueProto] | None) -> Row | None:
    if values is None:
        return None
    row: Row = {name: _python(v) for name, v in values.items()}
    row[TS] = ts.timestamp() if ts is not None else time.time()
    return row
