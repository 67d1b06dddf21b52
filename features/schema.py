"""The raw-event schema and the dimension tables: how real data comes in.

The simulator writes exactly these tables and a real backend would send exactly
these columns, so everything downstream (feature build, training, live
ingestion) is written against this one module.  Every table is validated on
write and on read; a violation raises :class:`SchemaError` naming the table,
the column and what is wrong with it.

Event log (``events/``, parquet partitioned by ``event_date``):

==================  ===========================  =====================================
column              type                         meaning
==================  ===========================  =====================================
event_id            string, required, unique     idempotency key chosen by the sender
event_type          string, required             one of :data:`EVENT_TYPES`
event_time          timestamp[us, UTC], required when it happened (sender's clock)
room_id             string, required             the live room (one stream)
viewer_id           string, nullable             viewer events only
product_id          string, nullable             stage_change, overlay_impression,
                                                 product_click, add_to_cart,
                                                 checkout_start, purchase
chat_topic          string, nullable             chat only: one of :data:`CHAT_TOPICS`
chat_text           string, nullable             chat only, free text
amount_minor        int64, nullable              purchase only: integer minor units
currency            string, nullable             purchase only: ISO 4217 code
payment_method      string, nullable             purchase only: :data:`PAYMENT_METHODS`
planned_end_time    timestamp[us, UTC], nullable stream_start only, optional: when the host
                                                 plans to end the stream (its schedule)
event_date          string YYYY-MM-DD (UTC)      partition column, derived
==================  ===========================  =====================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

EVENT_TYPES: tuple[str, ...] = (
    "stream_start",
    "stream_end",
    "stage_change",
    "overlay_impression",
    "join",
    "leave",
    "chat",
    "like",
    "share",
    "product_click",
    "add_to_cart",
    "checkout_start",
    "purchase",
)
STREAM_EVENTS = frozenset({"stream_start", "stream_end", "stage_change"})
VIEWER_EVENTS = frozenset(EVENT_TYPES) - STREAM_EVENTS
PRODUCT_EVENTS = frozenset(
    {
        "stage_change",
        "overlay_impression",
        "product_click",
        "add_to_cart",
        "checkout_start",
        "purchase",
    }
)
#: Funnel step reached by each funnel event (0 = none).
FUNNEL_STEP = {"product_click": 1, "add_to_cart": 2, "checkout_start": 3, "purchase": 4}
CHAT_TOPICS: tuple[str, ...] = (
    "price",
    "shipping",
    "size_fit",
    "usage",
    "authenticity",
    "payment",
    "other",
)
PAYMENT_METHODS: tuple[str, ...] = ("card", "wallet", "cod", "bank_transfer")
#: ISO 4217 currencies the platform settles in, with their minor-unit exponent.
CURRENCY_EXPONENT: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "IDR": 2,
    "THB": 2,
    "VND": 0,
    "PHP": 2,
    "MYR": 2,
    "JPY": 0,
    "AED": 2,
    "SAR": 2,
}
CATEGORIES: tuple[str, ...] = (
    "beauty",
    "fashion",
    "modest_fashion",
    "electronics",
    "home",
    "food",
    "health",
    "kids",
)
REGIONS: tuple[str, ...] = ("US", "EU", "SEA", "JP", "MENA")

TS = pa.timestamp("us", tz="UTC")

EVENTS = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("event_time", TS, nullable=False),
        pa.field("room_id", pa.string(), nullable=False),
        pa.field("viewer_id", pa.string()),
        pa.field("product_id", pa.string()),
        pa.field("chat_topic", pa.string()),
        pa.field("chat_text", pa.string()),
        pa.field("amount_minor", pa.int64()),
        pa.field("currency", pa.string()),
        pa.field("payment_method", pa.string()),
        pa.field("planned_end_time", TS),
    ]
)

VIEWERS = pa.schema(
    [
        pa.field("viewer_id", pa.string(), nullable=False),
        pa.field("market", pa.string(), nullable=False),
        pa.field("region", pa.string(), nullable=False),
        pa.field("age_band", pa.string(), nullable=False),
        pa.field("gender", pa.string(), nullable=False),
        pa.field("language", pa.string(), nullable=False),
        pa.field("device", pa.string(), nullable=False),
        pa.field("income_band", pa.string(), nullable=False),
        pa.field("signup_time", TS, nullable=False),
    ]
)

PRODUCTS = pa.schema(
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("seller_market", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("list_price_minor", pa.int64(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("discount_pct", pa.float64(), nullable=False),
        pa.field("compliance_tags", pa.list_(pa.string()), nullable=False),
        pa.field("mena_compliant", pa.bool_(), nullable=False),
    ]
)

STAGE_SLOT = pa.struct(
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("start_time", TS, nullable=False),
        pa.field("end_time", TS, nullable=False),
    ]
)

STREAMS = pa.schema(
    [
        pa.field("room_id", pa.string(), nullable=False),
        pa.field("host_id", pa.string(), nullable=False),
        pa.field("market", pa.string(), nullable=False),
        pa.field("region", pa.string(), nullable=False),
        pa.field("start_time", TS, nullable=False),
        pa.field("end_time", TS, nullable=False),
        pa.field("lineup", pa.list_(pa.string()), nullable=False),
        pa.field("stage_schedule", pa.list_(STAGE_SLOT), nullable=False),
        pa.field("stage_shuffled", pa.bool_(), nullable=False),
    ]
)

FX = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("usd_per_unit", pa.float64(), nullable=False),
    ]
)

SCORING_POINTS = pa.schema(
    [
        pa.field("point_id", pa.string(), nullable=False),
        pa.field("viewer_id", pa.string(), nullable=False),
        pa.field("room_id", pa.string(), nullable=False),
        pa.field("point_time", TS, nullable=False),
        pa.field("join_time", TS, nullable=False),
        pa.field("k", pa.int32(), nullable=False),
    ]
)

TRUTH = pa.schema(
    [
        pa.field("point_id", pa.string(), nullable=False),
        pa.field("p_buy_before_leave", pa.float64(), nullable=False),
        pa.field("product_ids", pa.list_(pa.string()), nullable=False),
        pa.field("p_buy_if_shown", pa.list_(pa.float64()), nullable=False),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "events": EVENTS,
    "viewers": VIEWERS,
    "products": PRODUCTS,
    "streams": STREAMS,
    "fx": FX,
    "scoring_points": SCORING_POINTS,
    "truth": TRUTH,
}

#: Categorical columns and the values they may take.
ENUMS: dict[str, dict[str, Iterable[str]]] = {
    "events": {
        "event_type": EVENT_TYPES,
        "chat_topic": CHAT_TOPICS,
        "payment_method": PAYMENT_METHODS,
        "currency": tuple(CURRENCY_EXPONENT),
    },
    "viewers": {"region": REGIONS},
    "products": {"category": CATEGORIES, "currency": tuple(CURRENCY_EXPONENT)},
    "streams": {"region": REGIONS},
    "fx": {"currency": tuple(CURRENCY_EXPONENT)},
}
UNIQUE: dict[str, str] = {
    "events": "event_id",
    "viewers": "viewer_id",
    "products": "product_id",
    "streams": "room_id",
    "scoring_points": "point_id",
    "truth": "point_id",
}


class SchemaError(ValueError):
    """A table does not match its declared schema; the message names the column."""


@dataclass(frozen=True)
class _Rule:
    """Which event types require (or forbid) a column to be set."""

    column: str
    required_for: frozenset[str]
    #: Allowed but not required for ``required_for`` (still forbidden elsewhere).
    optional: bool = False


_EVENT_RULES = (
    _Rule("viewer_id", VIEWER_EVENTS),
    _Rule("product_id", PRODUCT_EVENTS),
    _Rule("chat_topic", frozenset({"chat"})),
    _Rule("amount_minor", frozenset({"purchase"})),
    _Rule("currency", frozenset({"purchase"})),
    _Rule("payment_method", frozenset({"purchase"})),
    _Rule("planned_end_time", frozenset({"stream_start"}), optional=True),
)


def validate(name: str, table: pa.Table) -> pa.Table:
    """Check ``table`` against the declared schema of ``name`` and return it cast.

    Raises :class:`SchemaError` naming the first offending column.
    """
    if name not in TABLES:
        raise SchemaError(f"unknown table {name!r}; known: {sorted(TABLES)}")
    schema = TABLES[name]
    present = set(table.column_names)
    for field in schema:
        if field.name not in present:
            raise SchemaError(f"{name}: missing column {field.name!r}")
    table = table.select(schema.names)
    columns = []
    for field in schema:
        col = table.column(field.name)
        if not col.type.equals(field.type):
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    f"{name}: column {field.name!r} has type {col.type}, expected {field.type}"
                ) from exc
        if not field.nullable and col.null_count:
            raise SchemaError(f"{name}: column {field.name!r} has {col.null_count} null values")
        columns.append(col)
    table = pa.Table.from_arrays(columns, schema=schema)
    for column, allowed in ENUMS.get(name, {}).items():
        values = pc.unique(table.column(column).drop_null()).to_pylist()
        bad = sorted(set(values) - set(allowed))
        if bad:
            raise SchemaError(f"{name}: column {column!r} has unknown values {bad[:5]}")
    key = UNIQUE.get(name)
    if key is not None and len(pc.unique(table.column(key))) != table.num_rows:
        raise SchemaError(f"{name}: column {key!r} has duplicate values")
    if name == "events":
        _validate_events(table)
    return table


def _validate_events(table: pa.Table) -> None:
    etype = table.column("event_type")
    for rule in _EVENT_RULES:
        needs = pc.is_in(etype, value_set=pa.array(sorted(rule.required_for)))
        col = table.column(rule.column)
        missing = pc.sum(pc.and_(needs, pc.is_null(col))).as_py() or 0
        if missing and not rule.optional:
            raise SchemaError(
                f"events: column {rule.column!r} is null in {missing} events that need it"
            )
        stray = pc.sum(pc.and_(pc.invert(needs), pc.is_valid(col))).as_py() or 0
        if stray:
            raise SchemaError(
                f"events: column {rule.column!r} is set in {stray} events that must leave it null"
            )
    amounts = table.column("amount_minor").drop_null()
    if len(amounts) and pc.min(amounts).as_py() < 0:
        raise SchemaError("events: column 'amount_minor' has negative amounts")
    early = pc.sum(pc.less(table.column("planned_end_time"), table.column("event_time")))
    if early.as_py():
        raise SchemaError(
            f"events: column 'planned_end_time' is before event_time in {early.as_py()} events"
        )


def event_problem(event: dict[str, object]) -> str | None:
    """Why one event (a dict of raw-schema fields) is invalid, or ``None``.

    The per-event form of :func:`validate`'s rules, for live ingestion: the same
    required/forbidden columns per event type and the same value sets.
    """
    etype = event.get("event_type")
    if etype not in EVENT_TYPES:
        return f"event_type: unknown event type {etype!r}"
    for col in ("event_id", "room_id"):
        if not event.get(col):
            return f"{col}: missing"
    for rule in _EVENT_RULES:
        value = event.get(rule.column)
        needed = etype in rule.required_for
        if needed and not rule.optional and (value is None or value == ""):
            return f"{rule.column}: missing for a {etype} event"
    topic = event.get("chat_topic")
    if etype == "chat" and topic not in CHAT_TOPICS:
        return f"chat_topic: unknown topic {topic!r}"
    planned_end = event.get("planned_end_time")
    if planned_end is not None:
        if etype != "stream_start":
            return f"planned_end_time: only a stream_start event may set it, not {etype}"
        when = event.get("event_time")
        if not isinstance(planned_end, float | int) or (
            isinstance(when, float | int) and planned_end < when
        ):
            return f"planned_end_time: must be a time after event_time, got {planned_end!r}"
    if etype == "purchase":
        amount = event.get("amount_minor")
        if not isinstance(amount, int) or amount < 0:
            return f"amount_minor: must be a non-negative integer, got {amount!r}"
        if event.get("currency") not in CURRENCY_EXPONENT:
            return f"currency: unknown currency {event.get('currency')!r}"
        if event.get("payment_method") not in PAYMENT_METHODS:
            return f"payment_method: unknown method {event.get('payment_method')!r}"
    return None


def write_table(name: str, table: pa.Table | pd.DataFrame, out_dir: Path) -> Path:
    """Validate and write one table; ``events`` is partitioned by UTC date."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    table = validate(name, table)
    out_dir.mkdir(parents=True, exist_ok=True)
    if name == "events":
        return write_events(table, out_dir / "events")
    path = out_dir / f"{name}.parquet"
    pq.write_table(table, path)
    return path


def event_dates(table: pa.Table) -> pa.Array:
    """The partition key of each event: its UTC date as ``YYYY-MM-DD``."""
    return pc.strftime(table.column("event_time"), format="%Y-%m-%d")


def write_events(table: pa.Table, root: Path, basename: str = "part-{i}.parquet") -> Path:
    """Write validated events under ``root/event_date=YYYY-MM-DD/``."""
    table = table.append_column("event_date", event_dates(table))
    ds.write_dataset(
        table,
        root,
        format="parquet",
        partitioning=ds.partitioning(pa.schema([("event_date", pa.string())]), flavor="hive"),
        existing_data_behavior="overwrite_or_ignore",
        basename_template=basename,
    )
    return root


def read_table(name: str, data_dir: Path) -> pa.Table:
    """Read and validate one table written by :func:`write_table`."""
    if name == "events":
        return read_events(data_dir)
    path = Path(data_dir) / f"{name}.parquet"
    if not path.exists():
        raise SchemaError(f"{name}: no table at {path}; run `liverec simulate` first")
    return validate(name, pq.read_table(path))


def read_events(data_dir: Path, columns: list[str] | None = None) -> pa.Table:
    """Read the whole event log, sorted by time, validated."""
    root = Path(data_dir) / "events"
    if not root.exists():
        raise SchemaError(f"events: no event log at {root}; run `liverec simulate` first")
    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    table = dataset.to_table(columns=EVENTS.names)
    table = validate("events", table)
    table = table.sort_by([("event_time", "ascending"), ("event_id", "ascending")])
    if columns is not None:
        table = table.select(columns)
    return table


def to_minor(amount: np.ndarray | float, currency: str) -> np.ndarray:
    """Round an amount in major units to integer minor units of ``currency``."""
    return np.round(np.asarray(amount) * 10 ** CURRENCY_EXPONENT[currency]).astype(np.int64)


def from_minor(amount_minor: np.ndarray | int, currency: str) -> np.ndarray:
    """Convert integer minor units of ``currency`` to major units."""
    return np.asarray(amount_minor, dtype=np.float64) / 10 ** CURRENCY_EXPONENT[currency]
